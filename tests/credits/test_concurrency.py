"""Real threads on real PostgreSQL (each with its own connection, closed at the end): parallel
requests never spend past the balance, opposite transfers never deadlock, and concurrent retries
with one idempotency key post exactly once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Sum

from accounts.models import Team
from credits.models import Hold, LedgerAccount, LedgerEntry, LedgerTransaction, UsageEvent
from credits.services import (
    Attribution,
    UsageInput,
    credits_allocate,
    credits_grant,
    credits_reclaim,
    hold_authorize,
    ledger_reverse,
    system_account,
    team_account,
    usage_record,
    usage_record_many,
)
from credits.verify import ledger_verify
from portal.errors import InsufficientCredits

from ..conftest import SYSTEM

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("many_connections"),
]

D = Decimal
Kind = LedgerAccount.Kind


def in_threads(count: int, work: Callable[[int], list]) -> list:
    """Run `work(i)` in `count` threads released together; each returns a list of outcomes (a
    result, or the exception's class name). Each thread closes its own connection."""
    barrier = threading.Barrier(count)

    def run(i: int) -> list:
        try:
            barrier.wait(timeout=30)
            return work(i)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return [outcome for outcomes in pool.map(run, range(count)) for outcome in outcomes]


def attempt(call: Callable[[], object]) -> object:
    try:
        return call()
    except InsufficientCredits:
        return "InsufficientCredits"
    except Exception as exc:  # a deadlock or any other failure: reported, never swallowed
        return f"{type(exc).__name__}: {exc}"


def balance_of(account: LedgerAccount) -> Decimal:
    return LedgerAccount.objects.get(pk=account.pk).balance


def test_50_threads_of_40_debits_spend_exactly_the_1000_the_pool_covers(tenant):
    # 1,000 debits of 0.001 credits, spread over three lots that burn in turn.
    credits_grant(organization=tenant.org, amount="0.4", priority=10, actor=SYSTEM)
    credits_grant(organization=tenant.org, amount="0.35", actor=SYSTEM)
    credits_grant(organization=tenant.org, amount="0.25", priority=90, actor=SYSTEM)
    pool = system_account(tenant.org, Kind.POOL)
    attribution = Attribution(organization=tenant.org)

    def work(thread: int) -> list:
        return [
            attempt(
                lambda n=n: (
                    usage_record(
                        attribution=attribution,
                        event=UsageInput(id=f"t{thread}-{n}", model="m", cost=D("0.001")),
                    ).created
                )
            )
            for n in range(40)
        ]

    started = time.monotonic()
    outcomes = Counter(in_threads(50, work))
    elapsed = time.monotonic() - started
    assert outcomes == {True: 1000, "InsufficientCredits": 1000}, outcomes
    assert balance_of(pool) == 0
    assert UsageEvent.objects.filter(organization=tenant.org).count() == 1000
    usage = LedgerEntry.objects.filter(account__kind=Kind.USAGE).aggregate(s=Sum("amount"))
    assert usage["s"] == D(1)
    assert ledger_verify() == []
    print(f"2,000 debits over 50 threads: {elapsed:.1f} s")


def test_parallel_holds_reserve_exactly_what_the_pool_covers(tenant):
    credits_grant(organization=tenant.org, amount="100", actor=SYSTEM)
    pool = system_account(tenant.org, Kind.POOL)

    def work(thread: int) -> list:
        return [
            attempt(
                lambda n=n: hold_authorize(
                    account=pool, amount="1", idempotency_key=f"h{thread}-{n}"
                )[1]
            )
            for n in range(4)
        ]

    outcomes = Counter(in_threads(50, work))
    assert outcomes == {True: 100, "InsufficientCredits": 100}, outcomes
    pool = LedgerAccount.objects.get(pk=pool.pk)
    assert (pool.balance, pool.held) == (D(100), D(100))
    assert Hold.objects.filter(status=Hold.Status.PENDING).count() == 100
    assert ledger_verify() == []


def test_opposite_allocations_and_reclaims_neither_deadlock_nor_lose_credits(tenant):
    red = tenant.team
    blue = Team.objects.create(organization=tenant.org, slug="blue", name="Blue")
    # Team accounts get lower ids than the pool: "pool first" is not the lock order.
    teams = {team.pk: team_account(team) for team in (red, blue)}
    credits_grant(organization=tenant.org, amount="100", actor=SYSTEM)
    credits_allocate(team=red, amount="30", actor=SYSTEM)
    credits_allocate(team=blue, amount="30", actor=SYSTEM)
    pool = system_account(tenant.org, Kind.POOL)
    assert pool.pk > max(account.pk for account in teams.values())

    def work(thread: int) -> list:
        out = []
        for n in range(10):
            team = (red, blue)[(thread + n) % 2]
            service = (credits_allocate, credits_reclaim)[(thread // 2 + n) % 2]
            amount = D(1 + (thread * 7 + n * 3) % 9)
            out.append(
                attempt(lambda s=service, t=team, a=amount: bool(s(team=t, amount=a, actor=SYSTEM)))
            )
        return out

    outcomes = Counter(in_threads(20, work))
    assert set(outcomes) <= {True, "InsufficientCredits"}, outcomes
    assert outcomes[True] >= 100, outcomes
    total = balance_of(pool) + sum(balance_of(account) for account in teams.values())
    assert total == D(100)
    assert ledger_verify() == []


def test_concurrent_retries_with_one_key_post_exactly_once(tenant):
    pool = system_account(tenant.org, Kind.POOL)
    grants = in_threads(
        20,
        lambda i: [
            attempt(
                lambda: (
                    credits_grant(
                        organization=tenant.org, amount="5", idempotency_key="topup-1", actor=SYSTEM
                    ).pk
                )
            )
        ],
    )
    assert len(set(grants)) == 1 and isinstance(grants[0], int), grants
    assert balance_of(pool) == D(5)

    events = in_threads(
        20,
        lambda i: [
            attempt(
                lambda: (
                    usage_record(
                        attribution=Attribution(organization=tenant.org),
                        event=UsageInput(id="evt-1", model="m", cost=D("0.5")),
                    ).event.pk
                )
            )
        ],
    )
    assert len(set(events)) == 1 and isinstance(events[0], int), events
    assert balance_of(pool) == D("4.5")

    # The hold takes all that is available: a duplicate must get it back, not be refused.
    holds = in_threads(
        20,
        lambda i: [
            attempt(lambda: hold_authorize(account=pool, amount="4.5", idempotency_key="h")[0].pk)
        ],
    )
    assert len(set(holds)) == 1 and isinstance(holds[0], int), holds

    usage = LedgerTransaction.objects.get(idempotency_key="usage:evt-1")
    reversals = in_threads(
        10, lambda i: [attempt(lambda: ledger_reverse(txn=usage, actor=SYSTEM).pk)]
    )
    assert len(set(reversals)) == 1 and isinstance(reversals[0], int), reversals
    assert LedgerTransaction.objects.filter(kind="reversal").count() == 1
    assert LedgerTransaction.objects.filter(organization=tenant.org).count() == 3
    assert (balance_of(pool), LedgerAccount.objects.get(pk=pool.pk).held) == (D(5), D("4.5"))
    assert ledger_verify() == []


def test_50_threads_of_batches_spend_exactly_what_the_pool_covers(tenant):
    """`usage_record_many` under the same contention: 50 threads x 4 batches of 10 events, a pool
    that covers 1,000 of the 2,000."""
    credits_grant(organization=tenant.org, amount="0.6", priority=10, actor=SYSTEM)
    credits_grant(organization=tenant.org, amount="0.4", actor=SYSTEM)
    pool = system_account(tenant.org, Kind.POOL)
    attribution = Attribution(organization=tenant.org)

    def work(thread: int) -> list:
        outcomes = []
        for batch in range(4):
            events = [
                UsageInput(id=f"b{thread}-{batch}-{n}", model="m", cost=D("0.001"))
                for n in range(10)
            ]
            for result in usage_record_many(attribution=attribution, events=events):
                outcomes.append(getattr(result, "created", type(result).__name__))
        return outcomes

    outcomes = Counter(in_threads(50, work))
    assert outcomes == {True: 1000, "InsufficientCredits": 1000}, outcomes
    assert balance_of(pool) == 0
    assert UsageEvent.objects.filter(organization=tenant.org).count() == 1000
    assert ledger_verify() == []


def test_one_event_id_sent_at_once_to_two_accounts_is_recorded_once(tenant):
    """Two keys paying from different accounts (a team's, the pool) do not wait for one lock: the
    unique index settles the race, and the batch falls back to one-by-one for the loser."""
    credits_grant(organization=tenant.org, amount="10", actor=SYSTEM)
    credits_allocate(team=tenant.team, amount="5", actor=SYSTEM)
    payers = [Attribution(organization=tenant.org, team=tenant.team),
              Attribution(organization=tenant.org)]  # fmt: skip

    def work(thread: int) -> list:
        event = UsageInput(id="shared", model="m", cost=D("0.25"))
        result = usage_record_many(attribution=payers[thread % 2], events=[event])[0]
        return [getattr(result, "created", type(result).__name__)]

    outcomes = Counter(in_threads(20, work))
    assert outcomes == {True: 1, False: 19}, outcomes
    assert UsageEvent.objects.filter(organization=tenant.org).count() == 1
    pool, team = system_account(tenant.org, Kind.POOL), team_account(tenant.team)
    assert balance_of(pool) + balance_of(team) == D("9.75")
    assert ledger_verify() == []
