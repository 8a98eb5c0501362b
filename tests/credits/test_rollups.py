"""Usage rollups (`credits.services.rollups`, read through `credits.rollups.usage_sums`): the
rollup plus the tail past the mark equals the raw aggregate exactly, whatever the mark, the
window, the grouping, the time zone (Asia/Kolkata's and Asia/Kathmandu's :30 and :45 offsets
included) and the principal; late events and reversals on either side of the mark included."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import psycopg
import pytest
from django.db import connection
from django.db.models import Count, Q, Sum, Value
from django.db.models.functions import (
    Coalesce,
    ExtractHour,
    TruncDate,
    TruncDay,
    TruncMonth,
    TruncWeek,
)
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.access import Principal
from accounts.models import ApiKey, Membership, TeamMembership
from accounts.roles import Role
from accounts.services import apikey_create, team_create
from credits import rollups
from credits.activity import activity_for
from credits.forecast import forecast_for
from credits.models import (
    LedgerTransaction,
    UsageEvent,
    UsageRollup,
    UsageRollupDay,
    UsageRollupMark,
)
from credits.reports import spend_by_day, spend_by_hour, spend_in_windows
from credits.selectors import COUNTED, balance_for, usage_report
from credits.services import ledger_reverse, usage_record_many
from credits.services.rollups import usage_rollup_advance
from credits.services.usage import Attribution, UsageInput

from ..conftest import SYSTEM, Tenant
from ..test_celery_worker import worker  # noqa: F401 - the fixture

ZERO = Decimal(0)
ZONES = ("UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/New_York")
MODELS = ("openai/gpt-4o", "openai/gpt-4o-mini", "anthropic/claude-sonnet-4")
OPERATIONS = ("chat", "embedding")
TIME_EXPRESSIONS = {
    "day": lambda tz: TruncDay("occurred_at", tzinfo=tz),
    "date": lambda tz: TruncDate("occurred_at", tzinfo=tz),
    "week": lambda tz: TruncWeek("occurred_at", tzinfo=tz),
    "month": lambda tz: TruncMonth("occurred_at", tzinfo=tz),
    "hour": lambda tz: ExtractHour("occurred_at", tzinfo=tz),
}
GROUPINGS = (
    ((), None),
    (("team",), "day"),
    (("model", "operation"), "hour"),
    (("member__email", "member"), None),
    (("api_key__name", "api_key"), "week"),
    (("team__slug", "model"), "month"),
    (("model",), "date"),
)


def raw_sums(principal, *, start, end, fields, time, tz, where=None) -> set:
    """The old way: one GROUP BY over the counted raw events."""
    qs = UsageEvent.objects.filter(organization=principal.organization)
    qs = qs.filter(principal.row_filter(), COUNTED, where or Q())
    if start is not None:
        qs = qs.filter(occurred_at__gte=start)
    if end is not None:
        qs = qs.filter(occurred_at__lt=end)
    names = list(fields)
    if time:
        qs = qs.annotate(t=TIME_EXPRESSIONS[time](tz))
        names.append("t")
    grouped = qs.values(*names) if names else qs.annotate(all=Value(1)).values("all")
    rows = grouped.annotate(
        n=Count("id"),
        c=Coalesce(Sum("cost"), ZERO),
        p=Coalesce(Sum("prompt_tokens"), 0),
        o=Coalesce(Sum("completion_tokens"), 0),
        h=Coalesce(Sum("cached_tokens"), 0),
        r=Coalesce(Sum("reasoning_tokens"), 0),
    )
    return {
        (*(row[n] for n in names), row["n"], row["c"], row["p"], row["o"], row["h"], row["r"])
        for row in rows.order_by()
        if row["n"]  # no group without usage (an aggregate of no rows is one row of zeros)
    }


def rolled_sums(principal, *, start, end, fields, time, tz, where=None) -> set:
    rows = rollups.usage_sums_visible(
        principal, start=start, end=end, fields=fields, time=time, tz=tz, where=where
    )
    names = [*fields, *([time] if time else [])]
    return {
        (
            *(row[n] for n in names),
            row["events"],
            row["cost"],
            row["prompt_tokens"],
            row["completion_tokens"],
            row["cached_tokens"],
            row["reasoning_tokens"],
        )
        for row in rows
    }


class History:
    """An organization with two teams (one with its own credits, one on the pool), a member
    with a key of their own, a team key and a key of the whole organization; `n` events over
    the last 40 days, recorded up to 12 days after they occurred, some of them reversed."""

    def __init__(self, tenant, seed: int, n: int = 150):
        rng = random.Random(seed)
        self.tenant, self.rng = tenant, rng
        self.now = timezone.now()
        tenant.grant("100000")
        tenant.allocate("50000")
        ops = team_create(
            organization=tenant.org, slug="ops", name="Ops", funding="pool", actor=SYSTEM
        )
        self.member = tenant.member(Role.MEMBER, email="member@acme.test")
        self.viewer = tenant.member(Role.VIEWER, email="viewer@acme.test")
        TeamMembership.objects.create(team=tenant.team, user=self.member)

        def key(name, **kwargs):
            return apikey_create(
                organization=tenant.org, name=name, kind="usage", actor=SYSTEM, **kwargs
            )[0]

        self.keys = [
            key("research", team=tenant.team),
            key("ops", team=ops),
            key("mine", team=tenant.team, user=self.member),
            key("everything"),
        ]
        for i, k in enumerate(self.keys):
            events = [self._event(f"k{i}-{j}") for j in range(n // len(self.keys))]
            usage_record_many(attribution=Attribution.of_key(k), events=events)
        # Recorded some time after they occurred (late events, replayed traces): up to 12 days.
        for event in UsageEvent.objects.filter(organization=tenant.org):
            late = timedelta(minutes=rng.choice([0, 1, 30, 600, 60 * 24 * 12]))
            recorded = min(event.occurred_at + late, self.now - timedelta(minutes=5))
            UsageEvent.objects.filter(pk=event.pk).update(recorded_at=recorded)
        self.usage = list(
            UsageEvent.objects.filter(organization=tenant.org, transaction__isnull=False)
        )

    def _event(self, id: str) -> UsageInput:
        rng = self.rng
        prompt = rng.randrange(0, 5000)
        completion = rng.randrange(0, 2000)
        occurred = self.now - timedelta(seconds=rng.randrange(60, 40 * 86400))
        return UsageInput(
            id=id,
            model=rng.choice(MODELS),
            operation=rng.choice(OPERATIONS),
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=rng.randrange(0, prompt + 1),
            reasoning_tokens=rng.randrange(0, completion + 1),
            cost=Decimal(rng.randrange(0, 10**6)).scaleb(-7),  # some cost nothing: no debit
            occurred_at=occurred,
        )

    def reverse(self, count: int) -> None:
        reversed_ = set(
            LedgerTransaction.objects.filter(reverses__isnull=False).values_list(
                "reverses", flat=True
            )
        )
        candidates = [u for u in self.usage if u.transaction_id not in reversed_]
        for usage in self.rng.sample(candidates, count):
            ledger_reverse(txn=usage.transaction, actor=SYSTEM)

    def principals(self) -> dict[str, Principal]:
        org = self.tenant.org

        def of(user):
            return Principal.for_membership(Membership.objects.get(organization=org, user=user))

        return {
            "owner": of(self.tenant.owner),
            "member": of(self.member),
            "viewer": of(self.viewer),
            "team key": Principal.for_key(self.keys[0]),
            "member key": Principal.for_key(self.keys[2]),
        }

    def windows(self) -> list[tuple[datetime | None, datetime | None]]:
        rng, now = self.rng, self.now
        local = datetime(2026, 1, 1, tzinfo=ZoneInfo("Asia/Kolkata"))
        day = now.astimezone(local.tzinfo).replace(hour=0, minute=0, second=0, microsecond=0)
        windows = [
            (None, None),
            (now - timedelta(days=30), now + timedelta(seconds=1)),  # the dashboard's
            (day - timedelta(days=9), day),  # local days of Kolkata: :30 boundaries in UTC
            (now - timedelta(minutes=7), now),  # inside one bucket
            (now - timedelta(days=50), None),
        ]
        for _ in range(3):
            start = now - timedelta(seconds=rng.randrange(0, 45 * 86400))
            windows.append((start, start + timedelta(seconds=rng.randrange(1, 20 * 86400))))
        return windows


def assert_equivalent(history: History) -> int:
    """Every grouping of every window, in every zone, for every principal: rollup + tail ==
    raw. Returns how many comparisons were made."""
    compared = 0
    for principal in history.principals().values():
        for start, end in history.windows():
            for fields, time in history.rng.sample(GROUPINGS, 2):
                zone = ZoneInfo(history.rng.choice(ZONES))
                kwargs = {"start": start, "end": end, "fields": fields, "time": time, "tz": zone}
                expected = raw_sums(principal, **kwargs)
                assert rolled_sums(principal, **kwargs) == expected, (principal, kwargs)
                compared += 1
    return compared


def reads(history: History, zone: str) -> dict:
    """Everything the pages and the API read, for each principal, at a fixed `now`."""
    now, tz = history.now, ZoneInfo(zone)
    out = {}
    start = now - timedelta(days=30)
    for name, principal in history.principals().items():
        if name == "member key":  # the same reads as the member's, of their key's usage
            continue
        with timezone.override(tz):
            report = usage_report(principal=principal, period="daily", start=start, end=now, top=8)
            weekly = usage_report(
                principal=principal, period="weekly", start=start - timedelta(days=30), end=now
            )
        out[name] = {
            "report": report,
            "weekly": weekly,
            "by day": [
                spend_by_day(principal=principal, start=start, end=now, tz=tz, dimension=d)
                for d in (None, "team", "model", "operation")
            ],
            "by hour": spend_by_hour(principal=principal, start=start, end=now, tz=tz),
            "windows": spend_in_windows(principal=principal, now=now),
            "activity": activity_for(principal, now=now),
            "balance": balance_for(principal, now=now),
            "forecast": forecast_for(principal, now=now),
        }
    return out


@pytest.mark.parametrize("seed", [1])
def test_rollup_and_tail_equal_the_raw_aggregate_at_every_mark(tenant, seed):
    history = History(tenant, seed)
    history.reverse(6)  # reversed before the mark
    assert_equivalent(history)  # nothing rolled: all tail

    mark = timezone.now()
    history.reverse(6)  # reversed after the mark: the tail takes them out of the rollup
    # Some events recorded after the mark (a late event of last month, too).
    tail = history.rng.sample(history.usage, 20)
    UsageEvent.objects.filter(pk__in=[u.pk for u in tail]).update(
        recorded_at=mark + timedelta(seconds=1)
    )
    result = usage_rollup_advance(now=mark, lag=timedelta(0), step=timedelta(days=3))
    assert result.start is None and result.end == mark and result.steps > 1
    assert UsageRollupMark.objects.get().rolled_to == mark
    assert UsageRollup.objects.filter(organization=tenant.org).exists()
    assert UsageEvent.objects.filter(recorded_at__gte=mark).count() == 20
    assert assert_equivalent(history) == 5 * 8 * 2  # principals x windows x groupings
    rolled = reads(history, "Asia/Kolkata")
    assert all(r["report"]["totals"]["events"] for r in rolled.values())
    assert rolled == reads_unrolled(history, "Asia/Kolkata")

    # Everything rolled: the tail is empty, the rows netted to zero are gone.
    usage_rollup_advance(now=timezone.now() + timedelta(seconds=5), lag=timedelta(0))
    assert not UsageRollup.objects.filter(events__lte=0).exists()
    assert not UsageRollupDay.objects.filter(events__lte=0).exists()
    assert_days_sum_their_buckets()
    assert_equivalent(history)
    assert reads(history, "Asia/Kathmandu") == reads_unrolled(history, "Asia/Kathmandu")


def assert_days_sum_their_buckets() -> None:
    """Each UsageRollupDay row is the sum of its UTC day's UsageRollup rows of the same key."""
    from django.db.models import Sum
    from django.db.models.functions import TruncDay

    sums = ("events", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens",
            "cost")  # fmt: skip
    key = ["organization", "team", "member", "api_key", "model", "operation", "account"]
    by_day = {
        tuple(r[k] for k in ["day", *key]): tuple(r[s] for s in sums)
        for r in UsageRollup.objects.annotate(day=TruncDay("bucket", tzinfo=UTC))
        .values("day", *key)
        .annotate(**{s: Sum(s) for s in sums})
    }
    days = {
        tuple(r[k] for k in ["bucket", *key]): tuple(r[s] for s in sums)
        for r in UsageRollupDay.objects.values("bucket", *key, *sums)
    }
    assert days and days == {k: v for k, v in by_day.items() if v[0] != 0}


