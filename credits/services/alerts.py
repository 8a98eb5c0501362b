"""Budget alerts: a debit that takes a budget's window across one of its thresholds (percent of
the limit) records an `Alert`, once per (budget, window, threshold): the unique constraint
`alert_once_per_window` and INSERT ... ON CONFLICT DO NOTHING, in the debit's transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from accounts.audit import Actor, audit_record
from accounts.models import Organization
from notifications.services import notify
from portal.money import format_credits

from ..models import Alert, Budget, BudgetWindow


@dataclass(frozen=True)
class Crossing:
    """A debit took `window` of `budget` to `spent`, across `threshold` percent of its limit."""

    budget: Budget
    window: BudgetWindow
    threshold: int
    spent: Decimal

    @property
    def type(self) -> str:
        if self.threshold >= 100 and self.budget.mode == Budget.Mode.HARD:
            return Alert.Type.EXHAUSTED
        return Alert.Type.THRESHOLD_CROSSED


def alert_record(*, organization: Organization, crossings: list[Crossing]) -> list[Alert]:
    """Record the alerts of `crossings` (threshold crossings a debit caused), each once per
    (budget, window start, threshold): one INSERT ... ON CONFLICT DO NOTHING, inside the caller's
    transaction (the debit's), so a refused or rolled-back debit fires nothing. Types:
    `budget.threshold_crossed`, and `budget.exhausted` for 100 % of a hard budget.

    Returns the alerts this call created (not those that had fired already in the window).

    Each new alert is told through `notifications.services.notify` in this same transaction
    (in-app notifications and outbox messages for e-mail, SMS and webhooks, sent after commit).
    No errors raised beyond the database's."""
    if not crossings:
        return []
    now = timezone.now()
    public_id = Alert._meta.get_field("public_id")
    values, params = [], []
    for c in crossings:
        values.append("(%s, %s, %s, %s, %s, %s, %s, %s, %s)")
        params += [
            organization.pk, c.budget.pk, c.window.window_start, c.threshold, c.type, c.spent,
            c.budget.limit, now, public_id.get_db_prep_value(uuid.uuid4(), connection),
        ]  # fmt: skip
    table = Alert._meta.db_table
    with connection.cursor() as cursor:
        sql = (  # names from the model, values as parameters
            f"INSERT INTO {table} (organization_id, budget_id, window_start, threshold, type, "  # noqa: S608
            f"spent, {connection.ops.quote_name('limit')}, created_at, public_id) "
            f"VALUES {', '.join(values)} "
            "ON CONFLICT (budget_id, window_start, threshold) DO NOTHING RETURNING id"
        )
        cursor.execute(sql, params)
        ids = [row[0] for row in cursor.fetchall()]
    if not ids:
        return []
    alerts = list(Alert.objects.filter(pk__in=ids).order_by("budget_id", "threshold"))
    budgets = {c.budget.pk: c.budget for c in crossings}
    for alert in alerts:
        notify(organization=organization, type=alert.type, data=alert_data(alert, budgets))
    return alerts


def budget_label(budget: Budget) -> str:
    """How people call a budget: "the monthly budget of team research (50 credits)"."""
    target = {
        Budget.Scope.ORGANIZATION: "the organization",
        Budget.Scope.TEAM: f"team {budget.team.slug}" if budget.team_id else "a team",
        Budget.Scope.MEMBER: budget.member.email if budget.member_id else "a member",
        Budget.Scope.API_KEY: f"key {budget.api_key.name}" if budget.api_key_id else "a key",
    }[budget.scope]
    return f"the {budget.period} budget of {target} ({format_credits(budget.limit)} credits)"


def alert_data(alert: Alert, budgets: dict[int, Budget]) -> dict:
    """What an alert tells its channels (in-app, e-mail, SMS, webhooks): the budget's public id
    and label, the threshold (percent), the window's start (ISO 8601), spent and limit (credits,
    decimal strings)."""
    budget = budgets[alert.budget_id]
    return {
        "budget": str(budget.public_id),
        "budget_label": budget_label(budget),
        "scope": budget.scope,
        "period": budget.period,
        "threshold": alert.threshold,
        "window_start": alert.window_start.isoformat(),
        "spent": str(alert.spent),
        "limit": str(alert.limit),
    }


@transaction.atomic
def alert_acknowledge(*, alert: Alert, actor: Actor) -> Alert:
    """Mark `alert` acknowledged by `actor` (now), audited as `alert.acknowledged`. Acknowledging
    twice keeps the first time and person. The caller checks the right to do it
    (`credits:write` organization-wide, or the manager of the budget's team)."""
    alert = Alert.objects.select_for_update().select_related("budget").get(pk=alert.pk)
    if alert.acknowledged_at is not None:
        return alert
    alert.acknowledged_at = timezone.now()
    alert.acknowledged_by = actor.user
    alert.save(update_fields=["acknowledged_at", "acknowledged_by"])
    audit_record(
        organization=alert.budget.organization,
        actor=actor,
        action="alert.acknowledged",
        target=alert,
        after={"alert": str(alert.public_id), "budget": str(alert.budget.public_id)},
    )
    return alert
