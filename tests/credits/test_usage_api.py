"""POST/GET /api/v1/credits/usage, authorizations, balance and report, through the API."""

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Team
from accounts.services import team_update
from credits.models import Hold, LedgerAccount, UsageEvent
from credits.services.budgets import budget_create
from credits.services.rollups import usage_rollup_advance
from credits.verify import ledger_verify

from ..conftest import SYSTEM

USAGE = "/api/v1/credits/usage"
# gpt-4o list prices (LiteLLM table, July 2026): 2.5e-06 input, 1e-05 output, 1.25e-06 cache read.
GPT4O_IN, GPT4O_OUT, GPT4O_CACHED = Decimal("0.0000025"), Decimal("0.00001"), Decimal("0.00000125")


@pytest.fixture
def funded(tenant, prices):
    tenant.grant("10")
    tenant.allocate("2")
    key, secret = tenant.key("usage", team=tenant.team, user=tenant.owner)
    return tenant, key, tenant.client(secret)


def event(id="e1", **fields):
    return {"id": id, "model": "gpt-4o", "prompt_tokens": 1000, "completion_tokens": 100, **fields}


def test_an_event_is_priced_attributed_and_debited_from_the_team(funded):
    tenant, key, client = funded
    response = client.post(
        USAGE,
        event(cached_tokens=400, conversation_id="c-1", metadata={"app": "chat"}),
        format="json",
    )
    assert response.status_code == 201, response.json()
    cost = 600 * GPT4O_IN + 100 * GPT4O_OUT + 400 * GPT4O_CACHED  # 400 of the 1000 cached
    body = response.json()
    assert Decimal(body["cost"]) == cost
    assert Decimal(body["balance_after"]) == Decimal("2") - cost
    stored = UsageEvent.objects.get(event_id="e1")
    assert (stored.api_key, stored.team, stored.member) == (key, tenant.team, tenant.owner)
    assert stored.cost_source == "price_table" and stored.conversation_id == "c-1"
    assert LedgerAccount.objects.get(team=tenant.team).balance == Decimal("2") - cost
    assert ledger_verify() == []


def test_a_retry_returns_the_first_result_and_a_changed_body_conflicts(funded):
    _, _, client = funded
    first = client.post(USAGE, event(), format="json")
    retry = client.post(USAGE, event(), format="json")
    assert (first.status_code, retry.status_code) == (201, 200)
    assert retry.json() == first.json()
    conflict = client.post(USAGE, event(prompt_tokens=999), format="json")
    assert conflict.status_code == 409
    assert conflict.json()["error"]["metadata"]["type"] == "idempotency_conflict"
    assert UsageEvent.objects.count() == 1


def test_a_reported_cost_is_stored_as_reported_even_for_unknown_models(funded):
    _, _, client = funded
    response = client.post(
        USAGE, event(model="openrouter/some-new-model", cost="0.0123"), format="json"
    )
    assert response.status_code == 201
    stored = UsageEvent.objects.get(event_id="e1")
    assert stored.cost == Decimal("0.0123") and stored.cost_source == "reported"


def test_insufficient_credits_is_402_and_records_nothing(funded):
    tenant, _, client = funded
    response = client.post(USAGE, event(cost="2.5"), format="json")
    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == 402 and error["metadata"]["type"] == "insufficient_credits"
    assert error["metadata"]["available"] == "2.000000000000"
    assert not UsageEvent.objects.exists()
    assert LedgerAccount.objects.get(team=tenant.team).balance == Decimal("2")


def test_an_empty_account_is_402_with_plain_decimals_in_the_metadata(funded):
    _, _, client = funded
    assert client.post(USAGE, event(id="all", cost="2"), format="json").status_code == 201
    error = client.post(USAGE, event(id="more", cost="0.1"), format="json").json()["error"]
    # str() of a zero at the quantum is "0E-12"
    assert error["metadata"]["available"] == "0.000000000000", error
    assert error["metadata"]["needed"] == "0.100000000000"


