"""Usage sums for reads (a selector): rollup plus tail, in one statement.

Every aggregate read of usage (the dashboard, the usage report, `/activity`, the forecast, the
balance summary's usage figures) goes through `usage_sums`, which adds, in one SQL statement (one
snapshot, so a roll committing meanwhile cannot count a row twice or miss it; the mark read just
before only narrows the tail's index range, as the mark never moves back, and says whether part 3
is needed: `_mark_now`):

1. `UsageRollup` rows whose 15-minute bucket lies inside the window (`credits.services.rollups`
   keeps them, up to the mark), or, for the whole UTC days inside it when every figure asked
   for is a union of whole UTC days, `UsageRollupDay` rows (each the sum of its day's 15-minute
   rows, written with them) and the 15-minute rows of the partial days at either end;
2. plus the tail: the raw events recorded at or after the mark that occurred inside those buckets;
3. minus the raw events of those buckets whose usage transaction was reversed at or after the
   mark (the rollup counted them; they no longer count);
4. plus, when the window's start or end is not on a bucket boundary, the counted raw events of
   the partial buckets at either end (at most 15 minutes of usage each).

(1) + (2) - (3) is exactly the counted usage of the aligned part of the window: the rollup is the
events recorded before the mark less those reversed before it, the tail the rest. The buckets are
15 minutes of UTC time, so days and hours of day in any time zone (every zone's offset is a
multiple of 15 minutes: Asia/Kolkata +5:30, Asia/Kathmandu +5:45) are unions of whole buckets.

The dimensions a read may group by are the columns the rollup shares with the raw events
(`team`, `member`, `api_key`, `model`, `operation` and their related fields, such as
`team__slug`, `member__email`, `api_key__name`), `account` (the account the cost was debited
from), and one time grouping in a time zone. The same row filter (`Principal.row_filter`, on
`team`, `member`, `api_key`) scopes both sources.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal

from django.db import connection
from django.db.models import Count, Exists, Min, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import (
    Coalesce,
    ExtractHour,
    TruncDate,
    TruncDay,
    TruncMonth,
    TruncWeek,
)
from django.utils import timezone

from accounts.access import Principal
from accounts.models import Organization
from portal.money import quantize_credits
from portal.statements import compiled, dict_rows, q_parameters, q_rebuilt

from .models import (
    LedgerEntry,
    LedgerTransaction,
    UsageEvent,
    UsageRollup,
    UsageRollupDay,
    UsageRollupMark,
)

ZERO = Decimal(0)
ROLLUP_BUCKET = timedelta(minutes=15)
DAY = timedelta(days=1)  # the buckets of UsageRollupDay
_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)  # as credits.services.rollups.BUCKET_ORIGIN
_NEVER = datetime(1, 1, 1, tzinfo=UTC)  # the mark before anything was rolled
SUMS = ("events", "cost", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens")
_COUNTS = frozenset(SUMS) - {"cost"}
# A usage event counts unless its usage transaction was reversed (the ledger's view): no
# transaction `reverses` it. As NOT EXISTS, one probe of the reversals' unique index per event;
# `transaction__reversed_by__isnull=True` made PostgreSQL join the transaction, then its
# reversal (two probes: 17 -> 13 ms for the 5,600 events of ten minutes, docs/performance.md).
COUNTED = Q(~Exists(LedgerTransaction.objects.filter(reverses_id=OuterRef("transaction_id"))))

# Time groupings: the name of the value in each row and how it is computed from a time column.
TIME_GROUPS = {
    "day": lambda column, tz: TruncDay(column, tzinfo=tz),  # a datetime at local midnight
    "date": lambda column, tz: TruncDate(column, tzinfo=tz),  # a date
    "week": lambda column, tz: TruncWeek(column, tzinfo=tz),  # Monday, local midnight
    "month": lambda column, tz: TruncMonth(column, tzinfo=tz),
    "hour": lambda column, tz: ExtractHour(column, tzinfo=tz),  # hour of day, 0-23
}


def _floor(moment: datetime, width: timedelta = ROLLUP_BUCKET) -> datetime:
    return moment - (moment - _ORIGIN) % width


def _ceil(moment: datetime, width: timedelta = ROLLUP_BUCKET) -> datetime:
    floor = _floor(moment, width)
    return floor if floor == moment else floor + width


def _is_utc(tz: tzinfo) -> bool:
    return tz is UTC or getattr(tz, "key", None) in ("UTC", "Etc/UTC")


def _paying_account():
    """The account a raw usage event's cost was debited from (as the roll computes it)."""
    return Subquery(
        LedgerEntry.objects.filter(transaction_id=OuterRef("transaction_id"), amount__lt=0)
        .order_by("id")
        .values("account_id")[:1]
    )


