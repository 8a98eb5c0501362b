"""Budgets: enforcement inside every debit, and the budget CRUD services.

Enforcement (`BudgetGate`): the budgets that apply to a request (its organization's, its team's,
its member's and its API key's, whose `operation` / `model` filters match) are checked together
and the strictest decides: a debit that would take any of them past its cap (a hard budget's
limit; a soft budget's limit + grace), counting what is spent and held in its current window,
raises `BudgetExceeded` naming that budget. Spend is a counter per window (`BudgetWindow`),
created on demand (INSERT ... ON CONFLICT DO NOTHING) and updated in the debit's transaction:
never a SUM over usage history, never reset by a job.

Lock order (every write of the ledger; see docs/ledger.md): ledger accounts in ascending id
(`ledger_core._lock`), then budget windows in ascending id (`BudgetGate.open`, `_lock_windows`),
then the hold row, then rows nobody else locks (usage events, alerts). Windows are inserted in
(budget id, window start) order before being locked, so two first debits of a new window wait
for each other instead of deadlocking.

Statements per debit, whatever the history: one SELECT of the budgets, one SELECT ... FOR
UPDATE of the windows, one UPDATE of their counters, and one INSERT of alerts when a threshold
was crossed; plus one INSERT ... ON CONFLICT DO NOTHING before the lock when a window is new or
not yet seen committed by this process (`_KNOWN`, PostgreSQL only: elsewhere always). Without
budgets: one SELECT. Measured in bench/budgets.py (docs/performance.md).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Greatest
from django.utils import timezone

from accounts.audit import Actor, audit_record
from accounts.models import ApiKey, Membership, Organization, Team, User
from portal.errors import BudgetExceeded, NotFound, ValidationFailed
from portal.money import (
    CREDIT_QUANTUM,
    credits_expression,
    decimal_text,
    format_credits,
    parse_credits,
)
from portal.statements import prepared_cursor

from .. import rollups
from ..models import Budget, BudgetWindow, ModelPrice, UsageEvent
from ..periods import window_bounds
from .alerts import Crossing, alert_record
from .prices import model_key, model_suggestions

ZERO = Decimal(0)
# The order budgets are checked and listed in (all are checked; the strictest decides): the
# member's, the key's, the team's, the organization's, then the key's own OpenRouter limit.
CHECK_ORDER = {"member": 0, "api_key": 1, "team": 2, "organization": 3}


def check_rank(budget: Budget) -> tuple[int, int]:
    return (4 if budget.utc_windows else CHECK_ORDER[budget.scope], budget.pk or 0)


OPERATIONS = tuple(UsageEvent.Operation.values)


def budget_window_bounds(budget: Budget, now: datetime, time_zone: str):
    """(start, end) of the budget's window containing `now`: in the organization's time zone,
    in UTC for an API key's OpenRouter limit (`utc_windows`) and a guardrail's budget."""
    return window_bounds(budget.period, now, "UTC" if budget.in_utc else time_zone)


def budget_matches(budget: Budget, operation: str, model: str) -> bool:
    """Do the budget's filters take a request of `operation` and `model`? A model filter ending
    in "/" is a provider prefix. An unknown model ("", a hold without one) matches any model
    filter: a reservation errs on the safe side."""
    if budget.operation and budget.operation != operation:
        return False
    if budget.model and model:
        if budget.model.endswith("/"):
            return model.startswith(budget.model)
        return model == budget.model
    return True


def budgets_applying(
    organization_id: int, *, team_id=None, member_id=None, api_key_id=None
) -> list[Budget]:
    """Budgets of the organization that apply to a request of this team, member and key, in
    the order they are checked and listed (`check_rank`). One query."""
    query = budgets_applying_query(
        organization_id, team_id=team_id, member_id=member_id, api_key_id=api_key_id
    )
    return sorted(query, key=check_rank)


def budgets_applying_query(organization_id: int, *, team_id=None, member_id=None, api_key_id=None):
    """`budgets_applying`'s queryset (unsorted: sort by `check_rank`)."""
    condition = Q(scope=Budget.Scope.ORGANIZATION)
    if team_id is not None:
        condition |= Q(scope=Budget.Scope.TEAM, team_id=team_id)
    if member_id is not None:
        condition |= Q(scope=Budget.Scope.MEMBER, member_id=member_id)
    if api_key_id is not None:
        condition |= Q(scope=Budget.Scope.API_KEY, api_key_id=api_key_id)
    return Budget.objects.filter(condition, organization_id=organization_id)


