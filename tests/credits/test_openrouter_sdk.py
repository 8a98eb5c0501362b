"""The official `openrouter` SDK against the portal, over HTTP (pytest-django's `live_server`):
credits, the current key, the key API (list, create, get, update, delete), generations, activity
and the organization's members.

The SDK is the client users run; it validates every response against its pydantic models, so a
missing or mistyped field fails here as `ResponseValidationError`. Its 5XX retries (up to an hour
by default) are turned off so a server error fails fast."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from openrouter import OpenRouter, errors, utils

from accounts.models import ApiKey
from accounts.roles import Role
from credits.models import UsageEvent

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # The SDK's models mark `is_provisioning_key` deprecated and warn when they parse it.
    pytest.mark.filterwarnings("ignore:.*DEPRECATED:DeprecationWarning"),
]

NO_RETRY = utils.RetryConfig("none", utils.BackoffStrategy(1, 1, 1, 1), False)


@pytest.fixture(autouse=True)
def _no_sdk_environment(monkeypatch):
    """The SDK reads OPENROUTER_* variables; a developer's own key must not leak into a test."""
    for name in list(os.environ):
        if name.startswith("OPENROUTER_"):
            monkeypatch.delenv(name)


def sdk(live_server, secret: str) -> OpenRouter:
    return OpenRouter(
        api_key=secret,
        server_url=live_server.url + "/api/v1",
        retry_config=NO_RETRY,
        timeout_ms=20_000,
    )


def record_usage(live_server, secret: str, event_id: str, cost: str, **extra) -> httpx.Response:
    """POST /api/v1/credits/usage with an upstream-reported cost (as OpenRouter's usage.cost)."""
    body = {
        "id": event_id,
        "model": "openai/gpt-4o",
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "cost": cost,
        **extra,
    }
    return httpx.post(
        f"{live_server.url}/api/v1/credits/usage",
        json=body,
        headers={"Authorization": f"Bearer {secret}"},
        timeout=20,
    )


def test_credits_match_grants_and_usage_and_need_a_management_key(
    live_server, tenant, other_tenant
):
    tenant.grant("100")
    tenant.grant("25.5")
    other_tenant.grant("999")  # another tenant's credits never show
    _, usage_secret = tenant.key("usage")
    _, management_secret = tenant.key("management")
    assert record_usage(live_server, usage_secret, "u1", "1.25").status_code == 201
    assert record_usage(live_server, usage_secret, "u2", "0.000000000123").status_code == 201

    credits = sdk(live_server, management_secret).credits.get_credits().data
    assert Decimal(str(credits.total_credits)) == Decimal("125.5")
    assert Decimal(str(credits.total_usage)) == Decimal("1.250000000123")

    with pytest.raises(errors.ForbiddenResponseError) as exc:
        sdk(live_server, usage_secret).credits.get_credits()
    assert exc.value.status_code == 403
    assert exc.value.data.error.code == 403
    with pytest.raises(errors.UnauthorizedResponseError):
        sdk(live_server, "sk-or-v1-" + "0" * 64).credits.get_credits()


def test_current_key_metadata(live_server, tenant):
    tenant.grant("50")
    key, secret = tenant.key("usage", limit="10", limit_reset="monthly")
    assert record_usage(live_server, secret, "m1", "2.5").status_code == 201

    data = sdk(live_server, secret).api_keys.get_current_key_metadata().data
    assert data.label == key.label and "..." in data.label and secret not in data.label
    assert data.is_management_key is False
    assert data.limit == 10 and data.limit_reset == "monthly"
    assert data.limit_remaining == 7.5
    assert data.usage == data.usage_daily == data.usage_weekly == data.usage_monthly == 2.5

    _, management_secret = tenant.key("management")
    data = sdk(live_server, management_secret).api_keys.get_current_key_metadata().data
    assert data.is_management_key is True
    assert data.limit is None and data.limit_remaining is None and data.limit_reset is None
    assert data.usage == 0


