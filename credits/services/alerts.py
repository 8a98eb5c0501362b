"""Budget alerts: a debit that takes a budget's window across one of its thresholds (percent of
the limit) records an `Alert`, once per (budget, window, threshold): the unique constraint
`alert_once_per_window` and INSERT ... ON CONFLICT DO NOTHING, in the debit's transaction."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db import connection
from django.utils import timezone

from accounts.models import Organization

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

    The hook for notifications: deliver the returned alerts from here, through the outbox
    (written in this same transaction), never by calling a channel directly. No errors raised
    beyond the database's."""
    if not crossings:
        return []
    now = timezone.now()
    values, params = [], []
    for c in crossings:
        values.append("(%s, %s, %s, %s, %s, %s, %s, %s)")
        params += [
            organization.pk, c.budget.pk, c.window.window_start, c.threshold, c.type, c.spent,
            c.budget.limit, now,
        ]  # fmt: skip
    table = Alert._meta.db_table
    with connection.cursor() as cursor:
        sql = (  # names from the model, values as parameters
            f"INSERT INTO {table} (organization_id, budget_id, window_start, threshold, type, "  # noqa: S608
            f"spent, {connection.ops.quote_name('limit')}, created_at) VALUES {', '.join(values)} "
            "ON CONFLICT (budget_id, window_start, threshold) DO NOTHING RETURNING id"
        )
        cursor.execute(sql, params)
        ids = [row[0] for row in cursor.fetchall()]
    return list(Alert.objects.filter(pk__in=ids).order_by("budget_id", "threshold")) if ids else []
