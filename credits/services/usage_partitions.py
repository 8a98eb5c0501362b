"""The monthly partitions of the usage table (PostgreSQL; made by migration `credits/0013`).

`credits_usageevent` is partitioned by RANGE of `recorded_at` (server time, "now" at insert:
new events land in the current month): one partition `credits_usageevent_pYYYYMM` per UTC
month, and a DEFAULT partition `credits_usageevent_default` for an event of a month without
one (nothing fails for want of a partition). The beat task `credits.tasks.usage_partitions_ensure`
creates the months ahead daily (`usage_partitions_ensure`); `manage.py usage_partitions` lists
them, creates them, and detaches an old month to archive (`usage_partition_detach`).

Elsewhere (SQLite: the demo) the usage table is one table: nothing to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

from django.db import connection, transaction
from django.utils import timezone

from portal.errors import Conflict, NotFound

from ..models import UsageEvent, UsageEventKey, UsageRollupMark

PARENT = UsageEvent._meta.db_table
DEFAULT = f"{PARENT}_default"
# Creating or detaching a partition locks the whole usage table for a moment: rather than wait
# behind a long read (and queue every insert behind itself), give up; the daily task comes back.
LOCK_TIMEOUT = "5s"


def month_of(at: datetime) -> date:
    """The first day of the UTC month of `at` (aware)."""
    at = at.astimezone(UTC)
    return date(at.year, at.month, 1)


def month_after(month: date, months: int = 1) -> date:
    """The first day of the month `months` after `month`'s."""
    index = month.year * 12 + month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def partition_name(month: date) -> str:
    return f"{PARENT}_p{month:%Y%m}"


def _bound(month: date) -> str:
    return f"'{month:%Y-%m-%d} 00:00:00+00'"


def usage_partition_sql(month: date) -> str:
    """The statement that creates `month`'s partition unless it exists (for a loader writing
    with SQL, `bench/history.py`; it fails if the DEFAULT partition holds rows of the month:
    `usage_partitions_ensure` moves them)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {partition_name(month)} PARTITION OF {PARENT} "
        f"FOR VALUES FROM ({_bound(month)}) TO ({_bound(month_after(month))})"
    )


@dataclass(frozen=True)
class UsagePartition:
    name: str
    start: datetime | None  # UTC, inclusive; None for the DEFAULT partition
    end: datetime | None  # UTC, exclusive
    rows: int | None  # PostgreSQL's estimate (pg_class.reltuples); None before any ANALYZE


_RANGE = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


def usage_partitions_list() -> list[UsagePartition]:
    """The partitions attached to the usage table, the months in order, the DEFAULT last. Not
    PostgreSQL: []."""
    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), c.reltuples "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            [PARENT],
        )
        rows = cursor.fetchall()
    partitions = []
    for name, bound, tuples in rows:
        found = _RANGE.search(bound)
        start, end = (
            (datetime.fromisoformat(found[1]), datetime.fromisoformat(found[2]))
            if found
            else (None, None)
        )
        partitions.append(UsagePartition(name, start, end, int(tuples) if tuples >= 0 else None))
    return sorted(partitions, key=lambda p: (p.start is None, p.name))  # pYYYYMM: in time order


def _exists(cursor, name: str) -> bool:
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
    return cursor.fetchone()[0]


def usage_partitions_ensure(
    *, months_ahead: int = 2, since: datetime | None = None, now: datetime | None = None
) -> list[str]:
    """Create the missing monthly partitions of the usage table: every UTC month from `since`'s
    (default: `now`'s, default the current time) to `months_ahead` months after `now`'s.
    Idempotent: a month whose table exists (attached, or detached to archive) is left alone.
    Events of a new month that had already landed in the DEFAULT partition move into it. Each
    month is one transaction, which waits at most LOCK_TIMEOUT for the table's lock (raises
    django.db.OperationalError then; the months before it stay created). Returns the names
    created, in order. Not PostgreSQL: [] (nothing is partitioned)."""
    if connection.vendor != "postgresql":
        return []
    now = now or timezone.now()
    month, last = month_of(since or now), month_after(month_of(now), months_ahead)
    created = []
    while month <= last:
        if _create(month):
            created.append(partition_name(month))
        month = month_after(month)
    return created


def _create(month: date) -> bool:
    name, start, end = partition_name(month), _bound(month), _bound(month_after(month))
    with transaction.atomic(), connection.cursor() as cursor:
        if _exists(cursor, name):
            return False
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        # No insert while the DEFAULT partition is looked at and the month made.
        cursor.execute(f"LOCK TABLE {PARENT} IN SHARE ROW EXCLUSIVE MODE")
        if _exists(cursor, name):  # made meanwhile
            return False
        in_default = f"FROM {DEFAULT} WHERE recorded_at >= {start} AND recorded_at < {end}"
        cursor.execute(f"SELECT EXISTS (SELECT 1 {in_default})")  # noqa: S608 (our names)
        if not cursor.fetchone()[0]:
            cursor.execute(usage_partition_sql(month))
            return True
        # A partition may not be made over rows of its range in the DEFAULT one: the month is
        # made beside the table, its rows moved in, and then attached.
        cursor.execute(
            f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )
        cursor.execute(
            f"WITH moved AS (DELETE {in_default} RETURNING *) "  # noqa: S608 (our names)
            f"INSERT INTO {name} SELECT * FROM moved"
        )
        cursor.execute(
            f"ALTER TABLE {PARENT} ATTACH PARTITION {name} FOR VALUES FROM ({start}) TO ({end})"
        )
        return True


def usage_partition_detach(*, month: date, now: datetime | None = None) -> UsagePartition:
    """Detach the partition of the UTC month starting on `month` (a date, the 1st) from the
    usage table, and delete its events' keys (`UsageEventKey`), in one transaction (which waits
    at most LOCK_TIMEOUT for the table's lock: django.db.OperationalError). Its events leave
    every query of the portal; reports keep them (the rollups). The table stays in the database
    under its name, for the operator to dump and drop (docs/ledger.md). Returns the partition
    as it was.

    Raises Conflict for the current UTC month or a later one (of `now`, default the current
    time), or a month whose end is past the rollup's mark (`UsageRollupMark.rolled_to`: not all
    of it in the rollups yet); NotFound for a month without a partition, or on another database
    than PostgreSQL."""
    if connection.vendor != "postgresql":
        raise NotFound("The usage table is partitioned on PostgreSQL only.")
    now = now or timezone.now()
    month, label = date(month.year, month.month, 1), f"{month:%Y-%m}"
    if month >= month_of(now):
        raise Conflict(f"{label} is not over yet: only a past month may be detached.")
    end = datetime.combine(month_after(month), time.min, tzinfo=UTC)
    mark = UsageRollupMark.objects.order_by("pk").values_list("rolled_to", flat=True).first()
    if mark is None or mark < end:
        raise Conflict(f"{label} is not rolled up to its end yet (the rollups are at {mark}).")
    name = partition_name(month)
    partition = next((p for p in usage_partitions_list() if p.name == name), None)
    if partition is None:
        raise NotFound(f"{label} has no partition ({name} is not attached).")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        cursor.execute(f"ALTER TABLE {PARENT} DETACH PARTITION {name}")
        cursor.execute(
            f"DELETE FROM {UsageEventKey._meta.db_table} k USING {name} u "  # noqa: S608
            "WHERE k.usage_id = u.id"
        )
    return partition