def test_key_api_lifecycle(live_server, tenant, other_tenant):
    _, management_secret = tenant.key("management")
    other_key, _ = other_tenant.key("usage")
    client = sdk(live_server, management_secret)

    created = client.api_keys.create(name="ci runner", limit=5.0, limit_reset="daily")
    assert created.key.startswith("sk-")
    assert created.data.name == "ci runner" and created.data.limit == 5
    assert created.data.limit_reset == "daily" and created.data.limit_remaining == 5
    row = ApiKey.objects.get(hash=created.data.hash)
    assert row.organization == tenant.org and row.limit == Decimal("5")
    assert created.key not in {row.hash, row.label}  # only the digest is stored

    # The new key authenticates (and sees itself).
    assert sdk(live_server, created.key).api_keys.get_current_key_metadata().data.label == (
        created.data.label
    )

    listed = {k.hash for k in client.api_keys.list().data}
    assert created.data.hash in listed and other_key.hash not in listed
    assert client.api_keys.get(hash=created.data.hash).data.name == "ci runner"
    with pytest.raises(errors.NotFoundResponseError):
        client.api_keys.get(hash=other_key.hash)  # another tenant's key: 404, not 403

    updated = client.api_keys.update(
        hash=created.data.hash, name="ci", limit=7.5, disabled=True
    ).data
    assert (updated.name, updated.limit, updated.disabled) == ("ci", 7.5, True)
    row.refresh_from_db()
    assert (row.name, row.limit, row.disabled) == ("ci", Decimal("7.5"), True)
    assert created.data.hash not in {k.hash for k in client.api_keys.list().data}
    assert created.data.hash in {k.hash for k in client.api_keys.list(include_disabled=True).data}
    with pytest.raises(errors.UnauthorizedResponseError):  # a disabled key does not authenticate
        sdk(live_server, created.key).api_keys.get_current_key_metadata()
    client.api_keys.update(hash=created.data.hash, disabled=False)

    assert client.api_keys.delete(hash=created.data.hash).DELETED is True
    with pytest.raises(errors.UnauthorizedResponseError) as exc:
        sdk(live_server, created.key).api_keys.get_current_key_metadata()
    assert exc.value.status_code == 401
    with pytest.raises(errors.NotFoundResponseError):
        client.api_keys.get(hash=created.data.hash)
    with pytest.raises(errors.NotFoundResponseError):
        client.api_keys.delete(hash=other_key.hash)
    assert ApiKey.objects.filter(pk=other_key.pk, deleted_at__isnull=True).exists()


def test_key_limit_is_enforced_on_usage(live_server, tenant):
    tenant.grant("100")
    _, management_secret = tenant.key("management")
    created = sdk(live_server, management_secret).api_keys.create(
        name="capped", limit=1.0, limit_reset="monthly"
    )

    assert record_usage(live_server, created.key, "c1", "0.75").status_code == 201
    key_client = sdk(live_server, created.key)
    assert key_client.api_keys.get_current_key_metadata().data.limit_remaining == 0.25
    refused = record_usage(live_server, created.key, "c2", "0.5")
    assert refused.status_code == 402, refused.text
    error = refused.json()["error"]
    assert error["code"] == 402 and error["metadata"]["type"] == "budget_exceeded"
    assert error["metadata"]["budget"]["scope"] == "api_key"
    assert not UsageEvent.objects.filter(event_id="c2").exists()
    assert record_usage(live_server, created.key, "c3", "0.25").status_code == 201  # exactly 1

    data = key_client.api_keys.get_current_key_metadata().data
    assert data.limit_remaining == 0 and data.usage_monthly == 1
    listed = sdk(live_server, management_secret).api_keys.get(hash=created.data.hash).data
    assert listed.limit_remaining == 0 and listed.usage == 1
    assert record_usage(live_server, created.key, "c4", "0.000000000001").status_code == 402


def test_generation(live_server, tenant, other_tenant):
    tenant.grant("10")
    other_tenant.grant("10")
    _, secret = tenant.key("usage")
    _, other_secret = other_tenant.key("usage")
    response = record_usage(live_server, secret, "gen-abc", "0.0042", conversation_id="conv-1")
    assert response.status_code == 201, response.text
    assert record_usage(live_server, other_secret, "gen-theirs", "0.01").status_code == 201
    event = UsageEvent.objects.get(event_id="gen-abc")

    data = sdk(live_server, secret).generations.get_generation(id="gen-abc").data
    assert data.id == "gen-abc" and data.model == "openai/gpt-4o"
    assert data.total_cost == 0.0042 and data.usage == 0.0042
    assert data.tokens_prompt == 1200 and data.tokens_completion == 300
    assert data.created_at.startswith(event.occurred_at.strftime("%Y-%m-%dT%H:%M:%S"))
    assert data.session_id == "conv-1"

    client = sdk(live_server, secret)
    with pytest.raises(errors.NotFoundResponseError) as exc:
        client.generations.get_generation(id="gen-unknown")
    assert exc.value.data.error.code == 404
    with pytest.raises(errors.NotFoundResponseError):
        client.generations.get_generation(id="gen-theirs")


def post_usage(live_server, secret: str, event_id: str, model: str, at=None, **fields) -> None:
    body = {"id": event_id, "model": model, **fields}
    if at is not None:
        body["occurred_at"] = at.isoformat()
    response = httpx.post(
        f"{live_server.url}/api/v1/credits/usage",
        json=body,
        headers={"Authorization": f"Bearer {secret}"},
        timeout=20,
    )
    assert response.status_code == 201, response.text


