"""Budget alerts: a debit that takes a budget's window across one of its thresholds (percent of
the limit) records an `Alert`, once per (budget, window, threshold): the unique constraint
`alert_once_per_window` and INSERT ... ON CONFLICT DO NOTHING, in the debit's transaction.

Two more come from scheduled checks (Celery beat, `credits.tasks`), once per (budget, window,
type): the unique constraint `alert_event_once_per_window`, whichever check commits first:

- `budget.recovered` (`budgets_recovered_check`, every minute, so it fires within a minute of
  the window's start without traffic): the current window of a budget that was exhausted
  (a `budget.exhausted` alert) in its previous window. Only hard budgets are exhausted (a soft
  one warns), so only they recover; a lifetime budget has one window and never recovers.
- `budget.forecast_exceeded` (`budgets_forecast_check`, hourly): a budget whose spend at the
  end of its current window is projected past its limit (`credits.forecast.budget_projection`,
  from the window's counter, never the usage history), while it has not reached it yet.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import IntegrityError, connection, transaction
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
        "threshold": alert.threshold,  # None: a recovery or a forecast
        "window_start": alert.window_start.isoformat(),
        "spent": str(alert.spent),
        "limit": str(alert.limit),
    }


# Scheduled: recovery and forecast ---------------------------------------------------------------

RECOVERY_LOOKBACK = timedelta(days=63)  # a monthly window starts at most 62 days before the next
BATCH = 500


def _event_alert(
    *, budget: Budget, window_start: datetime, type: str, spent: Decimal, extra: dict
) -> Alert | None:
    """Record `type` (recovered, forecast exceeded) of `budget`'s window from `window_start`
    and tell it, in one transaction; None when it fired already (the unique constraint
    `alert_event_once_per_window` refused the row, a concurrent check included)."""
    with transaction.atomic():
        try:
            with transaction.atomic():  # a savepoint: the duplicate is the only thing undone
                alert = Alert.objects.create(
                    organization_id=budget.organization_id, budget=budget,
                    window_start=window_start, threshold=None, type=type, spent=spent,
                    limit=budget.limit,
                )  # fmt: skip
        except IntegrityError:
            return None
        data = {**alert_data(alert, {budget.pk: budget}), **extra}
        notify(organization=budget.organization, type=type, data=data)
    return alert


def _fired(type: str, since: datetime) -> set[tuple[int, datetime]]:
    return set(
        Alert.objects.filter(type=type, window_start__gte=since).values_list(
            "budget_id", "window_start"
        )
    )


def budgets_recovered_check(*, now: datetime | None = None) -> list[Alert]:
    """Fire `budget.recovered` for every budget now in the window after one in which it was
    exhausted (a `budget.exhausted` alert of the previous window), once per budget and window.
    Windows are the budget's own (`budgets.budget_window_bounds`: the organization's time zone,
    UTC for OpenRouter key limits and guardrails). Lifetime budgets never recover. Reads alerts
    only (exhausted in the last 63 days, not yet recovered) and the new windows' counters.
    Returns the alerts fired now."""
    from .budgets import budget_window_bounds

    now = now or timezone.now()
    since = now - RECOVERY_LOOKBACK
    exhausted = defaultdict(set)
    for budget_id, start in Alert.objects.filter(
        type=Alert.Type.EXHAUSTED, window_start__gte=since, window_start__lt=now
    ).values_list("budget_id", "window_start"):
        exhausted[budget_id].add(start)
    if not exhausted:
        return []
    recovered = _fired(Alert.Type.RECOVERED, since)
    budgets = (
        Budget.objects.filter(pk__in=list(exhausted))
        .exclude(period=Budget.Period.LIFETIME)
        .select_related("organization", "team", "member", "api_key")
        .order_by("pk")
    )
    due = []
    for budget in budgets:
        zone = budget.organization.time_zone
        start, end = budget_window_bounds(budget, now, zone)
        previous, _ = budget_window_bounds(budget, start - timedelta(microseconds=1), zone)
        if previous in exhausted[budget.pk] and (budget.pk, start) not in recovered:
            due.append((budget, start, end, previous))
    if not due:
        return []
    spent = {
        (w.budget_id, w.window_start): w.spent
        for w in BudgetWindow.objects.filter(
            budget_id__in=[d[0].pk for d in due], window_start__in={d[1] for d in due}
        )
    }
    fired = []
    for budget, start, end, previous in due:
        alert = _event_alert(
            budget=budget, window_start=start, type=Alert.Type.RECOVERED,
            spent=spent.get((budget.pk, start), Decimal(0)),
            extra={"window_end": end.isoformat(), "previous_window_start": previous.isoformat()},
        )  # fmt: skip
        if alert is not None:
            fired.append(alert)
    return fired


def budgets_forecast_check(*, now: datetime | None = None) -> list[Alert]:
    """Fire `budget.forecast_exceeded` for every budget whose projected spend at the end of its
    current window exceeds its limit (`credits.forecast.budget_projection`: spent + held +
    the window's own hourly rate x the hours left), once per budget and window, unless it has
    reached its limit already (its threshold alerts told that). Lifetime budgets have no end
    and are not projected. Reads the budgets and their current windows' counters, 500 at a
    time. Returns the alerts fired now."""
    from ..forecast import budget_projections

    now = now or timezone.now()
    told = _fired(Alert.Type.FORECAST_EXCEEDED, now - RECOVERY_LOOKBACK)
    budgets = (
        Budget.objects.exclude(period=Budget.Period.LIFETIME)
        .select_related("organization", "team", "member", "api_key")
        .order_by("pk")
    )
    fired, last = [], 0
    while True:
        chunk = list(budgets.filter(pk__gt=last)[:BATCH])
        if not chunk:
            return fired
        last = chunk[-1].pk
        for p in budget_projections(chunk, now):
            if not p.exceeds or p.spent >= p.limit or (p.budget.pk, p.window_start) in told:
                continue
            alert = _event_alert(
                budget=p.budget, window_start=p.window_start,
                type=Alert.Type.FORECAST_EXCEEDED, spent=p.spent,
                extra={
                    "window_end": p.window_end.isoformat(),
                    "held": str(p.held),
                    "projected": str(p.projected),
                    "rate_per_hour": str(p.rate_per_hour),
                },
            )  # fmt: skip
            if alert is not None:
                fired.append(alert)


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
