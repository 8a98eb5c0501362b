"""Group commit (`credits.services.group_commit`): concurrent `usage_record` calls of one
attribution, `authorization_create` calls of one attribution and `authorization_capture` calls
on one account share one transaction, each answered with the outcome it would have had alone,
in arrival order."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal
from functools import partial

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from credits.models import Hold, LedgerAccount, UsageEvent
from credits.services import (
    Attribution,
    UsageInput,
    authorization_capture,
    authorization_create,
    usage_record,
)
from credits.services.group_commit import _lane, lane_of
from credits.verify import ledger_verify
from portal.errors import ApplicationError, IdempotencyConflict, InsufficientCredits

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("many_connections"),
]


def ev(id: str, cost: str) -> UsageInput:
    return UsageInput(id=id, model="gpt-4o", cost=Decimal(cost))


def in_threads(key: tuple, calls: list[tuple[str, Callable]]) -> dict:
    """Each call in a thread of its own, while the lane's turn is held: they gather in one
    group, which its leader runs once the turn is given back. Outcomes by name."""
    lane = _lane(key)
    outcomes: dict = {}

    def run(name, call):
        try:
            outcomes[name] = call()
        except ApplicationError as exc:
            outcomes[name] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=call) for call in calls]
    with lane.turn:  # as if a transaction of this lane were in flight
        for joined, thread in enumerate(threads, start=1):
            thread.start()
            while not (lane.open and len(lane.open.items) == joined):
                time.sleep(0.001)  # in this order: each joins before the next starts
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


def record_in_threads(who: Attribution, events: list[UsageInput]) -> dict:
    calls = [(e.id, partial(usage_record, attribution=who, event=e)) for e in events]
    return in_threads(lane_of("usage", who), calls)


def transaction_ids(model, **filters) -> set[str]:
    """The ids of the transactions that wrote the rows (PostgreSQL's `xmin`)."""
    rows = model.objects.filter(**filters).extra(select={"x": "xmin::text"})
    return set(rows.values_list("x", flat=True))


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


def test_concurrent_holds_share_one_transaction_and_keep_their_own_outcomes(tenant):
    tenant.grant("1")
    key, _ = tenant.key("usage")
    who = Attribution.of_key(key)

    def hold(id: str, amount: str):
        return partial(authorization_create, attribution=who, id=id, amount=Decimal(amount))

    outcomes = in_threads(
        lane_of("hold", who),
        [("a", hold("a", "0.4")), ("b", hold("b", "0.4")), ("c", hold("c", "0.4")),
         ("a again", hold("a", "0.4")), ("a other", hold("a", "0.3")), ("d", hold("d", "0.2"))],
    )  # fmt: skip
    # As one by one: a, b fit; c does not (0.2 left); a again is a retry, with another amount a
    # conflict; d takes the rest.
    assert outcomes["a"][1] and outcomes["b"][1] and outcomes["d"][1]
    assert isinstance(outcomes["c"], InsufficientCredits)
    assert outcomes["a again"] == (outcomes["a"][0], False)
    assert isinstance(outcomes["a other"], IdempotencyConflict)
    holds = Hold.objects.filter(organization=tenant.org)
    assert sorted(holds.values_list("idempotency_key", flat=True)) == ["a", "b", "d"]
    assert len(transaction_ids(Hold, organization=tenant.org)) == 1
    pool = LedgerAccount.objects.get(organization=tenant.org, kind="pool")
    assert (pool.balance, pool.held) == (1, 1)
    assert ledger_verify() == []


def test_a_group_of_holds_locks_the_account_once(tenant):
    """Pinned: a group of n holds is one transaction of the account's lock and one statement per
    hold (`hold_insert_unless_due`; here no budgets, no lots past expiry), all run by its
    leader; its followers run none."""
    tenant.grant("1")
    key, _ = tenant.key("usage")
    who = Attribution.of_key(key)
    authorization_create(attribution=who, id="warm", amount=Decimal("0.1"))  # the caches
    counts: dict = {}

    def hold(id: str):
        def call():
            with CaptureQueriesContext(connection) as queries:
                outcome = authorization_create(attribution=who, id=id, amount=Decimal("0.1"))
            counts[id] = [q["sql"].split()[0] for q in queries.captured_queries]
            return outcome

        return call

    outcomes = in_threads(lane_of("hold", who), [(i, hold(i)) for i in ("a", "b", "c")])
    assert all(created for _, created in outcomes.values())
    leader = max(counts.values(), key=len)
    assert leader == ["BEGIN", "SELECT", "WITH", "WITH", "WITH", "COMMIT"], counts
    assert sorted(map(len, counts.values())) == [0, 0, 6], counts


def test_concurrent_captures_share_one_transaction_and_keep_their_own_outcomes(tenant):
    tenant.grant("1")
    key, _ = tenant.key("usage")
    who = Attribution.of_key(key)
    holds = [authorization_create(attribution=who, id=f"h{i}", amount=Decimal("0.3"))[0]
             for i in range(3)]  # fmt: skip
    pool = LedgerAccount.objects.get(organization=tenant.org, kind="pool")

    def capture(hold, id: str, cost: str):
        return partial(authorization_capture, hold=hold, event=ev(id, cost))

    outcomes = in_threads(
        ("capture", pool.pk),
        [("first", capture(holds[0], "e0", "0.2")),
         ("too much", capture(holds[1], "e1", "0.8")),
         ("retry", capture(holds[0], "e0", "0.2")),
         ("last", capture(holds[2], "e2", "0.5"))],
    )  # fmt: skip
    # As one by one: the first is captured; 0.8 is more than its hold and what is free (0.1
    # free + its 0.3), so it is refused and its hold stays pending; the retry returns the first
    # result; the last takes 0.5 (its 0.3 and 0.2 of what the first left free).
    assert outcomes["first"].created and outcomes["first"].event.cost == Decimal("0.2")
    assert isinstance(outcomes["too much"], InsufficientCredits)
    assert not outcomes["retry"].created
    assert outcomes["retry"].event.pk == outcomes["first"].event.pk
    assert outcomes["last"].created and outcomes["last"].balance_after == Decimal("0")
    statuses = dict(
        Hold.objects.filter(organization=tenant.org).values_list("idempotency_key", "status")
    )
    assert statuses == {"h0": "captured", "h1": "pending", "h2": "captured"}
    assert len(transaction_ids(UsageEvent, organization=tenant.org)) == 1
    pool.refresh_from_db()
    assert (pool.balance, pool.held) == (Decimal("0.3"), Decimal("0.3"))
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
    lane = _lane(lane_of("usage", who))
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
            while not (lane.open and len(lane.open.items) == 1):
                time.sleep(0.001)
            follower.start()
            while len(lane.open.items) < 2:
                time.sleep(0.001)
        started = time.monotonic()
        leader.join(timeout=30)
        follower.join(timeout=30)
    finally:
        pool.putconn(held)
    assert outcomes["lead"].created and outcomes["follow"].created, outcomes
    assert time.monotonic() - started < pool.timeout