def _mark():
    return Coalesce(
        Subquery(UsageRollupMark.objects.order_by("pk").values("rolled_to")[:1]), Value(_NEVER)
    )


def _mark_now(organization_id: int) -> tuple[datetime, bool]:
    """The mark as it is now, and whether the organization has made a reversal since. The mark
    is a lower bound of the mark any later statement sees (it only moves forward), given as a
    constant so that the planner reads the tail on the (organization, recorded_at) index; the
    statement's own subquery of the mark decides. Without a reversal since, the statement
    leaves out the reversed events (part 3 of the module docstring), whose join over the usage
    table's partitions was most of its planning: 0.6 of 0.9 ms, and the planning most of a
    balance read's PostgreSQL time (docs/performance.md, run 17). A reversal committed after
    this read counts from the next read on, as if the read had come a moment earlier. Before
    the first roll there is no mark: the beginning of time, and the part is kept."""
    if connection.vendor != "postgresql":
        row = _mark_query(organization_id).first()
    else:
        sql, params = compiled(
            ("rollup_mark",),
            lambda organization_id: _mark_query(organization_id).query.sql_with_params(),
            {"organization_id": organization_id},
        )
        # Not prepared: a generic plan cannot use the reversals' partial index (`kind` is a
        # parameter), and scanned the organization's transactions.
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
    if not row or row[0] is None:
        return _NEVER, True
    return row[0], bool(row[1])


def _mark_query(organization_id: int):
    """The mark (`rolled_to`) and whether `organization_id` made a reversal at or after it."""
    since = LedgerTransaction.objects.filter(
        organization_id=organization_id,
        kind=LedgerTransaction.Kind.REVERSAL,
        created_at__gte=OuterRef("rolled_to"),
    )
    return (
        UsageRollupMark.objects.order_by("pk")
        .annotate(reversals=Exists(since))
        .values_list("rolled_to", "reversals")[:1]
    )


def _within(column: str, start: datetime | None, end: datetime | None) -> Q:
    condition = Q()
    if start is not None:
        condition &= Q(**{f"{column}__gte": start})
    if end is not None:
        condition &= Q(**{f"{column}__lt": end})
    return condition