def test_activity_by_day_and_model_of_what_the_key_sees(live_server, tenant, other_tenant):
    tenant.grant("100")
    tenant.allocate("50")
    other_tenant.grant("100")
    member = tenant.member(team=tenant.team)
    _, secret = tenant.key("usage")  # a key of no member and no team sees the organization's
    member_key, member_secret = tenant.key("usage", user=member)
    _, other_secret = other_tenant.key("usage")
    now = datetime.now(UTC)
    yesterday = (now - timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
    earlier = yesterday - timedelta(days=2)
    gpt, mini = "openai/gpt-4o", "openai/gpt-4o-mini"
    openrouter_usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 200,
        "total_tokens": 1200,
        "prompt_tokens_details": {"cached_tokens": 300},
        "completion_tokens_details": {"reasoning_tokens": 50},
        "cost": 0.5,
    }
    post_usage(live_server, secret, "a1", gpt, yesterday, usage=openrouter_usage)
    post_usage(
        live_server, secret, "a2", gpt, yesterday,
        prompt_tokens=100, completion_tokens=10, cost="0.25",
    )  # fmt: skip
    post_usage(
        live_server, member_secret, "a3", mini, yesterday,
        prompt_tokens=10, completion_tokens=5, cost="0.125",
    )  # fmt: skip
    post_usage(
        live_server, secret, "a4", gpt, earlier, prompt_tokens=7, completion_tokens=3, cost="1"
    )
    post_usage(live_server, secret, "today", gpt, cost="2")  # today is not completed
    post_usage(live_server, secret, "old", gpt, yesterday - timedelta(days=30), cost="4")
    post_usage(live_server, other_secret, "theirs", gpt, yesterday, cost="8")

    def rows(secret, **request):
        data = sdk(live_server, secret).analytics.get_user_activity(request=request).data
        return [
            (r.date_, r.model, r.requests, r.usage, r.prompt_tokens, r.completion_tokens,
             r.reasoning_tokens, r.cached_tokens)
            for r in data
        ]  # fmt: skip

    day, early = yesterday.date().isoformat(), earlier.date().isoformat()
    assert rows(secret) == [
        (day, gpt, 2, 0.75, 1100, 210, 50, 300),
        (day, mini, 1, 0.125, 10, 5, 0, 0),
        (early, gpt, 1, 1.0, 7, 3, 0, 0),
    ]
    item = sdk(live_server, secret).analytics.get_user_activity().data[0]
    assert item.model_permaslug == gpt and item.byok_usage_inference == 0
    assert item.endpoint_id and item.workspace_id is None
    assert rows(secret, date_=early) == [(early, gpt, 1, 1.0, 7, 3, 0, 0)]
    assert rows(secret, api_key_hash=member_key.hash) == [(day, mini, 1, 0.125, 10, 5, 0, 0)]
    assert rows(secret, user_id=str(member.pk)) == [(day, mini, 1, 0.125, 10, 5, 0, 0)]
    assert rows(secret, api_key_hash="0" * 64) == []
    assert rows(secret, user_id="user_2dHFtVWx2n56w6HkM") == []  # not a user id of ours
    # A member's key sees the member's usage only; another organization sees none of it.
    assert rows(member_secret) == [(day, mini, 1, 0.125, 10, 5, 0, 0)]
    assert [r[1:4] for r in rows(other_secret)] == [(gpt, 1, 8.0)]
    grouped = sdk(live_server, secret).analytics.get_user_activity(
        request={"group_by": "workspace"}
    )
    assert {r.workspace_id for r in grouped.data} == {tenant.org.slug}

    client = sdk(live_server, secret)
    with pytest.raises(errors.BadRequestResponseError) as exc:
        client.analytics.get_user_activity(request={"date_": now.date().isoformat()})
    assert exc.value.data.error.code == 400
    with pytest.raises(errors.BadRequestResponseError):
        client.analytics.get_user_activity(request={"date_": "24/08/2025"})
    with pytest.raises(errors.NotFoundResponseError):
        client.analytics.get_user_activity(request={"workspace_id": other_tenant.org.slug})


def test_organization_members(live_server, tenant, other_tenant):
    admin = tenant.member(Role.ADMIN, email="ada@acme.test")
    admin.first_name, admin.last_name = "Ada", "Lovelace"
    admin.save()
    viewer = tenant.member(Role.VIEWER, email="vic@acme.test")
    other_tenant.member(email="someone@globex.test")
    _, management_secret = tenant.key("management")
    client = sdk(live_server, management_secret)

    result = client.organization.list_members().result
    assert result.total_count == 3
    members = {m.id: (m.email, m.first_name, m.last_name, m.role) for m in result.data}
    assert members == {
        str(tenant.owner.pk): (tenant.owner.email, None, None, "org:admin"),
        str(admin.pk): ("ada@acme.test", "Ada", "Lovelace", "org:admin"),
        str(viewer.pk): ("vic@acme.test", None, None, "org:member"),
    }
    page = client.organization.list_members(offset=1, limit=1)
    assert [m.id for m in page.result.data] == [str(admin.pk)]
    assert page.result.total_count == 3
    assert [m.id for m in page.next().result.data] == [str(viewer.pk)]

    _, usage_secret = tenant.key("usage")  # a usage key has no members:read
    with pytest.raises(errors.ForbiddenResponseError) as exc:
        sdk(live_server, usage_secret).organization.list_members()
    assert exc.value.status_code == 403 and exc.value.data.error.code == 403
