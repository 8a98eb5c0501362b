"""Rolling usage events into `UsageRollup` and, per UTC day, `UsageRollupDay` (the beat task
`credits.tasks.usage_rollup`).

The rollup is kept by insert order, bucketed by when the usage occurred:

- `UsageRollupMark.rolled_to` (one row) is the mark: every usage event with `recorded_at` before
  it is in the rollup, plus (negated) every usage event whose transaction was reversed by a
  reversal created before it; nothing at or after it. An event recorded today that occurred last
  month (a late event, a replayed trace) lands in last month's bucket when its recorded time is
  rolled.
- A roll moves the mark forward to `now - USAGE_ROLLUP_LAG` (never past the start of the oldest
  transaction still open in the database, so a row written by a long transaction that commits
  late cannot fall behind the mark), in steps of at most `USAGE_ROLLUP_STEP` of recorded time,
  each step one transaction: one INSERT ... SELECT ... GROUP BY ... ON CONFLICT DO UPDATE for the
  new events and the new reversals together per table (15-minute buckets, UTC days), then the
  mark. Rolls are serialized by a lock on the mark's row.
- Reads add the tail (events recorded at or after the mark, less reversals created at or after
  it) from the raw events: `credits.rollups`. Rollup plus tail equals the raw aggregate exactly.

PostgreSQL only: on another database (the SQLite demo) nothing is rolled and every read is the
tail, that is the raw events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from ..models import (
    LedgerEntry,
    LedgerTransaction,
    UsageEvent,
    UsageRollup,
    UsageRollupDay,
    UsageRollupMark,
)

# The origin of the 15-minute buckets (any whole hour in UTC would do).
BUCKET_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)

_COLUMNS = (
    "organization_id, bucket, team_id, member_id, api_key_id, model, operation, account_id, "
    "events, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, cost"
)
# A row that nets to nothing (its events were reversed): deleted.
_EMPTY = dict.fromkeys(
    (
        "events",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "reasoning_tokens",
        "cost",
    ),
    0,
)
_KEY = "organization_id, bucket, team_id, member_id, api_key_id, model, operation, account_id"


def _roll_sql(table: type[UsageRollup] | type[UsageRollupDay], width: str) -> str:
    """The roll step's statement into `table`, whose buckets are `width` (an interval) long."""
    usage = UsageEvent._meta.db_table
    txn = LedgerTransaction._meta.db_table
    rollup = table._meta.db_table
    entry = LedgerEntry._meta.db_table
    # The account a usage event's cost was debited from: its transaction's (negative) entries
    # on the paying account.
    account = (
        f"(SELECT e.account_id FROM {entry} e WHERE e.transaction_id = u.transaction_id "  # noqa: S608
        "AND e.amount < 0 ORDER BY e.id LIMIT 1)"
    )
    row = (
        f"u.organization_id, date_bin('{width}', u.occurred_at, %(origin)s), u.team_id, "
        f"u.member_id, u.api_key_id, u.model, u.operation, {account}"
    )
    return f"""
        INSERT INTO {rollup} AS r ({_COLUMNS})
        SELECT {_KEY}, sum(events), sum(prompt_tokens), sum(completion_tokens),
               sum(cached_tokens), sum(reasoning_tokens), sum(cost)
        FROM (
            SELECT {row}, 1, u.prompt_tokens, u.completion_tokens,
                   u.cached_tokens, u.reasoning_tokens, u.cost
            FROM {usage} u
            WHERE u.recorded_at >= %(start)s AND u.recorded_at < %(end)s
            UNION ALL
            SELECT {row}, -1, -u.prompt_tokens, -u.completion_tokens,
                   -u.cached_tokens, -u.reasoning_tokens, -u.cost
            FROM {txn} rev JOIN {usage} u ON u.transaction_id = rev.reverses_id
            WHERE rev.kind = 'reversal' AND rev.created_at >= %(start)s
              AND rev.created_at < %(end)s
        ) AS d (organization_id, bucket, team_id, member_id, api_key_id, model, operation,
                account_id, events, prompt_tokens, completion_tokens, cached_tokens,
                reasoning_tokens, cost)
        GROUP BY {_KEY}
        ON CONFLICT ({_KEY}) DO UPDATE SET
            events = r.events + EXCLUDED.events,
            prompt_tokens = r.prompt_tokens + EXCLUDED.prompt_tokens,
            completion_tokens = r.completion_tokens + EXCLUDED.completion_tokens,
            cached_tokens = r.cached_tokens + EXCLUDED.cached_tokens,
            reasoning_tokens = r.reasoning_tokens + EXCLUDED.reasoning_tokens,
            cost = r.cost + EXCLUDED.cost
        RETURNING r.id, r.events
    """  # noqa: S608  (names from the models, values as parameters)