def usage_sums(
    *,
    organization: Organization,
    visible: Q | None = None,
    where: Q | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    fields: Sequence[str] = (),
    time: str | None = None,
    tz: tzinfo = UTC,
    first: bool = False,
    since: dict[str, datetime] | None = None,
) -> list[dict]:
    """Counted usage (reversed usage left out, as in the ledger) of `organization` that
    occurred in [`start`, `end`) (None: unbounded), grouped by `fields` and, with `time`, by one
    of `TIME_GROUPS` in `tz` (the row's value under the key `time`). Rows hold the group's
    values and `events`, `cost` (credits), `prompt_tokens`, `completion_tokens`,
    `cached_tokens`, `reasoning_tokens`; with `first`, also `first`: a time at or before the
    group's earliest usage, within its earliest 15-minute bucket (`first_usage` makes it exact).
    `visible` (a `Principal.row_filter()`) and `where` filter on `team`, `member`, `api_key`,
    `model`, `operation` or `account`. `since` names window starts on bucket boundaries (such
    as UTC midnights) inside the window: each adds `cost_<name>`, the group's cost from then on.
    Groups without usage are left out; rows come in no particular order. One SQL statement,
    after a read of the mark. Costs are at the credit quantum: SQLite (the demo) sums decimals as
    binary floats, whose last digits (39.65875740000001 by day, 39.65875740000011 by month)
    would differ with the grouping; PostgreSQL's exact sums are at the quantum already.

    An `end` at or after the present reads as no end: no event lies beyond the present but by
    the few minutes a client may date it ahead (`services.usage.MAX_FUTURE_SKEW`), which count
    as present; so a range "until now" ends on a bucket and reads no raw events at its end
    (a busy organization records tens of thousands in the present 15 minutes)."""
    if end is not None and end >= timezone.now():
        end = None
    condition = (visible or Q()) & (where or Q())
    lo = _ceil(start) if start is not None else None
    hi = _floor(end) if end is not None else None
    names = [*fields, *([time] if time else [])]
    windows = since or {}
    for name, moment in windows.items():
        if _floor(moment) != moment or (start is not None and moment < start):
            raise ValueError(f"The window '{name}' does not start on a bucket inside the range.")
    sums = (*SUMS, *(f"cost_{name}" for name in windows))
    aligned = lo is None or hi is None or lo < hi
    # Whole UTC days inside [lo, hi) read the day rows (a 96th of the rows), when every figure
    # asked for is a union of whole UTC days there: no grouping finer than a UTC day, no window
    # starting inside a day, no earliest bucket (`first` is to the 15 minutes).
    dlo = _ceil(lo, DAY) if lo is not None else None
    dhi = _floor(hi, DAY) if hi is not None else None
    days = (
        aligned
        and (dlo is None or dhi is None or dlo < dhi)
        and not first
        and (time is None or (time in ("day", "date", "week", "month") and _is_utc(tz)))
        and all(_floor(moment, DAY) == moment for moment in windows.values())
    )
    shape = _SumsShape(
        fields=tuple(fields), time=time, tz=tz, first=first, windows=tuple(windows),
        aligned=aligned,
        start_edge=start is not None and lo is not None and start < lo,
        end_edge=end is not None and hi is not None and hi < end,
        days=days,
        lo_part=days and lo is not None and lo < dlo,
        hi_part=days and hi is not None and dhi < hi,
    )  # fmt: skip
    if shape.aligned:  # the times its SQL holds
        floor, reversals = _mark_now(organization.pk)
        shape = replace(shape, reversals=reversals)
        times = {"lo": lo, "hi": hi, "floor": floor}
        if days:
            times.update({"dlo": dlo, "dhi": dhi})
        times.update({"start": start} if shape.start_edge else {})
        times.update({"end": end} if shape.end_edge else {})
    else:
        times = {"start": start, "end": end}
    times.update({f"since_{name}": moment for name, moment in windows.items()})
    merged: dict[tuple, dict] = {}
    for row in _sums_rows(shape, organization.pk, condition, times):
        key = tuple(row[n] for n in names)
        sign = -1 if row["src"] == 3 else 1
        into = merged.get(key)
        if into is None:
            into = merged[key] = {n: row[n] for n in names}
            for k in sums:
                into[k] = 0 if k in _COUNTS else ZERO
            if first:
                into["first"] = None
        for k in sums:
            into[k] += sign * (int(row[k]) if k in _COUNTS else quantize_credits(row[k]))
        if first and sign > 0 and row["first"] is not None:
            seen = into["first"]
            into["first"] = row["first"] if seen is None else min(seen, row["first"])
    return [row for row in merged.values() if row["events"] != 0]


@dataclass(frozen=True)
class _SumsShape:
    """What changes the SQL of a `usage_sums` statement, but for its filter's shape."""

    fields: tuple[str, ...]
    time: str | None
    tz: tzinfo
    first: bool
    windows: tuple[str, ...]
    aligned: bool
    start_edge: bool
    end_edge: bool
    days: bool  # whole UTC days from the day rows, the rest of [lo, hi) from the 15-minute rows
    lo_part: bool  # days: 15-minute rows in [lo, dlo)
    hi_part: bool  # days: 15-minute rows in [dhi, hi)
    reversals: bool = True  # aligned: reversals made since the mark (`_mark_now`) are read