def test_a_team_drawing_on_the_pool_spends_the_pool(funded):
    tenant, _, client = funded
    team_update(team=tenant.team, funding=Team.Funding.POOL, actor=SYSTEM)
    assert client.post(USAGE, event(cost="1"), format="json").status_code == 201
    pool = LedgerAccount.objects.get(organization=tenant.org, kind="pool")
    assert pool.balance == Decimal("7")  # 10 granted - 2 allocated - 1 spent
    assert LedgerAccount.objects.get(team=tenant.team).balance == Decimal("2")


def test_a_batch_answers_per_event(funded):
    _, _, client = funded
    client.post(USAGE, event("dup"), format="json")
    batch = [
        event("b1"),
        event("dup"),
        event("b2", model="nope"),
        event("b3", cost="5"),
        event("b4", prompt_tokens=-1),
        event("dup", prompt_tokens=1),
    ]
    response = client.post(USAGE, {"events": batch}, format="json")
    assert response.status_code == 207
    statuses = [r["status"] for r in response.json()["results"]]
    assert statuses == [201, 200, 400, 402, 400, 409]
    assert response.json()["accepted"] == 2 and response.json()["refused"] == 4
    assert set(UsageEvent.objects.values_list("event_id", flat=True)) == {"dup", "b1"}


def test_a_batch_over_1000_events_is_413_and_records_nothing(funded):
    _, _, client = funded
    response = client.post(USAGE, {"events": [event(f"e{i}") for i in range(1001)]}, format="json")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == 413
    assert not UsageEvent.objects.exists()


def test_usage_list_filters_and_pages_with_a_cursor(funded):
    tenant, _, client = funded
    for i in range(5):
        client.post(
            USAGE,
            event(f"e{i}", model="gpt-4o" if i % 2 else "gpt-4o-mini", conversation_id=f"c{i % 2}"),
            format="json",
        )
    mgmt = tenant.client(tenant.key("management")[1])
    page = mgmt.get(USAGE, {"limit": 2}).json()
    assert len(page["results"]) == 2 and page["next"]
    rest = mgmt.get(page["next"]).json()
    assert len(rest["results"]) == 2
    assert {r["id"] for r in mgmt.get(USAGE, {"model": "gpt-4o"}).json()["results"]} == {"e1", "e3"}
    assert len(mgmt.get(USAGE, {"conversation": "c0"}).json()["results"]) == 3
    assert mgmt.get(USAGE, {"team": "nope"}).json()["results"] == []
    assert mgmt.get(USAGE, {"since": "2999-01-01T00:00:00Z"}).json()["results"] == []


def test_authorize_capture_and_void(funded):
    tenant, _, client = funded
    held = client.post(
        "/api/v1/credits/authorizations",
        {"id": "req-1", "model": "gpt-4o", "prompt_tokens": 1000, "max_tokens": 1000},
        format="json",
    )
    assert held.status_code == 201, held.json()
    worst = 1000 * GPT4O_IN + 1000 * GPT4O_OUT
    assert Decimal(held.json()["amount"]) == worst
    team_account = LedgerAccount.objects.get(team=tenant.team)
    assert team_account.held == worst
    hold_id = held.json()["id"]
    captured = client.post(
        f"/api/v1/credits/authorizations/{hold_id}/capture",
        {"prompt_tokens": 1000, "completion_tokens": 10},
        format="json",
    )
    assert captured.status_code == 201, captured.json()
    cost = 1000 * GPT4O_IN + 10 * GPT4O_OUT
    team_account.refresh_from_db()
    assert (team_account.held, team_account.balance) == (0, Decimal("2") - cost)
    assert UsageEvent.objects.get(event_id=f"authorization-{hold_id}").cost == cost
    # A second hold, voided, then captured: refused, nothing posted.
    second = client.post(
        "/api/v1/credits/authorizations", {"id": "req-2", "amount": "1"}, format="json"
    ).json()
    assert client.post(f"/api/v1/credits/authorizations/{second['id']}/void").status_code == 200
    late = client.post(
        f"/api/v1/credits/authorizations/{second['id']}/capture",
        {"model": "gpt-4o", "prompt_tokens": 1},
        format="json",
    )
    assert late.status_code == 409
    assert late.json()["error"]["metadata"]["type"] == "hold_not_pending"
    team_account.refresh_from_db()
    assert team_account.held == 0 and team_account.balance == Decimal("2") - cost
    assert ledger_verify() == []


