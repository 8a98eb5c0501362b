"""Budgets under real threads on PostgreSQL: 20 threads pushing a team past its hard budget never
spend beyond the limit, its 75, 90 and 100 % alerts fire exactly once each, and debits of four
levels at once (singles, batches, holds and captures mixed) never deadlock."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db.models import Sum

from accounts.roles import Role
from accounts.services import team_member_set
from credits.models import Alert, BudgetWindow, Hold, UsageEvent
from credits.services import (
    Attribution,
    UsageInput,
    authorization_capture,
    authorization_create,
    usage_record,
    usage_record_many,
)
from credits.services.budgets import budget_create
from portal.errors import BudgetExceeded

from ..conftest import SYSTEM
from .test_concurrency import in_threads

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("many_connections"),
]

D = Decimal


def attempt(call):
    try:
        call()
        return "ok"
    except BudgetExceeded:
        return "BudgetExceeded"
    except Exception as exc:  # a deadlock or any other failure: reported, never swallowed
        return f"{type(exc).__name__}: {exc}"


def test_20_threads_never_push_a_team_past_its_hard_budget_and_alerts_fire_once(tenant):
    tenant.grant("100")
    tenant.allocate("50")
    team_budget = budget_create(
        organization=tenant.org, scope="team", team=tenant.team, period="monthly", limit="1",
        actor=SYSTEM,
    )  # fmt: skip
    who = Attribution(organization=tenant.org, team=tenant.team)

    def work(i):
        return [
            attempt(lambda j=j: usage_record(
                attribution=who, event=UsageInput(id=f"t{i}-{j}", model="m", cost=D("0.05"))
            ))
            for j in range(3)
        ]  # fmt: skip

    outcomes = in_threads(20, work)
    assert sorted(set(outcomes)) == ["BudgetExceeded", "ok"], outcomes
    assert outcomes.count("ok") == 20  # exactly 1.00 of 0.05 debits
    window = BudgetWindow.objects.get(budget=team_budget)
    spent = UsageEvent.objects.filter(team=tenant.team).aggregate(s=Sum("cost"))["s"]
    assert window.spent == spent == D(1) and window.held == 0
    alerts = Alert.objects.filter(budget=team_budget)
    assert sorted(alerts.values_list("threshold", flat=True)) == [75, 90, 100]
    assert alerts.get(threshold=100).type == "budget.exhausted"


def test_four_levels_mixed_debit_paths_do_not_deadlock_nor_overspend(tenant):
    tenant.grant("100")
    tenant.allocate("50")
    member = tenant.member(Role.MEMBER)
    team_member_set(team=tenant.team, user=member, actor=SYSTEM)
    keys = [tenant.key("usage", team=tenant.team, user=member)[0] for _ in range(2)]
    budgets = [
        budget_create(organization=tenant.org, scope="organization", period="daily", limit="3",
                      actor=SYSTEM),
        budget_create(organization=tenant.org, scope="team", team=tenant.team, period="weekly",
                      limit="2", actor=SYSTEM),
        budget_create(organization=tenant.org, scope="member", member=member, period="monthly",
                      limit="2.5", actor=SYSTEM),
        *[budget_create(organization=tenant.org, scope="api_key", api_key=k, period="lifetime",
                        limit="1.5", actor=SYSTEM) for k in keys],
    ]  # fmt: skip
    pool_user = Attribution(organization=tenant.org)

    def step(who, i, j):
        kind = (i + j) % 3
        if kind == 0:
            usage_record(
                attribution=who, event=UsageInput(id=f"s{i}-{j}", model="m", cost=D("0.1"))
            )
        elif kind == 1:
            events = [UsageInput(id=f"b{i}-{j}-{n}", model="m", cost=D("0.05")) for n in range(2)]
            usage_record_many(attribution=who, events=events)
        else:
            hold, _ = authorization_create(attribution=who, id=f"h{i}-{j}", amount=D("0.2"))
            authorization_capture(
                hold=hold, event=UsageInput(id=f"c{i}-{j}", model="m", cost=D("0.15"))
            )

    def work(i):
        who = Attribution.of_key(keys[i % 2]) if i % 4 else pool_user
        return [attempt(lambda j=j: step(who, i, j)) for j in range(3)]

    outcomes = in_threads(20, work)
    assert set(outcomes) <= {"ok", "BudgetExceeded"}, outcomes
    for b in budgets:
        w = BudgetWindow.objects.filter(budget=b).order_by("-window_start").first()
        assert w.spent <= b.limit and w.held == 0
    assert not Hold.objects.filter(status="pending").exists()
    team_spent = UsageEvent.objects.filter(team=tenant.team).aggregate(s=Sum("cost"))["s"]
    assert BudgetWindow.objects.get(budget=budgets[1]).spent == team_spent
