"""The official `openrouter` Python SDK's `client.guardrails` against the portal over HTTP:
create, get, update, list, bulk assign and unassign keys and members, the assignment lists,
delete; and the guardrail's budget in `client.api_keys.get_current_key_metadata()`. The SDK
validates every response against its pydantic models. The TypeScript SDK (`@openrouter/sdk`,
zod models) runs the same through `openrouter_sdk_ts_guardrails.mjs`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from openrouter import errors

from accounts.roles import Role
from credits.models import Budget, Guardrail

from .test_openrouter_sdk import record_usage, sdk
from .test_openrouter_sdk_ts import ROOT, node

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore:.*DEPRECATED:DeprecationWarning"),
]


def test_guardrails_through_the_python_sdk(live_server, tenant):
    tenant.grant("100")
    _, management_secret = tenant.key("management")
    key, usage_secret = tenant.key("usage")
    member = tenant.member(Role.MEMBER)
    client = sdk(live_server, management_secret)

    made = client.guardrails.create(
        name="SDK guardrail",
        description="made by the SDK",
        limit_usd=1.5,
        reset_interval="weekly",
        allowed_models=["openai/gpt-4o"],
        allowed_providers=["openai"],
        enforce_zdr_openai=True,
    ).data
    assert made.name == "SDK guardrail" and made.limit_usd == 1.5
    assert made.reset_interval == "weekly" and made.allowed_providers == ["openai"]
    assert made.enforce_zdr_openai is True and made.workspace_id == tenant.org.slug

    assert client.guardrails.get(id=made.id).data.description == "made by the SDK"
    listed = client.guardrails.list().result
    assert listed.total_count == 1 and listed.data[0].id == made.id

    assigned = client.guardrails.bulk_assign_keys(id=made.id, key_hashes=[key.hash])
    assert assigned.assigned_count == 1
    assigned = client.guardrails.bulk_assign_members(id=made.id, member_user_ids=[str(member.pk)])
    assert assigned.assigned_count == 1
    keys = client.guardrails.list_guardrail_key_assignments(id=made.id).result
    assert [a.key_hash for a in keys.data] == [key.hash] and keys.data[0].guardrail_id == made.id
    members = client.guardrails.list_member_assignments().result
    assert [a.user_id for a in members.data] == [str(member.pk)]
    assert Budget.objects.filter(guardrail__public_id=made.id).count() == 2

    updated = client.guardrails.update(id=made.id, limit_usd=1.0).data
    assert updated.limit_usd == 1.0 and updated.updated_at is not None

    # the key's budget, as GET /key lists it; spent up to the limit, the next event is refused
    assert record_usage(live_server, usage_secret, "g1", "0.75").status_code == 201
    current = sdk(live_server, usage_secret).api_keys.get_current_key_metadata().data
    budget = next(b for b in current.budgets if b.guardrail_id == made.id)
    assert budget.limit_usd == 1.0 and budget.spend_usd == 0.75
    assert budget.reset_interval == "weekly" and budget.scope == "api_key"
    response = record_usage(live_server, usage_secret, "g2", "0.5")
    assert response.status_code == 402
    assert response.json()["error"]["metadata"]["type"] == "budget_exceeded"

    removed = client.guardrails.bulk_unassign_keys(id=made.id, key_hashes=[key.hash])
    assert removed.unassigned_count == 1
    removed = client.guardrails.bulk_unassign_members(id=made.id, member_user_ids=[str(member.pk)])
    assert removed.unassigned_count == 1
    assert client.guardrails.delete(id=made.id).DELETED is True
    with pytest.raises(errors.OpenRouterError) as caught:
        client.guardrails.get(id=made.id)
    assert caught.value.status_code == 404


def test_guardrails_through_the_typescript_sdk(live_server, tenant):
    tenant.grant("10")
    _, management_secret = tenant.key("management")
    key, usage_secret = tenant.key("usage")
    member = tenant.member(Role.MEMBER)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OPENROUTER_")}
    environment.update(
        PORTAL_API_URL=f"{live_server.url}/api/v1",
        PORTAL_MANAGEMENT_KEY=management_secret,
        PORTAL_USAGE_KEY=usage_secret,
        PORTAL_USAGE_KEY_HASH=key.hash,
        PORTAL_MEMBER_ID=str(member.pk),
    )
    run = subprocess.run(
        [node(), str(Path(__file__).with_name("openrouter_sdk_ts_guardrails.mjs"))],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["created"] == {
        "name": "TS guardrail",
        "limitUsd": 2,
        "resetInterval": "daily",
        "ignoredProviders": ["azure"],
    }
    assert len(out["listed"]) == 1
    assert out["updated"] == {"limitUsd": 3, "description": "changed"}
    assert out["assignedKeys"] == out["assignedMembers"] == 1
    assert out["keyAssignments"] == [[key.hash, True]]
    assert out["memberAssignments"] == [str(member.pk)]
    assert out["allKeyAssignments"] == out["allMemberAssignments"] == 1
    assert out["keyBudget"] == {"limitUsd": 3, "resetInterval": "daily", "scope": "api_key"}
    assert out["unassignedKeys"] == out["unassignedMembers"] == 1
    assert out["deleted"] is True
    assert not Guardrail.objects.exists() and not Budget.objects.filter(guardrail__isnull=False)
