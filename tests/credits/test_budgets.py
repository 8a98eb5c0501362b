"""Budgets: enforcement in every debit path (single events, batches, holds, captures, voids,
reversals), the strictest of four levels deciding, soft budgets with grace, filters, alerts,
key limits as budgets, the API and its permissions."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiKey
from accounts.roles import Role, TeamRole
from accounts.services import organization_update, team_member_set
from credits.models import Alert, Budget, BudgetWindow, Hold, UsageEvent
from credits.services import (
    Attribution,
    UsageInput,
    authorization_capture,
    authorization_create,
    hold_void,
    holds_expire,
    ledger_reverse,
    usage_record,
    usage_record_many,
)
from credits.services import budgets as budgets_service
from credits.services.budgets import budget_create, budget_current_window, key_limit_set
from portal.errors import BudgetExceeded, ValidationFailed

from ..conftest import SYSTEM

D = Decimal


@pytest.fixture
def four(tenant):
    """Credits, a member on the team, a key of that member and team, and a budget at each of
    the four levels: organization 10, team 5, member 3, key 2 (daily, hard)."""
    tenant.grant("100")
    tenant.allocate("50")
    member = tenant.member(Role.MEMBER)
    team_member_set(team=tenant.team, user=member, actor=SYSTEM)
    key, _ = tenant.key("usage", team=tenant.team, user=member)
    budgets = {
        "organization": budget(tenant, "organization", "10"),
        "team": budget(tenant, "team", "5", team=tenant.team),
        "member": budget(tenant, "member", "3", member=member),
        "api_key": budget(tenant, "api_key", "2", api_key=key),
    }
    return tenant, Attribution.of_key(key), budgets


@pytest.fixture
def four_known(four, django_capture_on_commit_callbacks):
    """`four`, with its windows created by a committed debit, so this process knows their ids:
    later debits lock them in one statement (`budgets._lock_known`) instead of INSERT ... ON
    CONFLICT DO NOTHING then SELECT ... FOR UPDATE. The outcome must be the same."""
    tenant, who, budgets = four
    with django_capture_on_commit_callbacks(execute=True):
        usage_record(attribution=who, event=ev("warm", "0"))
    assert all(
        budgets_service._KNOWN.get((b.pk, window(b).window_start)) == window(b).pk
        for b in budgets.values()
    )
    return four


WINDOWS = pytest.mark.parametrize("setup", ["four", "four_known"])


def budget(tenant, scope, limit, **kwargs):
    kwargs.setdefault("period", "daily")
    return budget_create(organization=tenant.org, scope=scope, limit=limit, actor=SYSTEM, **kwargs)


def ev(id, cost, **kwargs):
    return UsageInput(id=id, model=kwargs.pop("model", "gpt-4o"), cost=D(cost), **kwargs)


def window(b: Budget) -> BudgetWindow:
    return BudgetWindow.objects.get(budget=b)


@WINDOWS
def test_every_level_counts_a_debit_and_the_strictest_refuses(setup, request):
    tenant, who, budgets = request.getfixturevalue(setup)
    usage_record(attribution=who, event=ev("a", "1.5"))
    assert {s: window(b).spent for s, b in budgets.items()} == dict.fromkeys(budgets, D("1.5"))
    with pytest.raises(BudgetExceeded) as refused:
        usage_record(attribution=who, event=ev("b", "0.6"))
    named = refused.value.metadata["budget"]
    assert named["id"] == str(budgets["api_key"].public_id) and named["scope"] == "api_key"
    assert named["remaining"] == "0.500000000000" and named["window_start"]
    assert not UsageEvent.objects.filter(event_id="b").exists()
    assert window(budgets["organization"]).spent == D("1.5")  # nothing recorded
    # The key's budget raised: now the member's (3) is the strictest.
    Budget.objects.filter(pk=budgets["api_key"].pk).update(limit=100)
    usage_record(attribution=who, event=ev("c", "1.5"))
    with pytest.raises(BudgetExceeded) as refused:
        usage_record(attribution=who, event=ev("d", "0.01"))
    assert refused.value.metadata["budget"]["scope"] == "member"
    assert refused.value.status_code == 402 and refused.value.type == "budget_exceeded"


@WINDOWS
def test_a_batch_is_checked_as_one_by_one(setup, request):
    tenant, who, budgets = request.getfixturevalue(setup)
    events = [ev(f"e{i}", "0.75") for i in range(4)]  # the key's 2: two pass, then refused
    outcomes = usage_record_many(attribution=who, events=events)
    assert [type(o).__name__ for o in outcomes] == [
        "UsageResult", "UsageResult", "BudgetExceeded", "BudgetExceeded",
    ]  # fmt: skip
    assert window(budgets["team"]).spent == D("1.5")
    counted_in = set(UsageEvent.objects.get(event_id="e0").budget_windows)
    assert counted_in == {window(b).pk for b in budgets.values()}


@WINDOWS
def test_holds_reserve_and_captures_count_the_actual_cost(setup, request):
    tenant, who, budgets = request.getfixturevalue(setup)
    hold, _ = authorization_create(attribution=who, id="h1", amount=D("1.5"))
    assert window(budgets["team"]).held == D("1.5")
    with pytest.raises(BudgetExceeded):  # 1.5 held + 0.6 > the key's 2
        authorization_create(attribution=who, id="h2", amount=D("0.6"))
    with pytest.raises(BudgetExceeded):
        usage_record(attribution=who, event=ev("x", "0.6"))
    authorization_capture(hold=hold, event=ev("cap", "1.0"))
    w = window(budgets["api_key"])
    assert (w.spent, w.held) == (D("1.0"), D(0))
    # Beyond the hold a capture is a new debit: 1.0 spent + 1.2 > 2.
    hold2, _ = authorization_create(attribution=who, id="h3", amount=D("0.5"))
    with pytest.raises(BudgetExceeded):
        authorization_capture(hold=hold2, event=ev("cap2", "1.2"))
    assert window(budgets["api_key"]).held == D("0.5")
    hold_void(hold=hold2)
    assert window(budgets["api_key"]).held == 0
    hold3, _ = authorization_create(attribution=who, id="h4", amount=D("0.5"))
    Hold.objects.filter(pk=hold3.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert holds_expire() == 1
    assert window(budgets["organization"]).held == 0


@WINDOWS
def test_a_reversal_gives_back_to_the_windows_it_was_counted_in(setup, request):
    tenant, who, budgets = request.getfixturevalue(setup)
    result = usage_record(attribution=who, event=ev("r", "2"))
    with pytest.raises(BudgetExceeded):
        usage_record(attribution=who, event=ev("s", "0.1"))
    # Even when the window is long gone, the reversal hits the rows the event was counted in.
    BudgetWindow.objects.filter(budget__in=budgets.values()).update(
        window_start=timezone.now() - timedelta(days=90)
    )
    ledger_reverse(txn=result.event.transaction, actor=SYSTEM)
    assert all(w.spent == 0 for w in BudgetWindow.objects.filter(budget__in=budgets.values()))


def test_soft_budget_allows_the_grace_then_refuses(tenant):
    tenant.grant("10")
    b = budget(tenant, "organization", "1", mode="soft", grace="0.5", thresholds=[50, 100, 150])
    who = Attribution(organization=tenant.org)
    first = usage_record(attribution=who, event=ev("a", "1.2"))
    assert {a.threshold for a in first.alerts} == {50, 100}
    assert {a.type for a in first.alerts} == {"budget.threshold_crossed"}
    usage_record(attribution=who, event=ev("b", "0.3"))  # 1.5: the grace used up
    with pytest.raises(BudgetExceeded):
        usage_record(attribution=who, event=ev("c", "0.01"))
    assert sorted(Alert.objects.filter(budget=b).values_list("threshold", flat=True)) == [
        50, 100, 150,
    ]  # fmt: skip


def test_filters_operation_and_model_prefix(tenant, prices):
    tenant.grant("10")
    anthropic = budget(tenant, "organization", "1", model="anthropic/")
    images = budget(tenant, "organization", "1", operation="image")
    who = Attribution(organization=tenant.org)
    usage_record(attribution=who, event=ev("a", "0.9", model="anthropic/claude-sonnet-4"))
    usage_record(attribution=who, event=ev("b", "5", model="openai/gpt-4o"))  # neither
    with pytest.raises(BudgetExceeded):
        usage_record(attribution=who, event=ev("c", "0.2", model="anthropic/claude-3-haiku"))
    usage_record(attribution=who, event=ev("d", "0.9", operation="image", model="openai/dall-e"))
    assert window(anthropic).spent == D("0.9") and window(images).spent == D("0.9")


def test_hard_budget_alerts_fire_once_and_100_is_exhausted(tenant):
    tenant.grant("10")
    b = budget(tenant, "organization", "1")
    who = Attribution(organization=tenant.org)
    fired = [usage_record(attribution=who, event=ev(f"e{i}", "0.25")).alerts for i in range(4)]
    assert [[a.threshold for a in f] for f in fired] == [[], [], [75], [90, 100]]
    assert Alert.objects.get(budget=b, threshold=100).type == "budget.exhausted"
    # Given back and crossed again in the same window: no second alert.
    ledger_reverse(txn=UsageEvent.objects.get(event_id="e3").transaction, actor=SYSTEM)
    assert usage_record(attribution=who, event=ev("e4", "0.25")).alerts == ()
    assert Alert.objects.filter(budget=b).count() == 3


def test_validation(tenant, other_tenant):
    for bad in (
        {"limit": "-1"},
        {"thresholds": [0]},
        {"thresholds": [1001], "mode": "soft"},
        {"thresholds": [120]},  # above 100 on a hard budget
        {"scope": "galaxy"},
        {"scope": "team", "team": other_tenant.team},
        {"grace": "-1", "mode": "soft"},
        {"operation": "telepathy"},
    ):
        args = {"scope": "organization", "limit": "1", **bad}
        with pytest.raises(ValidationFailed):
            budget(tenant, **args)
    assert not Budget.objects.exists()


def test_statements_of_a_usage_event_with_four_budgets_are_constant(
    four_known, django_assert_max_num_queries
):
    tenant, who, budgets = four_known
    usage_record(attribution=who, event=ev("sink", "0.001"))  # the usage sink made on first use
    # The savepoint of the test's transaction and its release, the account's lock (which reads
    # the budgets), the windows' lock, the read, the write.
    with django_assert_max_num_queries(6) as first:
        usage_record(attribution=who, event=ev("one", "0.001"))
    usage_record_many(attribution=who, events=[ev(f"h{i}", "0.001") for i in range(300)])
    with django_assert_max_num_queries(6) as later:
        usage_record(attribution=who, event=ev("two", "0.001"))
    assert len(later) == len(first)  # whatever the history in the windows
    assert window(budgets["team"]).spent == D("0.303")
    # Windows this process has not seen committed (new, or made by another process): one more,
    # the INSERT ... ON CONFLICT DO NOTHING of the missing ones.
    budgets_service._KNOWN.clear()
    with django_assert_max_num_queries(7) as unknown:
        usage_record(attribution=who, event=ev("three", "0.001"))
    assert len(unknown) == len(first) + 1


def test_a_known_window_that_is_gone_or_another_falls_back_to_the_full_path(
    four_known, other_tenant
):
    tenant, who, budgets = four_known
    usage_record(attribution=who, event=ev("a", "0.5"))
    member = budgets["member"]
    # The team's window is gone (deleted with nothing else), and the member's hint names a
    # window of another organization's budget: both are checked, neither is trusted.
    other_tenant.grant("10")
    elsewhere = budget(other_tenant, "organization", "5")
    usage_record(attribution=Attribution(organization=other_tenant.org), event=ev("o", "0.1"))
    BudgetWindow.objects.filter(pk=window(budgets["team"]).pk).delete()
    budgets_service._KNOWN[(member.pk, window(member).window_start)] = window(elsewhere).pk
    usage_record(attribution=who, event=ev("b", "0.25"))
    assert window(budgets["team"]).spent == D("0.25")  # a new window
    assert window(budgets["member"]).spent == window(budgets["api_key"]).spent == D("0.75")
    assert window(elsewhere).spent == D("0.1")
    assert set(UsageEvent.objects.get(event_id="b").budget_windows) == {
        window(b).pk for b in budgets.values()
    }


# Key limits are budgets ---------------------------------------------------------------------


def test_a_key_limit_is_a_budget_with_utc_windows(tenant):
    key, _ = tenant.key("usage", limit="5", limit_reset="weekly")
    b = Budget.objects.get(api_key=key)
    assert (b.utc_windows, b.period, b.limit, b.scope) == (True, "weekly", D(5), "api_key")
    key_limit_set(key=key, limit=None, limit_reset=None, actor=SYSTEM)
    assert not Budget.objects.filter(api_key=key).exists()
    assert ApiKey.objects.get(pk=key.pk).limit is None


# (the migration of existing key limits: tests/credits/test_budget_windows.py)


# The API ------------------------------------------------------------------------------------


def test_budgets_api_create_read_update_delete(tenant, prices):
    tenant.org.time_zone = "Europe/Berlin"
    tenant.org.save()
    client = tenant.client(tenant.key("management")[1])
    made = client.post(
        "/api/v1/budgets",
        {"scope": "team", "team": "research", "period": "monthly", "limit": "5", "mode": "soft",
         "grace": "1", "thresholds": [50, 120], "model": "anthropic/"},
        format="json",
    )  # fmt: skip
    assert made.status_code == 201, made.content
    body = made.json()
    assert body["spent"] == "0.000000000000" and body["remaining"] == "5.000000000000"
    assert body["window_start"].endswith(("+01:00", "+02:00")) and body["window_end"]
    bid = body["id"]
    assert client.get(f"/api/v1/budgets/{bid}").json()["thresholds"] == [50, 120]
    assert [b["id"] for b in client.get("/api/v1/budgets").json()["data"]] == [bid]
    patched = client.patch(f"/api/v1/budgets/{bid}", {"limit": "7"}, format="json")
    assert patched.status_code == 200 and patched.json()["limit"] == "7.000000000000"
    assert client.delete(f"/api/v1/budgets/{bid}").json() == {"deleted": True}
    assert client.get(f"/api/v1/budgets/{bid}").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"scope": "organization", "period": "daily", "limit": "-1"},
        {"scope": "organization", "period": "daily", "limit": "1", "thresholds": [0]},
        {"scope": "organization", "period": "daily", "limit": "1", "thresholds": [1001]},
        {"scope": "planet", "period": "daily", "limit": "1"},
        {"scope": "team", "team": "nope", "period": "daily", "limit": "1"},
        {"scope": "member", "member": "owner@globex.test", "period": "daily", "limit": "1"},
        {"scope": "api_key", "api_key": "f" * 64, "period": "daily", "limit": "1"},
    ],
)
def test_bad_budgets_are_400_and_write_nothing(tenant, other_tenant, body):
    client = tenant.client(tenant.key("management")[1])
    response = client.post("/api/v1/budgets", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["metadata"]["type"] == "validation_error"
    assert not Budget.objects.exists()


@pytest.mark.parametrize("model", ["*", "-0.000000000000001", "gtp-4o", "nobody/"])
def test_a_model_filter_that_can_match_nothing_is_400(tenant, prices, model):
    client = tenant.client(tenant.key("management")[1])
    body = {"scope": "organization", "period": "daily", "limit": "1", "model": model}
    response = client.post("/api/v1/budgets", body, format="json")
    assert response.status_code == 400, response.content
    message = response.json()["error"]["metadata"]["errors"]["model"][0]
    assert f"Unknown model '{model}'" in message
    if model == "gtp-4o":
        assert "Did you mean 'gpt-4o'" in message
    assert not Budget.objects.exists()


def test_model_filters_known_or_used_and_cleared_with_null(tenant, prices):
    client = tenant.client(tenant.key("management")[1])

    def create(**filters):
        body = {"scope": "organization", "period": "daily", "limit": "1", **filters}
        response = client.post("/api/v1/budgets", body, format="json")
        assert response.status_code == 201, response.content
        return response.json()

    # A model as clients name it, a provider prefix (by its ids or its provider), and a model
    # that only this organization's usage names (priced by a reported cost).
    for model in ("gpt-4o", "openai/gpt-4o", "anthropic/", "openai/"):
        assert create(model=model)["model"] == model
    tenant.grant("5")
    usage_record(attribution=Attribution(organization=tenant.org),
                 event=ev("own", "0.1", model="acme/house-model"))  # fmt: skip
    made = create(model="acme/house-model", operation="chat")
    cleared = client.patch(f"/api/v1/budgets/{made['id']}", {"model": None, "operation": None},
                           format="json")  # fmt: skip
    assert cleared.status_code == 200, cleared.content
    assert cleared.json()["model"] is None and cleared.json()["operation"] is None
    assert create(model=None, operation=None)["model"] is None


def test_a_team_manager_sets_budgets_of_the_team_members_only(tenant):
    manager = tenant.member(Role.MEMBER, email="boss@acme.test")
    worker = tenant.member(Role.MEMBER, email="worker@acme.test")
    outsider = tenant.member(Role.MEMBER, email="outsider@acme.test")
    team_member_set(team=tenant.team, user=manager, role=TeamRole.MANAGER, actor=SYSTEM)
    team_member_set(team=tenant.team, user=worker, actor=SYSTEM)
    client = APIClient()
    client.force_login(manager)
    client.credentials(HTTP_X_ORGANIZATION=tenant.org.slug)

    def post(**extra):
        return client.post(
            "/api/v1/budgets", {"period": "daily", "limit": "1", **extra}, format="json"
        )

    assert post(scope="member", member="worker@acme.test").status_code == 201
    assert post(scope="member", member="outsider@acme.test").status_code == 403
    assert post(scope="organization").status_code == 403
    assert post(scope="team", team="research").status_code == 403
    assert Budget.objects.count() == 1 and outsider


def test_the_current_key_lists_its_budgets_and_the_binding_one(four):
    tenant, who, budgets = four
    key_limit_set(key=who.api_key, limit=D("1.5"), limit_reset="daily", actor=SYSTEM)
    usage_record(attribution=who, event=ev("a", "1"))
    data = _current_key(tenant, who.api_key)
    assert [b["scope"] for b in data["budgets"]] == [
        "member", "api_key", "team", "workspace", "key_limit",
    ]  # fmt: skip
    assert data["effective_budget"]["scope"] == "key_limit"
    assert data["effective_budget"]["remaining_usd"] == pytest.approx(0.5)
    assert data["limit"] == pytest.approx(1.5) and data["limit_remaining"] == pytest.approx(0.5)


def _current_key(tenant, key):
    # A fresh secret for the key (only its hash is stored): rotate it in place for the test.
    from accounts.services import hash_secret

    secret = "sk-test-" + "0" * 40
    ApiKey.objects.filter(pk=key.pk).update(hash=hash_secret(secret))
    response = tenant.client(secret).get("/api/v1/key")
    assert response.status_code == 200, response.content
    return response.json()["data"]


def test_alerts_reach_the_notifications_once_per_threshold(tenant):
    """Each new alert is told through notifications in the debit's transaction: the owner's
    in-app notification and one outbox message per subscribed webhook endpoint; a refused debit
    and a second crossing in the same window tell nothing."""
    from notifications.models import Notification, OutboxMessage
    from notifications.services import webhook_endpoint_create

    webhook_endpoint_create(
        organization=tenant.org,
        url="https://hooks.example.com/budgets",
        events=["budget.threshold_crossed", "budget.exhausted"],
        actor=SYSTEM,
    )
    tenant.grant("10")
    b = budget(tenant, "team", "1", team=tenant.team)
    tenant.allocate("5")
    who = Attribution(organization=tenant.org, team=tenant.team)
    for i in range(4):
        usage_record(attribution=who, event=ev(f"e{i}", "0.25"))
    with pytest.raises(BudgetExceeded):
        usage_record(attribution=who, event=ev("e5", "0.25"))
    mine = Notification.objects.filter(recipient=tenant.owner).order_by("id")
    assert [(n.type, n.data["threshold"]) for n in mine] == [
        ("budget.threshold_crossed", 75),
        ("budget.threshold_crossed", 90),
        ("budget.exhausted", 100),
    ]
    assert all(n.data["budget"] == str(b.public_id) for n in mine)
    assert "team research" in mine[0].body and "75%" in mine[0].body
    hooks = OutboxMessage.objects.filter(channel="webhook").order_by("id")
    assert [m.payload["type"] for m in hooks] == [
        "budget.threshold_crossed",
        "budget.threshold_crossed",
        "budget.exhausted",
    ]


def test_budget_amounts_are_audited_as_plain_decimals(tenant):
    """A budget's amounts in its audit events (label and snapshots) are decimal text as the API
    writes amounts: "0.000000000000", not `str()`'s "0E-12"."""
    client = tenant.client(tenant.key("management")[1])
    made = client.post(
        "/api/v1/budgets",
        {"scope": "organization", "period": "monthly", "limit": "0", "mode": "soft", "grace": "0"},
        format="json",
    )
    assert made.status_code == 201, made.content
    bid = made.json()["id"]
    patched = client.patch(f"/api/v1/budgets/{bid}", {"limit": "0.000001"}, format="json")
    assert patched.status_code == 200, patched.content
    assert client.delete(f"/api/v1/budgets/{bid}").status_code == 200
    listed = client.get("/api/v1/audit-events", {"target_type": "budget"})
    assert listed.status_code == 200 and "E-" not in listed.content.decode()
    by_action = {e["action"]: e for e in listed.json()["results"]}
    created, updated = by_action["budget.created"], by_action["budget.updated"]
    assert created["target_label"] == "organization monthly budget 0.000000000000"
    assert created["after"]["limit"] == created["after"]["grace"] == "0.000000000000"
    assert updated["before"]["limit"] == "0.000000000000"
    assert updated["after"]["limit"] == "0.000001000000"
    deleted = by_action["budget.deleted"]
    assert deleted["target_label"] == "organization monthly budget 0.000001000000"
    assert deleted["before"]["grace"] == "0.000000000000" and deleted["before"]["team"] is None


@pytest.mark.parametrize("period", ["daily", "weekly", "monthly"])
def test_a_new_time_zone_counts_the_current_windows_again(tenant, period):
    """A window is a span of time in the organization's zone: after a change of zone the current
    window is another span, counted from history; a hard budget spent is not spent afresh."""
    tenant.grant("100")
    hard = budget(tenant, "organization", "60", period=period)
    who = Attribution(organization=tenant.org)
    usage_record(attribution=who, event=ev("before", "36"))

    organization_update(organization=tenant.org, time_zone="America/Los_Angeles", actor=SYSTEM)
    tenant.org.refresh_from_db()

    with pytest.raises(BudgetExceeded):
        usage_record(attribution=Attribution(organization=tenant.org), event=ev("after", "26"))
    current = budget_current_window(Budget.objects.select_related("organization").get(pk=hard.pk))
    assert current.spent == Decimal("36")