@dataclass(frozen=True)
class RollResult:
    start: datetime | None  # the mark before (None: nothing was rolled yet)
    end: datetime | None  # the mark after
    steps: int  # transactions committed
    rows: int  # 15-minute rollup rows inserted or updated


def _oldest_open_transaction() -> datetime | None:
    """When the oldest transaction still open on the database (other than this session's)
    started; None when there is none (or this role may not see them)."""
    with connection.cursor() as cursor:
        # The activity view is a snapshot taken once per transaction: a fresh one.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT min(xact_start) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND xact_start IS NOT NULL "
            "AND datname = current_database() AND backend_type = 'client backend'"
        )
        return cursor.fetchone()[0]


def _history_start() -> datetime | None:
    """The earliest recorded time of anything to roll (an event or a reversal)."""
    first = [
        UsageEvent.objects.order_by("recorded_at").values_list("recorded_at", flat=True).first(),
        LedgerTransaction.objects.filter(kind=LedgerTransaction.Kind.REVERSAL)
        .order_by("created_at")
        .values_list("created_at", flat=True)
        .first(),
    ]
    first = [t for t in first if t is not None]
    return min(first) if first else None


def usage_rollup_advance(
    *,
    now: datetime | None = None,
    lag: timedelta | None = None,
    step: timedelta | None = None,
) -> RollResult:
    """Roll the usage recorded since the mark into `UsageRollup` and `UsageRollupDay`, up to
    `now - lag` (default `USAGE_ROLLUP_LAG`) and not past the start of the oldest open
    transaction, in steps of at most `step` (default `USAGE_ROLLUP_STEP`) of recorded time, one
    transaction each. Returns the marks before and after, the steps and the 15-minute rows
    written. On a database other than PostgreSQL it rolls nothing."""
    if connection.vendor != "postgresql":
        return RollResult(None, None, 0, 0)
    now = now or timezone.now()
    lag = settings.USAGE_ROLLUP_LAG if lag is None else lag
    step = step or settings.USAGE_ROLLUP_STEP
    target = now - lag
    oldest = _oldest_open_transaction()
    if oldest is not None:
        target = min(target, oldest - lag)
    mark = UsageRollupMark.objects.order_by("pk").first()
    before = mark.rolled_to if mark else None
    steps = rows = 0
    # Both levels from the same events in the same transaction: a day row is always the sum of
    # its day's 15-minute rows.
    statements = [(_roll_sql(UsageRollup, "15 minutes"), UsageRollup),
                  (_roll_sql(UsageRollupDay, "1 day"), UsageRollupDay)]  # fmt: skip
    while True:
        with transaction.atomic():
            mark = UsageRollupMark.objects.select_for_update().order_by("pk").first()
            if mark is None:
                first = _history_start()
                start = min(first, target) if first is not None else target
                mark = UsageRollupMark.objects.create(rolled_to=start)
            start = mark.rolled_to
            if start >= target:
                break
            end = min(target, start + step)
            for sql, table in statements:
                with connection.cursor() as cursor:
                    cursor.execute(sql, {"origin": BUCKET_ORIGIN, "start": start, "end": end})
                    written = cursor.fetchall()
                emptied = [pk for pk, events in written if events == 0]
                if emptied:  # every event of the row was reversed
                    table.objects.filter(pk__in=emptied, **_EMPTY).delete()
                if table is UsageRollup:
                    rows += len(written)
            mark.rolled_to = end
            mark.updated_at = timezone.now()
            mark.save(update_fields=["rolled_to", "updated_at"])
            steps += 1
    return RollResult(before, mark.rolled_to if mark else before, steps, rows)