def _sums_rows(shape: _SumsShape, organization_id: int, condition: Q, times: dict) -> list[dict]:
    """The rows of `usage_sums`' statement, before they are merged. PostgreSQL: the statement
    is built by the ORM once per shape (`portal.statements.compiled`: building and compiling
    it costs more than PostgreSQL's running it over the rollups) and its time column made aware
    as the ORM would; elsewhere the ORM runs it."""
    times = {k: v for k, v in times.items() if v is not None}
    if connection.vendor != "postgresql":
        return list(_sums_query(shape, organization_id, condition, **times))
    q_shape, q_values = q_parameters(condition)
    values = {"organization_id": organization_id, **q_values, **times}
    key = ("usage_sums", shape, q_shape, tuple(sorted(times)))

    def build(organization_id, **rest):
        q = q_rebuilt(q_shape, {k: rest.pop(k) for k in q_values})
        return _sums_query(shape, organization_id, q, **rest).query.sql_with_params()

    rows = dict_rows(*compiled(key, build, values))
    if shape.time in ("day", "week", "month"):  # as TruncBase.convert_value
        for row in rows:
            row[shape.time] = timezone.make_aware(row[shape.time], shape.tz)
    elif shape.time == "hour":
        for row in rows:
            row["hour"] = int(row["hour"])
    return rows


def _sums_query(
    shape: _SumsShape, organization_id: int, condition: Q, *, floor: datetime | None = None,
    start: datetime | None = None, end: datetime | None = None, lo: datetime | None = None,
    hi: datetime | None = None, dlo: datetime | None = None, dhi: datetime | None = None,
    **since: datetime,
):  # fmt: skip
    """The queryset of `usage_sums` (see its docstring): the union of the rollup, its tail,
    the tail's reversals and the partial buckets at the ends; `since` holds `since_<window>`."""
    time, names = shape.time, [*shape.fields, *([shape.time] if shape.time else [])]

    def shaped(qs, column: str, source: int, aggregates: dict):
        annotations = {"src": Value(source)}
        if time:
            annotations[time] = TIME_GROUPS[time](column, shape.tz)
        # Sums over a window first: after `cost=Sum("cost")`, "cost" names that sum.
        ordered = dict(sorted(aggregates.items(), key=lambda item: not item[0].startswith("cost_")))
        return qs.annotate(**annotations).values(*names, "src").annotate(**ordered).order_by()

    raw_sums = {
        "events": Count("id"),
        "cost": Coalesce(Sum("cost"), ZERO),
        "prompt_tokens": Coalesce(Sum("prompt_tokens"), 0),
        "completion_tokens": Coalesce(Sum("completion_tokens"), 0),
        "cached_tokens": Coalesce(Sum("cached_tokens"), 0),
        "reasoning_tokens": Coalesce(Sum("reasoning_tokens"), 0),
    }
    rollup_sums = {k: Coalesce(Sum(k), ZERO if k == "cost" else 0) for k in SUMS}
    if shape.first:
        raw_sums["first"] = Min("occurred_at")
        rollup_sums["first"] = Min("bucket")
    for name in shape.windows:
        moment = since[f"since_{name}"]
        raw_sums[f"cost_{name}"] = Coalesce(Sum("cost", filter=Q(occurred_at__gte=moment)), ZERO)
        rollup_sums[f"cost_{name}"] = Coalesce(Sum("cost", filter=Q(bucket__gte=moment)), ZERO)
    raw = UsageEvent.objects.filter(organization_id=organization_id)
    if "account" in shape.fields or _mentions_account(condition):
        raw = raw.annotate(account=_paying_account())
    raw = raw.filter(condition)
    parts = []
    if shape.aligned:
        inside = _within("occurred_at", lo, hi)
        if shape.days:
            daily = UsageRollupDay.objects.filter(organization_id=organization_id).filter(
                condition, _within("bucket", dlo, dhi)
            )
            parts.append(shaped(daily, "bucket", 1, rollup_sums))
            rest = Q()
            if shape.lo_part:
                rest |= _within("bucket", lo, dlo)
            if shape.hi_part:
                rest |= _within("bucket", dhi, hi)
        else:
            rest = _within("bucket", lo, hi)
        if not shape.days or shape.lo_part or shape.hi_part:
            rollup = UsageRollup.objects.filter(organization_id=organization_id).filter(
                condition, rest
            )
            parts.append(shaped(rollup, "bucket", 1, rollup_sums))
        added = raw.filter(inside, Q(recorded_at__gte=floor), Q(recorded_at__gte=_mark()))
        parts.append(shaped(added, "occurred_at", 2, raw_sums))
        if shape.reversals:
            reversed_ = raw.filter(
                inside,
                Q(transaction__reversed_by__created_at__gte=floor),
                Q(transaction__reversed_by__created_at__gte=_mark()),
                transaction__reversed_by__organization_id=organization_id,
                transaction__reversed_by__kind=LedgerTransaction.Kind.REVERSAL,
            )
            parts.append(shaped(reversed_, "occurred_at", 3, raw_sums))
        edges = Q()
        if shape.start_edge:
            edges |= _within("occurred_at", start, lo)
        if shape.end_edge:
            edges |= _within("occurred_at", hi, end)
        if edges:
            parts.append(shaped(raw.filter(COUNTED, edges), "occurred_at", 4, raw_sums))
    else:
        window = _within("occurred_at", start, end)
        parts.append(shaped(raw.filter(COUNTED, window), "occurred_at", 4, raw_sums))
    return parts[0].union(*parts[1:], all=True) if len(parts) > 1 else parts[0]