# (budget id, window start) -> window id of windows known to be committed, in this process: a
# debit whose windows are all known locks them in one statement instead of two (INSERT ... ON
# CONFLICT DO NOTHING, then SELECT ... FOR UPDATE). A hint only: `_lock_known` checks every id
# against its (budget, start) in the same statement and falls back when one does not match.
_KNOWN: dict[tuple[int, datetime], int] = {}
KNOWN_MAX = 10_000
_WINDOW_COLUMNS = [f.attname for f in BudgetWindow._meta.concrete_fields]
_WINDOW_TABLE = BudgetWindow._meta.db_table
# Lock the windows `ids` (the wanted ones and a hold's) in ascending id, but only when every
# wanted id still is the window of its (budget, start); otherwise lock and return nothing.
_LOCK_KNOWN_SQL = f"""
WITH wanted (id, budget_id, window_start) AS (
    SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[])
)
SELECT {", ".join(f"w.{c}" for c in _WINDOW_COLUMNS)}
  FROM {_WINDOW_TABLE} w
 WHERE w.id = ANY(%s::bigint[])
   AND (SELECT count(*) FROM {_WINDOW_TABLE} k JOIN wanted USING (id, budget_id, window_start))
       = %s
 ORDER BY w.id
   FOR UPDATE OF w
"""  # noqa: S608  (names from the model, values as parameters)
_FLUSH_SQL = f"""
UPDATE {_WINDOW_TABLE} AS w SET spent = w.spent + d.spent, held = w.held + d.held
  FROM unnest(%s::bigint[], %s::numeric[], %s::numeric[]) AS d (id, spent, held)
 WHERE w.id = d.id
"""  # noqa: S608


def _lock_known(wanted, extra_ids) -> list[BudgetWindow] | None:
    """PostgreSQL, every wanted window known: lock them and `extra_ids` in ascending id in one
    statement. None when one is unknown or no longer the window of its (budget, start): then
    the statement locked nothing (its count did not match), so the caller's INSERT of the
    missing ones comes before any window lock, as the lock order wants. (Only a window deleted
    between the count and the lock, i.e. its budget deleted meanwhile, leaves the others
    locked; the fallback then locks them again, which is a no-op.)"""
    if connection.vendor != "postgresql":
        return None
    ids = [_KNOWN.get((b.pk, s)) for b, s, _ in wanted]
    if None in ids:
        return None
    with prepared_cursor() as cursor:
        cursor.execute(
            _LOCK_KNOWN_SQL,
            [ids, [b.pk for b, _, _ in wanted], [s for _, s, _ in wanted],
             sorted({*ids, *extra_ids}), len(ids)],
        )  # fmt: skip
        rows = [BudgetWindow.from_db(connection.alias, _WINDOW_COLUMNS, r) for r in cursor]
    found = {(w.budget_id, w.window_start) for w in rows}
    if any((b.pk, s) not in found for b, s, _ in wanted):  # deleted since the count
        for b, s, _ in wanted:
            _KNOWN.pop((b.pk, s), None)
        return None
    return rows


def _remember(rows: list[BudgetWindow], wanted) -> None:
    """Know the ids of the `wanted` windows among `rows` once the transaction that locked (maybe
    created) them commits."""
    keys = {(b.pk, s) for b, s, _ in wanted}
    known = {(w.budget_id, w.window_start): w.pk for w in rows}
    known = {k: pk for k, pk in known.items() if k in keys}
    if not known:
        return

    def remember():
        if len(_KNOWN) > KNOWN_MAX:
            _KNOWN.clear()
        _KNOWN.update(known)

    transaction.on_commit(remember)


