"""Group commit of single usage events (`credits.services.group_commit`): concurrent
`usage_record` calls of one attribution share one transaction, each answered with the outcome
it would have had alone, in arrival order."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from django.db import connection

from credits.models import LedgerAccount, UsageEvent
from credits.services import Attribution, UsageInput, usage_record
from credits.services.group_commit import _lane
from credits.verify import ledger_verify
from portal.errors import ApplicationError, InsufficientCredits

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("many_connections"),
]


def ev(id: str, cost: str) -> UsageInput:
    return UsageInput(id=id, model="gpt-4o", cost=Decimal(cost))


def record_in_threads(who: Attribution, events: list[UsageInput]) -> dict:
    """Each event in a thread of its own, while the attribution's turn is held: they gather in
    one group, which its leader records once the turn is given back."""
    lane = _lane(who)
    outcomes: dict = {}

    def run(event):
        try:
            outcomes[event.id] = usage_record(attribution=who, event=event)
        except ApplicationError as exc:
            outcomes[event.id] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(e,)) for e in events]
    with lane.turn:  # as if a transaction of this attribution were in flight
        for thread in threads:
            thread.start()
            while not (lane.open and lane.open.events and lane.open.events[-1] is event_of(thread)):
                time.sleep(0.001)  # in this order: each joins before the next starts
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


def event_of(thread: threading.Thread) -> UsageInput:
    return thread._args[0]


def test_concurrent_events_share_one_transaction_and_keep_their_own_outcomes(tenant):
    tenant.grant("1")
    key, _ = tenant.key("usage")
    who = Attribution.of_key(key)
    events = [ev("a", "0.4"), ev("b", "0.4"), ev("c", "0.4"), ev("a", "0.4"), ev("d", "0.2")]
    outcomes = record_in_threads(who, events)
    # As one by one: a, b fit; c does not (0.2 left); a again is a retry; d takes the rest.
    assert outcomes["b"].created and outcomes["d"].created
    assert isinstance(outcomes["c"], InsufficientCredits)
    assert outcomes["a"].event.event_id == "a"
    assert outcomes["d"].balance_after == 0
    rows = UsageEvent.objects.filter(organization=tenant.org)
    assert sorted(rows.values_list("event_id", flat=True)) == ["a", "b", "d"]
    assert len({row.recorded_at for row in rows}) == 1  # one transaction: one `now`
    pool = LedgerAccount.objects.get(organization=tenant.org, kind="pool")
    assert (pool.balance, pool.held) == (0, 0)
    assert ledger_verify() == []


def test_alone_a_call_is_not_held_up_and_a_callers_transaction_is_not_left(tenant):
    tenant.grant("1")
    key, _ = tenant.key("usage")
    who = Attribution.of_key(key)
    started = time.monotonic()
    assert usage_record(attribution=who, event=ev("alone", "0.1")).created
    assert time.monotonic() - started < 5
    from django.db import transaction

    with pytest.raises(RuntimeError), transaction.atomic():  # inside a caller's transaction
        usage_record(attribution=who, event=ev("inside", "0.1"))
        raise RuntimeError("the caller rolls back")
    assert not UsageEvent.objects.filter(event_id="inside").exists()


@pytest.fixture
def pooled():
    """Threads' connections from a psycopg pool of 2, as in production (the tests run without
    one: pyproject's DATABASE_POOL_MAX_SIZE=0); the pool is closed after."""
    settings = connection.settings_dict
    saved = (dict(settings["OPTIONS"]), settings["CONN_MAX_AGE"])
    settings["OPTIONS"]["pool"] = {"min_size": 1, "max_size": 2, "timeout": 4.0}
    settings["CONN_MAX_AGE"] = 0
    try:
        yield
    finally:
        if connection.pool is not None:
            connection.close_pool()
        settings["OPTIONS"] = saved[0]
        settings["CONN_MAX_AGE"] = saved[1]


def test_a_follower_holding_the_pools_last_connection_gives_it_to_its_leader(tenant, pooled):
    """A request may hold a pooled connection when it joins a group (its key lookup queried):
    waiting for its leader, it gives the connection back, or a leader needing the pool's last
    one would wait for the pool's timeout (under load: the process stalled for seconds, then
    the group failed with 503)."""
    tenant.grant("1")
    key, _ = tenant.key("usage")
    who = Attribution.of_key(key)
    pool = connection.pool
    pool.open()  # as Django does on its first connection
    held = pool.getconn()  # of the pool's 2, one is left
    lane = _lane(who)
    outcomes: dict = {}

    def run(event, query_first):
        try:
            if query_first:
                with connection.cursor() as cursor:  # takes the pool's last connection
                    cursor.execute("SELECT 1")
            outcomes[event.id] = usage_record(attribution=who, event=event)
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test reads
            outcomes[event.id] = exc
        finally:
            connection.close()

    leader = threading.Thread(target=run, args=(ev("lead", "0.1"), False))
    follower = threading.Thread(target=run, args=(ev("follow", "0.1"), True))
    try:
        with lane.turn:  # as if a transaction of this attribution were in flight
            leader.start()
            while not (lane.open and len(lane.open.events) == 1):
                time.sleep(0.001)
            follower.start()
            while len(lane.open.events) < 2:
                time.sleep(0.001)
        started = time.monotonic()
        leader.join(timeout=30)
        follower.join(timeout=30)
    finally:
        pool.putconn(held)
    assert outcomes["lead"].created and outcomes["follow"].created, outcomes
    assert time.monotonic() - started < pool.timeout