def _mentions_account(condition: Q) -> bool:
    for child in condition.children:
        if isinstance(child, Q):
            if _mentions_account(child):
                return True
        elif child[0].split("__")[0] == "account":
            return True
    return False


def usage_sums_visible(principal: Principal, **kwargs) -> list[dict]:
    """`usage_sums` of the usage `principal` may see (`Principal.row_filter`, as
    `credits.selectors.usage_visible`)."""
    return usage_sums(organization=principal.organization, visible=principal.row_filter(), **kwargs)


def first_usage(
    organization: Organization,
    *,
    after: datetime,
    end: datetime | None = None,
    visible: Q | None = None,
    where: Q | None = None,
) -> datetime | None:
    """When the earliest counted usage of `organization` (filtered by `visible` and `where`)
    at or after `after` and before `end` occurred: one query on the (organization,
    occurred_at) index within the 15-minute bucket of `after` (a `usage_sums` row's `first`,
    which lies in the earliest bucket with usage), and a second over the whole range only
    when all of that bucket's usage was reversed."""
    qs = UsageEvent.objects.filter(organization=organization)
    condition = (visible or Q()) & (where or Q())
    if _mentions_account(condition):
        qs = qs.annotate(account=_paying_account())
    qs = qs.filter(condition, COUNTED)
    # First the bucket of `after` (where the earliest usage lies unless all of that bucket's was
    # reversed): over a long range PostgreSQL may not walk the index in order but sort it all.
    until = _floor(after) + ROLLUP_BUCKET
    if end is None or until < end:
        first = _earliest(qs.filter(_within("occurred_at", after, until)))
        if first is not None:
            return first
    return _earliest(qs.filter(_within("occurred_at", after, end)))


def _earliest(qs) -> datetime | None:
    return qs.order_by("occurred_at").values_list("occurred_at", flat=True).first()


def first_usages(
    organization: Organization,
    *,
    field: str,
    after: dict,
    end: datetime | None = None,
    visible: Q | None = None,
) -> dict:
    """`first_usage` of each group (`field` = key) of `after` (a group's `usage_sums` `first`),
    in one query of each group's earliest bucket (plus, in the rare case that every event of
    that bucket was reversed, one `first_usage` for that group)."""
    if not after:
        return {}
    qs = UsageEvent.objects.filter(organization=organization)
    if field == "account":
        qs = qs.annotate(account=_paying_account())
    ranges = Q()
    for key, moment in after.items():
        until = _floor(moment) + ROLLUP_BUCKET
        until = min(until, end) if end is not None else until
        ranges |= Q(**{field: key}) & _within("occurred_at", moment, until)
    rows = (
        qs.filter(visible or Q(), COUNTED, ranges)
        .values(field)
        .annotate(first=Min("occurred_at"))
        .order_by()
    )
    found = {row[field]: row["first"] for row in rows}
    for key in set(after) - set(found):
        found[key] = first_usage(
            organization, after=after[key], end=end, visible=visible, where=Q(**{field: key})
        )
    return found