def reads_unrolled(history: History, zone: str) -> dict:
    """`reads` from the raw events alone: the rollup and its mark set aside for the call (in a
    savepoint rolled back after)."""
    from django.db import transaction

    class Undo(Exception):
        pass

    result = {}
    try:
        with transaction.atomic():
            UsageRollup.objects.all().delete()
            UsageRollupDay.objects.all().delete()
            UsageRollupMark.objects.all().delete()
            result.update(reads(history, zone))
            raise Undo
    except Undo:
        pass
    return result


def test_a_report_is_the_sum_of_its_parts_on_either_side_of_the_mark(tenant):
    """Figures a person checks: an event recorded late (after the mark) for last week counts in
    last week's day; a reversal after the mark leaves the rolled-up figure."""
    tenant.grant("100")
    key, _ = apikey_create(organization=tenant.org, name="k", kind="usage", actor=SYSTEM)
    now = timezone.now()
    week_ago = now - timedelta(days=7)

    def record(id, cost, occurred_at):
        usage_record_many(
            attribution=Attribution.of_key(key),
            events=[
                UsageInput(
                    id=id, model="openai/gpt-4o", cost=Decimal(cost), occurred_at=occurred_at
                )
            ],
        )
        return UsageEvent.objects.get(event_id=id)

    early = record("a", "1.5", week_ago)
    record("b", "2", week_ago + timedelta(minutes=1))
    usage_rollup_advance(now=timezone.now(), lag=timedelta(0))
    late = record("c", "4", week_ago + timedelta(minutes=2))  # recorded after the mark
    ledger_reverse(txn=early.transaction, actor=SYSTEM)  # reversed after the mark
    principal = Principal.for_key(key)
    day = week_ago.astimezone(UTC).date()
    rows = spend_by_day(
        principal=principal, start=now - timedelta(days=8), end=now, tz=UTC, dimension=None
    )
    assert [(r["day"], r["events"], r["cost"]) for r in rows] == [(day, 2, Decimal("6"))]
    assert late.recorded_at >= UsageRollupMark.objects.get().rolled_to