def _lock_windows(
    organization_id: int, wanted: list[tuple[Budget, datetime, datetime | None]], extra_ids=()
) -> dict:
    """Create the missing windows of `wanted` (budget, start, end) in (budget id, start) order,
    then lock them and the windows `extra_ids` in ascending id. Returns {id: window} and
    {(budget id, start): window}. When all were seen committed before (`_KNOWN`, PostgreSQL),
    none is missing: one SELECT ... FOR UPDATE (`_lock_known`) does it."""
    wanted = sorted(
        {(b.pk, s): (b, s, e) for b, s, e in wanted}.values(), key=lambda w: (w[0].pk, w[1])
    )
    rows = _lock_known(wanted, extra_ids) if wanted else None
    if rows is None:
        if wanted:
            BudgetWindow.objects.bulk_create(
                [
                    BudgetWindow(
                        organization_id=organization_id, budget=b, window_start=s, window_end=e
                    )
                    for b, s, e in wanted
                ],
                ignore_conflicts=True,
            )
        condition = Q(pk__in=list(extra_ids)) if extra_ids else Q(pk__in=[])
        for budget, start, _ in wanted:
            condition |= Q(budget_id=budget.pk, window_start=start)
        rows = list(BudgetWindow.objects.select_for_update().filter(condition).order_by("pk"))
        _remember(rows, wanted)
    return {w.pk: w for w in rows}, {(w.budget_id, w.window_start): w for w in rows}


