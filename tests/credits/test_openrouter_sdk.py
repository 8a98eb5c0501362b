"""The official `openrouter` SDK against the portal, over HTTP (pytest-django's `live_server`):
credits, the current key, the key API (list, create, get, update, delete) and generations.

The SDK is the client users run; it validates every response against its pydantic models, so a
missing or mistyped field fails here as `ResponseValidationError`. Its 5XX retries (up to an hour
by default) are turned off so a server error fails fast."""

from __future__ import annotations

import os
from decimal import Decimal

import httpx
import pytest
from openrouter import OpenRouter, errors, utils

from accounts.models import ApiKey
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