def three_events_a_day_ago(t: Tenant) -> tuple[ApiKey, datetime]:
    """A grant of 100 and a new key of `t`, which records events a, b and c of 1 credit each,
    inside a 15-minute bucket of a day ago (not on its edge). Returns the key and the time."""
    t.grant("100")
    key, _ = apikey_create(organization=t.org, name="k", kind="usage", actor=SYSTEM)
    at = rollups._floor(timezone.now() - timedelta(days=1)) + timedelta(minutes=7)
    usage_record_many(
        attribution=Attribution.of_key(key),
        events=[
            UsageInput(id=i, model="openai/gpt-4o", cost=Decimal("1"), occurred_at=at)
            for i in "abc"
        ],
    )
    return key, at


def test_counted_leaves_out_exactly_the_reversed_events(tenant):
    """COUNTED, the raw events' filter of every read (a NOT EXISTS of a reversal): an event
    counts until its usage transaction is reversed, and only that event stops counting."""
    key, at = three_events_a_day_ago(tenant)

    def counted() -> set[str]:
        rows = UsageEvent.objects.filter(COUNTED, organization=tenant.org)
        return set(rows.values_list("event_id", flat=True))

    assert counted() == {"a", "b", "c"}
    ledger_reverse(txn=UsageEvent.objects.get(event_id="b").transaction, actor=SYSTEM)
    assert counted() == {"a", "c"}
    spent = usage_report(
        principal=Principal.for_key(key),
        period="daily",
        start=at - timedelta(minutes=1),  # not on a bucket: the events are read raw, COUNTED
        end=timezone.now(),
    )["totals"]
    assert (spent["events"], Decimal(spent["cost"])) == (2, Decimal("2"))