@dataclass
class BudgetGate:
    """The budgets of one request (or one batch of one attribution) with their current windows
    locked: check, charge and reserve in memory, then `flush` the counters in one UPDATE."""

    organization: Organization
    now: datetime
    pairs: list[tuple[Budget, BudgetWindow]] = field(default_factory=list)
    windows: dict[int, BudgetWindow] = field(default_factory=dict)
    spent_delta: dict[int, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    held_delta: dict[int, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    crossings: list[Crossing] = field(default_factory=list)

    @classmethod
    def open(
        cls,
        *,
        organization: Organization,
        team_id=None,
        member_id=None,
        api_key_id=None,
        now: datetime | None = None,
        extra_window_ids=(),
        budgets: list[Budget] | None = None,
    ) -> BudgetGate:
        """Lock the current windows of every budget applying to the request (the caller holds
        its ledger accounts' locks already), and the windows `extra_window_ids` (a hold's).
        `budgets`: those budgets read already (`budgets_applying`), else they are read here."""
        now = now or timezone.now()
        gate = cls(organization=organization, now=now)
        if budgets is None:
            budgets = budgets_applying(
                organization.pk, team_id=team_id, member_id=member_id, api_key_id=api_key_id
            )
        if not budgets and not extra_window_ids:
            return gate
        wanted = [(b, *budget_window_bounds(b, now, organization.time_zone)) for b in budgets]
        gate.windows, by_start = _lock_windows(organization.pk, wanted, extra_window_ids)
        gate.pairs = [(b, by_start[(b.pk, s)]) for b, s, _ in wanted]
        return gate

    @classmethod
    def of(
        cls, attribution, now: datetime | None = None, extra_window_ids=(), budgets=None
    ) -> BudgetGate:
        return cls.open(
            organization=attribution.organization,
            **cls.principals(attribution),
            now=now,
            extra_window_ids=extra_window_ids,
            budgets=budgets,
        )

    @staticmethod
    def principals(attribution) -> dict:
        """The team, member and key ids of an attribution, as `open` and `budgets_applying`
        take them."""
        return {
            "team_id": attribution.team.pk if attribution.team else None,
            "member_id": attribution.member.pk if attribution.member else None,
            "api_key_id": attribution.api_key.pk if attribution.api_key else None,
        }

    def applicable(self, operation: str, model: str) -> list[tuple[Budget, BudgetWindow]]:
        return [(b, w) for b, w in self.pairs if budget_matches(b, operation, model)]

    def check(self, pairs, amount: Decimal) -> None:
        """BudgetExceeded (naming the strictest budget: least room left) when `amount` more
        would take any of `pairs` past its cap. A zero amount passes."""
        if amount <= 0:
            return
        over = [(b, w) for b, w in pairs if w.spent + w.held + amount > b.cap]
        if not over:
            return
        budget, window = min(
            over, key=lambda p: (p[0].cap - p[1].spent - p[1].held, check_rank(p[0]))
        )
        raise budget_exceeded(budget, window, amount)

    def charge(self, pairs, amount: Decimal) -> list[Crossing]:
        """Count `amount` as spent in `pairs`' windows (in memory until `flush`); returns the
        threshold crossings it caused."""
        caused = []
        if amount <= 0:
            return caused
        for budget, window in pairs:
            before = window.spent
            window.spent += amount
            self.spent_delta[window.pk] += amount
            caused += _crossings(budget, window, before, window.spent)
        self.crossings += caused
        return caused

    def reserve(self, pairs, amount: Decimal) -> None:
        for _, window in pairs:
            window.held += amount
            self.held_delta[window.pk] += amount

    def release(self, window_ids, amount: Decimal) -> None:
        """A hold's `held` leaving its windows (locked by `open`: `extra_window_ids`)."""
        for pk in window_ids:
            if pk in self.windows:
                self.windows[pk].held -= amount
                self.held_delta[pk] -= amount

    def counters_sql(self) -> tuple[str, list] | None:
        """PostgreSQL: the counters' deltas as one UPDATE (SQL, parameters) for the caller to
        run, e.g. inside its own statement (`usage_store.write`); they are then taken as
        written. None elsewhere or when nothing changed (`flush` writes them)."""
        ids = sorted(
            {pk for pk, d in self.spent_delta.items() if d}
            | {pk for pk, d in self.held_delta.items() if d}
        )
        if not ids or connection.vendor != "postgresql":
            return None
        params = [ids, [self.spent_delta.get(pk, ZERO) for pk in ids],
                  [self.held_delta.get(pk, ZERO) for pk in ids]]  # fmt: skip
        self.spent_delta.clear()
        self.held_delta.clear()
        return _FLUSH_SQL, params

    def flush(self) -> list:
        """Write the counters' deltas in one UPDATE and the crossings' alerts in one INSERT ...
        ON CONFLICT DO NOTHING. Returns the alerts that fired (created now)."""
        counters = self.counters_sql()
        if counters is not None:
            with prepared_cursor() as cursor:
                cursor.execute(*counters)
        ids = sorted(
            {pk for pk, d in self.spent_delta.items() if d}
            | {pk for pk, d in self.held_delta.items() if d}
        )
        if ids:  # not PostgreSQL

            def delta(deltas):
                return Case(
                    *[When(pk=pk, then=Value(deltas.get(pk, ZERO))) for pk in ids],
                    default=Value(ZERO),
                )

            BudgetWindow.objects.filter(pk__in=ids).update(
                spent=credits_expression(F("spent") + delta(self.spent_delta)),
                held=credits_expression(F("held") + delta(self.held_delta)),
            )
            self.spent_delta.clear()
            self.held_delta.clear()
        fired = alert_record(organization=self.organization, crossings=self.crossings)
        self.crossings = []
        return fired


def _crossings(budget: Budget, window: BudgetWindow, before: Decimal, after: Decimal):
    out = []
    for threshold in budget.thresholds or ():
        mark = budget.limit * threshold / 100
        if before < mark <= after:
            out.append(Crossing(budget=budget, window=window, threshold=threshold, spent=after))
    return out


def budget_exceeded(budget: Budget, window: BudgetWindow, amount: Decimal) -> BudgetExceeded:
    remaining = max(budget.limit - window.spent - window.held, ZERO)
    what = "Key limit" if budget.utc_windows else "Budget"
    return BudgetExceeded(
        f"{what} exceeded: {format_credits(amount)} needed, {format_credits(remaining)} left of "
        f"the {budget.scope} {budget.period} {budget.mode} budget of "
        f"{format_credits(budget.limit)}",
        budget=budget_figures(budget, window),
    )


def budget_figures(budget: Budget, window: BudgetWindow | None) -> dict:
    """A budget and its window as the API names them (amounts as strings, times ISO)."""
    spent = window.spent if window else ZERO
    held = window.held if window else ZERO
    return {
        "id": str(budget.public_id),
        "scope": budget.scope,
        "period": budget.period,
        "mode": budget.mode,
        "limit": decimal_text(budget.limit),
        "grace": decimal_text(budget.grace),
        "spent": decimal_text(spent),
        "held": decimal_text(held),
        "remaining": decimal_text(max(budget.limit - spent - held, ZERO).quantize(CREDIT_QUANTUM)),
        "window_start": window.window_start.isoformat() if window else None,
        "window_end": window.window_end.isoformat() if window and window.window_end else None,
    }


def budget_windows_give_back(*, window_ids, amount: Decimal) -> None:
    """A reversed usage event's cost leaves the windows it was counted in (locked here, after the
    caller's account locks; never below zero)."""
    if not window_ids or amount <= 0:
        return
    list(BudgetWindow.objects.select_for_update().filter(pk__in=window_ids).order_by("pk"))
    BudgetWindow.objects.filter(pk__in=window_ids).update(
        spent=credits_expression(Greatest(F("spent") - amount, ZERO))
    )


def budget_windows_release(*, window_ids, amount: Decimal) -> None:
    """A hold's reservation leaves its windows (locked by the caller: `holds._lock_hold`)."""
    if window_ids:
        BudgetWindow.objects.filter(pk__in=window_ids).update(
            held=credits_expression(F("held") - amount)
        )


def lock_hold_windows(window_ids) -> None:
    """Lock a hold's windows in ascending id (after its account, before the hold row)."""
    if window_ids:
        list(BudgetWindow.objects.select_for_update().filter(pk__in=window_ids).order_by("pk"))


# Reads ------------------------------------------------------------------------------------------


def budget_current_window(budget: Budget, now: datetime | None = None) -> BudgetWindow:
    """The budget's window containing `now` (an unsaved empty one when nothing was counted)."""
    now = now or timezone.now()
    start, end = budget_window_bounds(budget, now, budget.organization.time_zone)
    window = BudgetWindow.objects.filter(budget=budget, window_start=start).first()
    return window or BudgetWindow(budget=budget, window_start=start, window_end=end)


def budget_current_windows(budgets, now: datetime | None = None) -> dict[int, BudgetWindow]:
    """{budget id: current window} for `budgets` (same organization or not), one query."""
    now = now or timezone.now()
    budgets = list(budgets)
    if not budgets:
        return {}
    starts = {}
    condition = Q(pk__in=[])
    for b in budgets:
        zone = "UTC" if b.in_utc else b.organization.time_zone
        start, end = budget_window_bounds(b, now, zone)
        starts[b.pk] = (start, end)
        condition |= Q(budget_id=b.pk, window_start=start)
    rows = {w.budget_id: w for w in BudgetWindow.objects.filter(condition)}
    return {
        b.pk: rows.get(b.pk)
        or BudgetWindow(budget=b, window_start=starts[b.pk][0], window_end=starts[b.pk][1])
        for b in budgets
    }


# Writes -----------------------------------------------------------------------------------------


def _thresholds(value, mode: str) -> list[int]:
    if value is None:
        return list(Budget.DEFAULT_THRESHOLDS)
    if not isinstance(value, list | tuple) or any(
        isinstance(t, bool) or not isinstance(t, int) for t in value
    ):
        raise ValidationFailed({"thresholds": ["A list of whole percents."]})
    if any(not 1 <= t <= 1000 for t in value):
        raise ValidationFailed({"thresholds": ["Each from 1 to 1000 (percent)."]})
    if mode == Budget.Mode.HARD and any(t > 100 for t in value):
        raise ValidationFailed({"thresholds": ["Above 100 only for a soft budget."]})
    return sorted(set(value))


def _seed(budget: Budget, now: datetime) -> None:
    """Count once, from usage history, what the budget's current window already spent (a new
    budget, or one whose period, target or filters changed). Not on the hot path."""
    from django.db.models import Sum

    start, end = budget_window_bounds(budget, now, budget.organization.time_zone)
    used = UsageEvent.objects.filter(
        organization_id=budget.organization_id, transaction__reversed_by__isnull=True
    )
    if budget.period != Budget.Period.LIFETIME:
        used = used.filter(recorded_at__gte=start, recorded_at__lt=end)
    target = {"team": "team", "member": "member", "api_key": "api_key"}.get(budget.scope)
    if target:
        used = used.filter(**{f"{target}_id": getattr(budget, f"{target}_id")})
    if budget.operation:
        used = used.filter(operation=budget.operation)
    if budget.model.endswith("/"):
        used = used.filter(model__startswith=budget.model)
    elif budget.model:
        used = used.filter(model=budget.model)
    spent = used.aggregate(s=Sum("cost"))["s"] or ZERO
    BudgetWindow.objects.update_or_create(
        budget=budget,
        window_start=start,
        defaults={"organization_id": budget.organization_id, "window_end": end, "spent": spent},
    )


def budgets_reseed(*, organization: Organization, now: datetime | None = None) -> int:
    """Count once more, from usage history, the current windows of the organization's budgets
    whose windows follow its time zone (all but key limits, in UTC, and lifetime budgets): after
    a change of the time zone their current windows are other spans of time, which would start
    from nothing, and a hard budget spent in the old window would let as much again through.
    Runs in the caller's transaction (`accounts.services.organization_update`). Returns the
    number of budgets counted."""
    now = now or timezone.now()
    budgets = Budget.objects.filter(organization=organization, utc_windows=False).exclude(
        period=Budget.Period.LIFETIME
    )
    count = 0
    for budget in budgets:
        budget.organization = organization  # with its new time zone
        _seed(budget, now)
        count += 1
    return count


def _snapshot(budget: Budget) -> dict:
    return {
        "scope": budget.scope,
        "team": budget.team_id,
        "member": budget.member_id,
        "api_key": budget.api_key_id,
        "period": budget.period,
        "limit": budget.limit,
        "mode": budget.mode,
        "grace": budget.grace,
        "thresholds": budget.thresholds,
        "operation": budget.operation,
        "model": budget.model,
        "utc_windows": budget.utc_windows,
        "guardrail": str(budget.guardrail.public_id) if budget.guardrail_id else None,
    }


def _model_filter_known(organization: Organization, model: str) -> bool:
    """Is `model` a filter that can match usage (`budget_matches`): a model of the price table
    (as clients name it: `prices.model_key`), a provider prefix ending in "/" of one, or a model
    (prefix) this organization's usage was recorded with (a model priced by a reported cost
    need not be in the price table; one read of the rollups and their tail,
    `credits.rollups.usage_sums`)? A filter that matches nothing would count nothing."""
    if model.endswith("/"):
        provider = model[:-1]
        if ModelPrice.objects.filter(
            Q(model__istartswith=model) | Q(provider__iexact=provider)
        ).exists():
            return True
        used = rollups.usage_sums(organization=organization, fields=["model"])
        return any(row["model"].startswith(model) for row in used)
    if model_key(model) is not None:
        return True
    return bool(rollups.usage_sums(organization=organization, where=Q(model=model)))


def _validate(budget: Budget) -> None:
    if budget.scope not in Budget.Scope.values:
        raise ValidationFailed({"scope": [f"One of: {', '.join(Budget.Scope.values)}."]})
    if budget.period not in Budget.Period.values:
        raise ValidationFailed({"period": [f"One of: {', '.join(Budget.Period.values)}."]})
    if budget.mode not in Budget.Mode.values:
        raise ValidationFailed({"mode": ["One of: hard, soft."]})
    if budget.operation and budget.operation not in OPERATIONS:
        raise ValidationFailed({"operation": [f"One of: {', '.join(OPERATIONS)}."]})
    if len(budget.model) > 200:
        raise ValidationFailed({"model": ["At most 200 characters."]})
    if budget.model and not _model_filter_known(budget.organization, budget.model):
        close = model_suggestions(budget.model.rstrip("/"))
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValidationFailed(
            {
                "model": [
                    f"Unknown model '{budget.model}': not in the price table, not a provider "
                    f"prefix of one (such as 'openai/'), and never used in this organization.{hint}"
                ]
            }
        )
    org = budget.organization_id
    targets = {
        "team": budget.team,
        "member": budget.member,
        "api_key": budget.api_key,
    }
    for name, target in targets.items():
        if (target is not None) != (budget.scope == name):
            message = "Required for this scope." if target is None else "Only for its own scope."
            raise ValidationFailed({name: [message]})
    if budget.team is not None and budget.team.organization_id != org:
        raise ValidationFailed({"team": ["No such team in this organization."]})
    if budget.api_key is not None and budget.api_key.organization_id != org:
        raise ValidationFailed({"api_key": ["No such API key in this organization."]})
    if (
        budget.member is not None
        and not Membership.objects.filter(organization_id=org, user=budget.member).exists()
    ):
        raise ValidationFailed({"member": ["Not a member of this organization."]})
    if budget.mode == Budget.Mode.HARD and budget.grace:
        raise ValidationFailed({"grace": ["Only a soft budget has a grace amount."]})


@transaction.atomic
def budget_create(
    *,
    organization: Organization,
    scope: str,
    period: str,
    limit,
    team: Team | None = None,
    member: User | None = None,
    api_key: ApiKey | None = None,
    mode: str = Budget.Mode.HARD,
    grace=0,
    thresholds: list[int] | None = None,
    operation: str = "",
    model: str = "",
    utc_windows: bool = False,
    guardrail=None,
    actor: Actor,
) -> Budget:
    """A budget of `limit` credits per `period` on the organization, a team, a member or an API
    key; what its current window already spent is counted once from usage history.

    Raises ValidationFailed (negative limit or grace, unknown scope, period, mode or operation,
    thresholds outside 1..1000 or above 100 on a hard budget, a target missing, of another
    scope or of another organization)."""
    budget = Budget(
        organization=organization,
        scope=scope,
        team=team,
        member=member,
        api_key=api_key,
        period=period,
        limit=parse_credits(limit, field="limit", allow_zero=True),
        mode=mode,
        grace=parse_credits(grace, field="grace", allow_zero=True),
        operation=operation or "",
        model=(model or "").strip(),
        utc_windows=utc_windows,
        guardrail=guardrail,
    )
    _validate(budget)
    budget.thresholds = _thresholds(thresholds, mode)
    budget.save()
    _seed(budget, timezone.now())
    audit_record(
        organization=organization,
        actor=actor,
        action="budget.created",
        target=budget,
        after=_snapshot(budget),
    )
    return budget


UPDATABLE = {"period", "limit", "mode", "grace", "thresholds", "operation", "model"}


@transaction.atomic
def budget_update(*, budget: Budget, actor: Actor, **changes) -> Budget:
    """Change `period`, `limit`, `mode`, `grace`, `thresholds`, `operation`, `model`. A changed
    period or filter counts the new current window once from usage history.

    Raises ValidationFailed (as `budget_create`; unknown fields, no change)."""
    unknown = set(changes) - UPDATABLE
    if unknown:
        raise ValidationFailed({f: ["Unknown field."] for f in sorted(unknown)})
    if not changes:
        raise ValidationFailed({"non_field_errors": ["No update fields provided."]})
    budget = Budget.objects.select_for_update().select_related("organization").get(pk=budget.pk)
    before = _snapshot(budget)
    for name in ("period", "mode", "operation"):
        if name in changes:
            setattr(budget, name, changes[name] or "")
    if "model" in changes:
        budget.model = (changes["model"] or "").strip()
    if "limit" in changes:
        budget.limit = parse_credits(changes["limit"], field="limit", allow_zero=True)
    if "grace" in changes:
        budget.grace = parse_credits(changes["grace"], field="grace", allow_zero=True)
    if changes.get("mode") == Budget.Mode.HARD and "grace" not in changes:
        budget.grace = ZERO
    _validate(budget)
    budget.thresholds = _thresholds(changes.get("thresholds", budget.thresholds), budget.mode)
    budget.updated_at = timezone.now()
    budget.save()
    if {"period", "operation", "model"} & set(changes) and _snapshot(budget) != before:
        _seed(budget, budget.updated_at)
    audit_record(
        organization=budget.organization,
        actor=actor,
        action="budget.updated",
        target=budget,
        before=before,
        after=_snapshot(budget),
    )
    return budget


@transaction.atomic
def budget_delete(*, budget: Budget, actor: Actor) -> None:
    """Delete a budget with its windows and alerts. Raises NotFound when it is gone already."""
    snapshot = _snapshot(budget)
    deleted, _ = Budget.objects.filter(pk=budget.pk).delete()
    if not deleted:
        raise NotFound("No such budget.", resource="budget")
    audit_record(
        organization=budget.organization,
        actor=actor,
        action="budget.deleted",
        target=budget,
        before=snapshot,
    )


@transaction.atomic
def key_limit_set(*, key: ApiKey, limit, limit_reset: str | None, actor: Actor) -> Budget | None:
    """An API key's OpenRouter `limit` (credits; None: no limit) per `limit_reset` (daily,
    weekly, monthly; None or "": in total) as the key's budget with UTC windows: created,
    changed or deleted. Raises ValidationFailed (negative limit, unknown reset)."""
    if limit_reset not in (None, "") and limit_reset not in ApiKey.LimitReset.values:
        raise ValidationFailed({"limit_reset": ["One of: daily, weekly, monthly, or null."]})
    period = limit_reset or Budget.Period.LIFETIME
    existing = Budget.objects.filter(api_key=key, utc_windows=True).first()
    key.__dict__.pop("_limit_budget", None)
    if limit is None:
        if existing is not None:
            budget_delete(budget=existing, actor=actor)
        return None
    if existing is None:
        return budget_create(
            organization=key.organization,
            scope=Budget.Scope.API_KEY,
            api_key=key,
            period=period,
            limit=limit,
            utc_windows=True,
            actor=actor,
        )
    changes = {"limit": limit}
    if period != existing.period:
        changes["period"] = period
    return budget_update(budget=existing, actor=actor, **changes)
