"""The scheduled watches (credits/services/watch.py): low balances, expiring credits and the
daily usage summary tell their people once a day; an account's low balance is set over the API
by who may."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from accounts.roles import Role, TeamRole
from accounts.services import team_member_set
from credits.models import LedgerAccount
from credits.services import Attribution, UsageInput, usage_record
from credits.services.watch import (
    balances_low_check,
    credits_expiring_check,
    daily_summaries_send,
)
from notifications.models import Notification, OutboxMessage
from notifications.services import webhook_endpoint_create

from ..conftest import SYSTEM


def _spend(tenant, id: str, cost: str, **kwargs) -> None:
    usage_record(
        attribution=Attribution(organization=tenant.org),
        event=UsageInput(id=id, model="gpt-4o", cost=Decimal(cost), **kwargs),
    )


def _told(tenant, type: str) -> list[Notification]:
    return list(Notification.objects.filter(recipient=tenant.owner, type=type).order_by("id"))


def test_a_low_balance_is_told_once_a_day(tenant):
    webhook_endpoint_create(
        organization=tenant.org, url="https://hooks.example.com/low", events=["balance.low"],
        actor=SYSTEM,
    )  # fmt: skip
    tenant.grant("10")
    pool = LedgerAccount.objects.get(organization=tenant.org, kind="pool")
    _, secret = tenant.key("management", user=tenant.owner)
    api = tenant.client(secret)
    response = api.patch(f"/api/v1/credits/accounts/{pool.pk}", {"low_balance": "5"})
    assert response.status_code == 200 and response.json()["low_balance"] == "5.000000000000"
    assert balances_low_check() == 0  # 10 available
    _spend(tenant, "big", "6")
    assert balances_low_check() == 1
    assert balances_low_check() == 0  # once a day
    (told,) = _told(tenant, "balance.low")
    assert told.data["available"] == "4.000000000000" and "4.0" in told.body
    hooks = OutboxMessage.objects.filter(channel="webhook", event_type="balance.low")
    assert hooks.count() == 1
    cleared = api.patch(f"/api/v1/credits/accounts/{pool.pk}", {"low_balance": None}, format="json")
    assert cleared.status_code == 200 and cleared.json()["low_balance"] is None
    _spend(tenant, "more", "1")
    assert balances_low_check(now=timezone.now() + timedelta(days=1)) == 0


def test_who_may_set_a_low_balance(tenant):
    tenant.grant("10")
    tenant.allocate("2")
    team_account = LedgerAccount.objects.get(team=tenant.team)
    pool = LedgerAccount.objects.get(organization=tenant.org, kind="pool")
    manager = tenant.member(Role.MEMBER)
    team_member_set(team=tenant.team, user=manager, role=TeamRole.MANAGER, actor=SYSTEM)
    viewer = tenant.member(Role.VIEWER)
    body = {"low_balance": "1"}
    for user, account, status in (
        (manager, team_account, 200),  # their team's account
        (manager, pool, 404),  # the pool is not theirs to see
        (viewer, pool, 403),
    ):
        _, secret = tenant.key("management", user=user)
        response = tenant.client(secret).patch(f"/api/v1/credits/accounts/{account.pk}", body)
        assert response.status_code == status, (user, response.content)
    _, secret = tenant.key("management", user=tenant.owner)
    bad = tenant.client(secret).patch(f"/api/v1/credits/accounts/{pool.pk}", {"low_balance": "-1"})
    assert bad.status_code == 400
    pool.refresh_from_db()
    assert pool.low_balance is None


def test_expiring_credits_are_told_once_a_day(tenant):
    tenant.grant("3", expires_at=timezone.now() + timedelta(days=3))
    tenant.grant("4", expires_at=timezone.now() + timedelta(days=30))
    assert credits_expiring_check() == 1
    assert credits_expiring_check() == 0
    (told,) = _told(tenant, "credits.expiring")
    assert told.data["amount"] == "3.000000000000"


def test_the_daily_summary_tells_yesterday_once(tenant, prices):
    tenant.grant("10")
    yesterday = timezone.now() - timedelta(days=1)
    _spend(tenant, "y1", "0.5", occurred_at=yesterday)
    _spend(tenant, "y2", "0.25", occurred_at=yesterday)
    _spend(tenant, "today", "1")
    assert daily_summaries_send() == 1
    assert daily_summaries_send() == 0
    (told,) = _told(tenant, "usage.daily_summary")
    assert told.data["requests"] == 2 and Decimal(told.data["cost"]) == Decimal("0.75")