def test_reversals_since_the_mark_are_read_only_when_the_organization_made_one(
    tenant, other_tenant
):
    """The statement leaves out the reversed events (part 3) when the mark's read found no
    reversal of the organization made since the mark, and reads them again once it made one:
    a reversal after the mark is taken out of the rollup either way; another organization's
    reversal changes nothing here."""

    principal = Principal.for_key(three_events_a_day_ago(tenant)[0])
    elsewhere = Principal.for_key(three_events_a_day_ago(other_tenant)[0])
    usage_rollup_advance(now=timezone.now(), lag=timedelta(0))

    def read(who: Principal) -> tuple[set, str]:
        kwargs = {"start": None, "end": None, "fields": ["model"], "time": None, "tz": UTC}
        with CaptureQueriesContext(connection) as queries:
            rows = rolled_sums(who, **kwargs)
        assert rows == raw_sums(who, **kwargs)
        return rows, queries.captured_queries[-1]["sql"]

    (rows, sql) = read(principal)
    assert {r[1:3] for r in rows} == {(3, Decimal("3"))}
    assert "reverses_id" not in sql  # part 3 left out

    ledger_reverse(
        txn=UsageEvent.objects.get(organization=other_tenant.org, event_id="a").transaction,
        actor=SYSTEM,
    )
    assert "reverses_id" not in read(principal)[1]  # not this organization's reversal
    assert {r[1:3] for r in read(elsewhere)[0]} == {(2, Decimal("2"))}

    ledger_reverse(
        txn=UsageEvent.objects.get(organization=tenant.org, event_id="b").transaction,
        actor=SYSTEM,
    )
    (rows, sql) = read(principal)
    assert "reverses_id" in sql
    assert {r[1:3] for r in rows} == {(2, Decimal("2"))}  # out of the rollup, by the tail

    usage_rollup_advance(now=timezone.now(), lag=timedelta(0))
    (rows, sql) = read(principal)  # rolled: the rollup took it out
    assert "reverses_id" not in sql
    assert {r[1:3] for r in rows} == {(2, Decimal("2"))}