def test_an_authorization_beyond_the_available_credits_is_402(funded):
    _, _, client = funded
    response = client.post(
        "/api/v1/credits/authorizations", {"id": "big", "amount": "2.01"}, format="json"
    )
    assert response.status_code == 402
    assert not Hold.objects.exists()


def test_a_key_limit_is_enforced_on_the_keys_usage(funded):
    tenant, _, _ = funded
    _, secret = tenant.key("usage", team=tenant.team, limit="0.01", limit_reset="daily")
    client = tenant.client(secret)
    assert client.post(USAGE, event("a", cost="0.006"), format="json").status_code == 201
    refused = client.post(USAGE, event("b", cost="0.006"), format="json")
    assert refused.status_code == 402
    assert refused.json()["error"]["metadata"]["type"] == "budget_exceeded"
    assert refused.json()["error"]["metadata"]["budget"]["remaining"] == "0.004000000000"
    assert not UsageEvent.objects.filter(event_id="b").exists()
    me = client.get("/api/v1/key").json()["data"]
    assert me["limit_remaining"] == pytest.approx(0.004) and me["usage_daily"] == pytest.approx(
        0.006
    )


def test_the_keys_usage_reads_the_rollups_and_counts_by_when_usage_occurred(funded):
    """`GET /api/v1/key` (OpenRouter's current key): the same figures whether the key's events
    are still raw or rolled up, read from the rollups (not a sum over the key's history); an
    event dated 40 days back counts in the total, not in this month."""
    tenant, _, _ = funded
    _, secret = tenant.key("usage", team=tenant.team)
    client = tenant.client(secret)
    now = timezone.now()
    back = (now - timedelta(days=40)).isoformat()
    assert (
        client.post(USAGE, event("old", cost="0.5", occurred_at=back), format="json").status_code
        == 201
    )
    assert client.post(USAGE, event("new", cost="0.25"), format="json").status_code == 201
    before = client.get("/api/v1/key").json()["data"]
    usage_rollup_advance(lag=timedelta(0))
    with CaptureQueriesContext(connection) as queries:
        after = client.get("/api/v1/key").json()["data"]
    for figures in (before, after):
        assert figures["usage"] == pytest.approx(0.75)
        assert figures["usage_daily"] == figures["usage_weekly"] == pytest.approx(0.25)
        assert figures["usage_monthly"] == pytest.approx(0.25)
    sums = [q["sql"] for q in queries if "SUM(" in q["sql"] and "cost" in q["sql"]]
    assert sums and all("credits_usagerollup" in sql for sql in sums)


