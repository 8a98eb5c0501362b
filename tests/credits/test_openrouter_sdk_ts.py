"""The official TypeScript SDK (`@openrouter/sdk` from node_modules, `npm ci`) against the portal
over HTTP: `openrouter_sdk_ts.mjs` runs credits, the key API (create, list, get, update, delete),
the current key, a generation, activity and the organization's members with `node`; the SDK
validates every response with its zod models. This test prepares the data, runs the script and
checks its exit status and what it printed against the database."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from accounts.models import ApiKey
from accounts.roles import Role
from credits.models import UsageEvent

pytestmark = pytest.mark.django_db(transaction=True)

SCRIPT = Path(__file__).with_name("openrouter_sdk_ts.mjs")
ROOT = Path(__file__).resolve().parents[2]


def node() -> str:
    """`node`, with the SDK installed; a missing one fails the test (it must not pass unrun)."""
    binary = shutil.which("node")
    assert binary, "node is not installed"
    assert (ROOT / "node_modules" / "@openrouter" / "sdk").is_dir(), "run `npm ci` (make static)"
    return binary


def post_usage(live_server, secret: str, body: dict) -> None:
    response = httpx.post(
        f"{live_server.url}/api/v1/credits/usage",
        json=body,
        headers={"Authorization": f"Bearer {secret}"},
        timeout=20,
    )
    assert response.status_code == 201, response.text


def test_the_typescript_sdk_works_against_the_portal(live_server, tenant, other_tenant):
    tenant.grant("100")
    other_tenant.grant("50")
    admin = tenant.member(Role.ADMIN, email="ada@acme.test")
    admin.first_name, admin.last_name = "Ada", "Lovelace"
    admin.save()
    tenant.member(Role.BILLING, email="bill@acme.test")
    _, management_secret = tenant.key("management")
    usage_key, usage_secret = tenant.key("usage", limit="20", limit_reset="monthly")
    yesterday = datetime.now(UTC) - timedelta(days=1)
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 200,
        "prompt_tokens_details": {"cached_tokens": 300},
        "completion_tokens_details": {"reasoning_tokens": 50},
        "cost": 0.5,
    }
    post_usage(live_server, usage_secret, {"id": "gen-ts", "model": "openai/gpt-4o",
               "usage": usage, "occurred_at": yesterday.isoformat()})  # fmt: skip

    environment = {k: v for k, v in os.environ.items() if not k.startswith("OPENROUTER_")}
    environment.update(
        PORTAL_API_URL=f"{live_server.url}/api/v1",
        PORTAL_MANAGEMENT_KEY=management_secret,
        PORTAL_USAGE_KEY=usage_secret,
        PORTAL_GENERATION_ID="gen-ts",
    )
    run = subprocess.run(
        [node(), str(SCRIPT)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)

    assert out["credits"] == {"totalCredits": 100, "totalUsage": 0.5}
    assert out["current_key"] == {
        "label": usage_key.label,
        "isManagementKey": False,
        "usage": 0.5,
        "limit": 20,
        "limitRemaining": 19.5,
    }
    created = ApiKey.objects.get(hash=out["created"]["hash"])
    assert created.organization == tenant.org and created.deleted_at is not None
    assert out["created"]["name"] == "ts sdk" and out["created"]["limit"] == 5
    assert out["updated"] == {"name": "ts sdk renamed", "limit": 7.5, "disabled": True}
    assert (out["deleted_then_get"], out["deleted_then_use"]) == (404, 401)
    assert usage_key.hash in out["listed"]
    assert not set(out["listed"]) & set(
        ApiKey.objects.filter(organization=other_tenant.org).values_list("hash", flat=True)
    )

    assert out["generation"] == {
        "id": "gen-ts",
        "model": "openai/gpt-4o",
        "totalCost": 0.5,
        "tokensPrompt": 1000,
        "tokensCompletion": 200,
        "nativeTokensCached": 300,
        "nativeTokensReasoning": 50,
    }
    assert out["generation_unknown"] == 404
    assert UsageEvent.objects.get(event_id="gen-ts").cost == Decimal("0.5")

    [row] = out["activity"]
    assert row["date"] == yesterday.date().isoformat() and row["model"] == "openai/gpt-4o"
    assert (row["requests"], row["usage"], row["byokUsageInference"]) == (1, 0.5, 0)
    assert (row["promptTokens"], row["completionTokens"], row["reasoningTokens"]) == (1000, 200, 50)
    assert out["activity_bad_date"] == 400

    members = out["members"]
    assert members["totalCount"] == 3
    assert members["data"] == [
        {"email": tenant.owner.email, "firstName": None, "id": str(tenant.owner.pk),
         "lastName": None, "role": "org:admin"},
        {"email": "ada@acme.test", "firstName": "Ada", "id": str(admin.pk),
         "lastName": "Lovelace", "role": "org:admin"},
    ]  # fmt: skip
    assert [m["email"] for m in out["members_next"]] == ["bill@acme.test"]
    assert [m["role"] for m in out["members_next"]] == ["org:member"]
    assert out["members_with_usage_key"] == 403