def test_hours_of_day_in_a_half_hour_zone(tenant):
    """Asia/Kolkata is UTC+5:30: 18:40 UTC is 00:10 there, 18:20 UTC is 23:50 the day before.
    Both are in the same UTC hour, in different 15-minute buckets."""
    tenant.grant("100")
    key, _ = apikey_create(organization=tenant.org, name="k", kind="usage", actor=SYSTEM)
    base = (
        (timezone.now() - timedelta(days=2))
        .astimezone(UTC)
        .replace(minute=0, second=0, microsecond=0)
    )
    base = base.replace(hour=18)
    events = [
        UsageInput(
            id="before", model="m", cost=Decimal("1"), occurred_at=base + timedelta(minutes=20)
        ),
        UsageInput(
            id="after", model="m", cost=Decimal("2"), occurred_at=base + timedelta(minutes=40)
        ),
    ]
    usage_record_many(attribution=Attribution.of_key(key), events=events)
    usage_rollup_advance(now=timezone.now() + timedelta(seconds=1), lag=timedelta(0))
    assert (
        UsageEvent.objects.filter(recorded_at__gte=UsageRollupMark.objects.get().rolled_to).count()
        == 0
    )
    kolkata = ZoneInfo("Asia/Kolkata")
    principal = Principal.for_key(key)
    hours = spend_by_hour(
        principal=principal,
        start=base - timedelta(days=1),
        end=base + timedelta(days=1),
        tz=kolkata,
    )
    assert [(h["hour"], h["cost"]) for h in hours] == [(0, Decimal("2")), (23, Decimal("1"))]
    days = spend_by_day(
        principal=principal,
        start=base - timedelta(days=1),
        end=base + timedelta(days=1),
        tz=kolkata,
        dimension=None,
    )
    local = (base + timedelta(minutes=40)).astimezone(kolkata).date()
    assert [(d["day"], d["cost"]) for d in days] == [
        (local - timedelta(days=1), Decimal("1")),
        (local, Decimal("2")),
    ]