def test_balance_and_report(funded):
    tenant, _, client = funded
    client.post(USAGE, event("r1", conversation_id="conv-a"), format="json")
    client.post(USAGE, event("r2", model="gpt-4o-mini", operation="chat"), format="json")
    balance = client.get("/api/v1/credits/balance").json()
    spent = Decimal(balance["total_used"])
    # A key bound to the team sees what the team can draw on (its 2 allocated), not the pool.
    assert balance["total_credited"] is None and balance["pool_balance"] is None
    assert Decimal(balance["available"]) == 2 - spent
    assert Decimal(balance["used_today"]) == spent
    assert [t["team"] for t in balance["teams"]] == ["research"]
    whole = tenant.client(tenant.key("management")[1]).get("/api/v1/credits/balance").json()
    assert Decimal(whole["total_credited"]) == 10
    assert Decimal(whole["available"]) == 10 - spent
    report = client.get("/api/v1/credits/report", {"period": "monthly"}).json()
    assert report["totals"]["events"] == 2 and Decimal(report["totals"]["cost"]) == spent
    assert {r["key"] for r in report["breakdowns"]["model"]} == {"gpt-4o", "gpt-4o-mini"}
    # Conversations are not in the rollups: their breakdown only when named.
    assert set(report["breakdowns"]) == {"operation", "team", "member", "model", "key"}
    named = client.get(
        "/api/v1/credits/report", {"period": "monthly", "breakdowns": "conversation,model"}
    ).json()
    assert list(named["breakdowns"]) == ["conversation", "model"]
    assert {r["key"] for r in named["breakdowns"]["conversation"]} == {"conv-a", ""}
    unknown = client.get("/api/v1/credits/report", {"breakdowns": "model,colour"})
    assert unknown.status_code == 400
    assert "colour" in str(unknown.json()["error"]["metadata"])
    as_csv = client.get("/api/v1/credits/report", {"period": "daily", "format": "csv"})
    assert as_csv.status_code == 200 and as_csv["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(as_csv.content.decode())))
    assert rows[0][:3] == ["dimension", "key", "events"]
    assert ["model", "gpt-4o"] in [r[:2] for r in rows]
    bad = client.get("/api/v1/credits/report", {"period": "hourly"})
    assert bad.status_code == 400


def test_an_accounts_history_has_a_running_balance_across_pages(funded):
    tenant, _, client = funded
    for i in range(3):
        client.post(USAGE, event(f"h{i}", cost="0.5"), format="json")
    account = LedgerAccount.objects.get(team=tenant.team)
    page = client.get(f"/api/v1/credits/accounts/{account.pk}/entries", {"limit": 2}).json()
    assert [r["running_balance"] for r in page["results"]] == ["0.500000000000", "1.000000000000"]
    rest = client.get(page["next"]).json()["results"]
    assert [(r["kind"], r["amount"], r["running_balance"]) for r in rest] == [
        ("usage", "-0.500000000000", "1.500000000000"),
        ("allocation", "2.000000000000", "2.000000000000"),
    ]
    other = tenant.client(tenant.key("management")[1])
    assert other.get("/api/v1/credits/accounts/999999/entries").status_code == 404


def test_a_blank_conversation_id_is_no_conversation(funded):
    _, _, client = funded
    response = client.post(USAGE, event(conversation_id=""), format="json")
    assert response.status_code == 201, response.json()
    assert UsageEvent.objects.get(event_id="e1").conversation_id == ""


def test_402_messages_show_small_amounts_to_their_first_digits(tenant, prices):
    """Amounts in a 402's message are for people: four decimals, more for a small amount (never
    "0.0000 needed" for an amount that is not zero); `metadata` keeps them exact."""
    tenant.grant("0.0011")
    _, secret = tenant.key("usage")
    pool = tenant.client(secret)
    refused = pool.post(USAGE, event("a", cost="0.0042"), format="json")
    assert refused.status_code == 402
    assert refused.json()["error"]["message"] == (
        "Insufficient credits: 0.0042 needed, 0.0011 available"
    )  # the example of docs/api.md
    tenant.allocate("0.000011")
    _, secret = tenant.key("usage", team=tenant.team)
    team = tenant.client(secret)
    refused = team.post(USAGE, event("b", cost="0.000042"), format="json")
    error = refused.json()["error"]
    assert error["message"] == "Insufficient credits: 0.000042 needed, 0.000011 available"
    assert (error["metadata"]["needed"], error["metadata"]["available"]) == (
        "0.000042000000",
        "0.000011000000",
    )
    budget_create(
        organization=tenant.org, scope="team", team=tenant.team, period="daily",
        limit="0.00001", mode="soft", actor=SYSTEM,
    )  # fmt: skip
    assert team.post(USAGE, event("c", cost="0.0000075"), format="json").status_code == 201
    refused = team.post(USAGE, event("d", cost="0.000003"), format="json")
    assert refused.status_code == 402
    error = refused.json()["error"]
    assert error["message"] == (
        "Budget exceeded: 0.000003 needed, 0.0000025 left of the team daily soft budget of 0.00001"
    )
    assert error["metadata"]["budget"]["remaining"] == "0.000002500000"
    assert not UsageEvent.objects.filter(event_id__in=["a", "b", "d"]).exists()
