"""The usage table partitioned by month of `recorded_at` (PostgreSQL, migration 0013): events
land in their month's partition (or the DEFAULT one), the months ahead are created
idempotently, a past rolled-up month is detached and kept, and event ids stay unique per
organization across accounts (the key table)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from accounts.services import team_create
from credits.models import UsageEvent, UsageEventKey, UsageRollupMark
from credits.services import Attribution, UsageInput, credits_allocate, usage_record
from credits.services.usage_partitions import (
    DEFAULT,
    PARENT,
    month_after,
    month_of,
    partition_name,
    usage_partition_detach,
    usage_partitions_ensure,
    usage_partitions_list,
)
from credits.verify import ledger_verify
from portal.errors import Conflict, IdempotencyConflict, NotFound

from ..conftest import SYSTEM
from .test_concurrency import in_threads

D = Decimal
MARCH = datetime(2025, 3, 10, 12, tzinfo=UTC)  # a month the migration made no partition for
JULY = datetime(2024, 7, 1, tzinfo=UTC)  # the migration's test's


def event(id: str, cost: str = "0.25") -> UsageInput:
    return UsageInput(id=id, model="m", cost=D(cost))


def partition_of(usage: UsageEvent) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT tableoid::regclass::text FROM {PARENT} WHERE id = %s", [usage.pk])  # noqa: S608
        return cursor.fetchone()[0]


def exists(table: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
        return cursor.fetchone()[0]


def test_the_usage_table_is_partitioned_by_range_of_recorded_at(db):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.partstrat, a.attname FROM pg_partitioned_table p "
            "JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] "
            "WHERE p.partrelid = %s::regclass",
            [PARENT],
        )
        assert cursor.fetchall() == [("r", "recorded_at")]
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            [PARENT],
        )
        children = {name for (name,) in cursor.fetchall()}
    this = month_of(datetime.now(UTC))
    assert {DEFAULT, *(partition_name(month_after(this, n)) for n in range(3))} <= children
    listed = usage_partitions_list()
    assert [p.name for p in listed][-1] == DEFAULT
    assert {p.name for p in listed} == children


def test_an_event_lands_in_its_months_partition_and_a_stray_month_in_the_default(tenant):
    tenant.grant("10")
    who = Attribution(organization=tenant.org)
    now = usage_record(attribution=who, event=event("now")).event
    assert partition_of(now) == partition_name(month_of(now.recorded_at))
    with time_machine.travel(MARCH, tick=False):
        stray = usage_record(attribution=who, event=event("march")).event
    assert partition_of(stray) == DEFAULT

    # Its month made afterwards: the event moves into it, still found, still a retry.
    assert usage_partitions_ensure(now=MARCH, months_ahead=0) == ["credits_usageevent_p202503"]
    assert partition_of(stray) == "credits_usageevent_p202503"
    with time_machine.travel(MARCH, tick=False):
        again = usage_record(attribution=who, event=event("march"))
    assert (again.created, again.event.pk) == (False, stray.pk)
    assert UsageEvent.objects.filter(organization=tenant.org).count() == 2


def test_ensure_creates_the_months_ahead_once(db):
    this = month_of(datetime.now(UTC))
    ahead = [partition_name(month_after(this, n)) for n in (3, 4)]
    assert not any(exists(name) for name in ahead)
    assert usage_partitions_ensure(months_ahead=4) == ahead
    assert usage_partitions_ensure(months_ahead=4) == []
    assert all(exists(name) for name in ahead)


def test_detach_refuses_the_current_month_and_one_not_rolled_up(tenant):
    this = month_of(datetime.now(UTC))
    with pytest.raises(Conflict, match="not over"):
        usage_partition_detach(month=this)
    with pytest.raises(Conflict, match="not over"):
        usage_partition_detach(month=month_after(this))
    usage_partitions_ensure(now=MARCH, months_ahead=0)
    UsageRollupMark.objects.create(rolled_to=datetime(2025, 3, 31, 23, 59, tzinfo=UTC))
    with pytest.raises(Conflict, match="not rolled up"):
        usage_partition_detach(month=date(2025, 3, 1))
    with pytest.raises(NotFound):
        usage_partition_detach(month=date(2025, 2, 1))
    assert exists("credits_usageevent_p202503")


def test_detach_takes_a_past_rolled_up_month_out_and_keeps_its_table(tenant):
    tenant.grant("10")
    who = Attribution(organization=tenant.org)
    usage_partitions_ensure(now=MARCH, months_ahead=0)
    with time_machine.travel(MARCH, tick=False):
        old = usage_record(attribution=who, event=event("old")).event
    kept = usage_record(attribution=who, event=event("kept")).event
    UsageRollupMark.objects.create(rolled_to=datetime(2025, 4, 1, tzinfo=UTC))

    detached = usage_partition_detach(month=date(2025, 3, 1))

    assert (detached.name, detached.start) == (
        "credits_usageevent_p202503", datetime(2025, 3, 1, tzinfo=UTC),
    )  # fmt: skip
    assert list(UsageEvent.objects.filter(organization=tenant.org)) == [kept]
    assert not UsageEventKey.objects.filter(usage_id=old.pk).exists()
    assert UsageEventKey.objects.filter(usage_id=kept.pk).exists()
    assert exists("credits_usageevent_p202503")
    assert "credits_usageevent_p202503" not in {p.name for p in usage_partitions_list()}
    with connection.cursor() as cursor:  # the archive holds the event as it was
        cursor.execute("SELECT event_id, cost FROM credits_usageevent_p202503")
        assert cursor.fetchall() == [("old", D("0.25"))]
    assert ledger_verify() == []  # the ledger keeps its transaction


def test_the_command_lists_ensures_and_detaches(tenant):
    out = StringIO()
    call_command("usage_partitions", "--ensure", "--months-ahead", "3", stdout=out)
    this = month_of(datetime.now(UTC))
    text = out.getvalue()
    assert f"Created: {partition_name(month_after(this, 3))}." in text
    assert f"{partition_name(this)}       {this:%Y-%m-%d}" in text
    assert DEFAULT in text and "DEFAULT" in text

    usage_partitions_ensure(now=MARCH, months_ahead=0)
    UsageRollupMark.objects.create(rolled_to=datetime(2025, 5, 1, tzinfo=UTC))
    out = StringIO()
    call_command("usage_partitions", "--detach", "2025-03", stdout=out)
    text = out.getvalue()
    assert "Detached credits_usageevent_p202503" in text
    assert "pg_dump --table=credits_usageevent_p202503" in text
    assert "DROP TABLE credits_usageevent_p202503" in text

    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="not over yet"):
        call_command("usage_partitions", "--detach", f"{this:%Y-%m}", stdout=StringIO())


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("many_connections")
@pytest.mark.parametrize("cost", ["0.25", "0"])  # "0": no ledger transaction, only the key
def test_one_event_id_through_two_teams_accounts_at_once_is_recorded_once(tenant, cost):
    tenant.grant("10")
    other = team_create(organization=tenant.org, slug="design", name="Design", actor=SYSTEM)
    for team in (tenant.team, other):
        credits_allocate(team=team, amount="4", actor=SYSTEM)
    payers = [Attribution(organization=tenant.org, team=team) for team in (tenant.team, other)]

    def work(thread: int) -> list:
        result = usage_record(attribution=payers[thread % 2], event=event("shared", cost))
        return [(result.created, result.event.pk)]

    outcomes = in_threads(20, work)
    assert Counter(created for created, _ in outcomes) == {True: 1, False: 19}, outcomes
    assert len({pk for _, pk in outcomes}) == 1
    assert UsageEvent.objects.filter(organization=tenant.org).count() == 1
    assert UsageEventKey.objects.filter(organization=tenant.org, event_id="shared").count() == 1
    assert ledger_verify() == []


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_the_migration_moves_the_rows_into_months_keeps_ids_and_goes_back(tenant):
    before, after = [("credits", "0012_usage_rollups")], [("credits", "0013_usage_partitions")]
    apps = migrate(before)
    try:
        UsageEvent = apps.get_model("credits", "UsageEvent")

        def old(event_id: str, at: datetime) -> int:
            return UsageEvent.objects.create(
                organization_id=tenant.org.pk, event_id=event_id, request_hash="h", model="m",
                cost=D("0.1"), cost_source="reported", occurred_at=at, recorded_at=at,
            ).pk  # fmt: skip

        ids = {old("july", JULY), old("now", datetime.now(UTC))}
        migrate(after)
        rows = {row.pk: row for row in UsageEvent.objects.filter(pk__in=ids)}
        assert {partition_of(row) for row in rows.values()} == {
            "credits_usageevent_p202407", partition_name(month_of(datetime.now(UTC))),
        }  # fmt: skip
        assert set(UsageEventKey.objects.values_list("usage_id", "event_id")) == {
            (pk, row.event_id) for pk, row in rows.items()
        }
        who = Attribution(organization=tenant.org)
        tenant.grant("1")
        assert usage_record(attribution=who, event=event("later")).event.pk > max(ids)
        with pytest.raises(IdempotencyConflict):  # its key found (another body: request_hash)
            usage_record(attribution=who, event=event("july"))

        migrate(before)  # and back: one table, the event ids unique in it again
        with connection.cursor() as cursor:
            cursor.execute("SELECT relkind FROM pg_class WHERE relname = %s", [PARENT])
            assert cursor.fetchone() == ("r",)
        assert UsageEvent.objects.filter(organization_id=tenant.org.pk).count() == 3
        with pytest.raises(IntegrityError), transaction.atomic():
            old("july", JULY)
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
        with connection.cursor() as cursor:  # made again for the row left: not for other tests
            cursor.execute("DROP TABLE IF EXISTS credits_usageevent_p202407")