def test_the_mark_stops_before_a_transaction_still_open(db):
    """A row written by a transaction that has not committed yet may carry a recorded time
    before the mark would go: the mark stays before the start of the oldest open transaction."""
    db = connection.settings_dict
    other = psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"], autocommit=False
    )
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT now()")
            started = cursor.fetchone()[0]
        result = usage_rollup_advance(now=timezone.now() + timedelta(hours=1), lag=timedelta(0))
        assert result.end <= started
    finally:
        other.rollback()
        other.close()
    result = usage_rollup_advance(now=timezone.now() + timedelta(hours=1), lag=timedelta(0))
    assert result.end > started


def test_reads_are_a_constant_number_of_statements(tenant, django_assert_max_num_queries):
    """The dashboard and the report read the same number of statements for 10 events as for
    400, rolled or not."""
    tenant.grant("1000")
    key, _ = apikey_create(
        organization=tenant.org, name="k", kind="usage", team=tenant.team, actor=SYSTEM
    )
    tenant.allocate("500")
    now = timezone.now()
    rng = random.Random(5)

    def record(n, prefix):
        events = [
            UsageInput(
                id=f"{prefix}{i}",
                model=rng.choice(MODELS),
                operation=rng.choice(OPERATIONS),
                cost=Decimal("0.01"),
                occurred_at=now - timedelta(minutes=rng.randrange(1, 60 * 24 * 29)),
            )
            for i in range(n)
        ]
        usage_record_many(attribution=Attribution.of_key(key), events=events)

    client = Client()
    client.force_login(tenant.owner)

    def _session(sql: str) -> bool:
        return "django_session" in sql or "SAVEPOINT" in sql

    url = reverse("dashboard", kwargs={"org": tenant.org.slug})
    principal = Principal.for_key(key)

    def count() -> tuple[int, int]:
        with CaptureQueriesContext(connection) as page:
            assert client.get(url).status_code == 200
        # The session's own statements (its expiry is refreshed now and then) are not reads.
        page = [q for q in page.captured_queries if not _session(q["sql"])]
        with CaptureQueriesContext(connection) as report:
            usage_report(
                principal=principal, period="daily", start=now - timedelta(days=30), end=now
            )
        return len(page), len(report)

    record(10, "a")
    few = count()
    record(400, "b")
    assert count() == few
    usage_rollup_advance(now=timezone.now() + timedelta(seconds=1), lag=timedelta(0))
    assert count() == few
    # totals, series, 5 rolled-up breakdowns (each after a read of the mark), the conversation
    # breakdown, the keys it names
    with django_assert_max_num_queries(2 * 7 + 2):
        usage_report(principal=principal, period="daily", start=now - timedelta(days=30), end=now)


@pytest.mark.django_db(transaction=True)
def test_the_beat_task_rolls_on_a_real_worker(tenant, worker):  # noqa: F811
    tenant.grant("10")
    key, _ = apikey_create(organization=tenant.org, name="k", kind="usage", actor=SYSTEM)
    now = timezone.now()
    events = [
        UsageInput(
            id=f"e{i}", model="m", cost=Decimal("0.25"), occurred_at=now - timedelta(hours=i)
        )
        for i in range(8)
    ]
    usage_record_many(attribution=Attribution.of_key(key), events=events)
    # Recorded an hour ago, past the lag; one just now, inside it (left to the tail).
    UsageEvent.objects.exclude(event_id="e0").update(recorded_at=now - timedelta(hours=1))
    rows = worker("credits.tasks.usage_rollup")
    assert rows == 7
    mark = UsageRollupMark.objects.get().rolled_to
    assert now - timedelta(minutes=3) < mark < now
    rolled = UsageRollup.objects.filter(organization=tenant.org)
    assert sum(r.events for r in rolled) == 7 and sum(r.cost for r in rolled) == Decimal("1.75")
    principal = Principal.for_key(key)
    totals = rollups.usage_sums_visible(principal, start=now - timedelta(days=1))
    assert totals[0]["events"] == 8 and totals[0]["cost"] == Decimal("2")
    assert worker("credits.tasks.usage_rollup") == 0  # nothing new past the lag
