"""The ledger's services (grants, allocations, debits, holds, expiry, reversals, idempotency) and
bad input: a typed error and nothing written. The rules PostgreSQL itself enforces are tested
with raw SQL in test_ledger_database.py."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts.models import AuditEvent
from accounts.services import team_create
from credits.models import (
    CreditLot,
    Hold,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    UsageEvent,
)
from credits.services import (
    Attribution,
    HoldNotPending,
    UsageInput,
    credits_allocate,
    credits_reclaim,
    hold_authorize,
    hold_capture,
    hold_void,
    holds_expire,
    ledger_debit,
    ledger_reverse,
    lots_expire,
    system_account,
    team_account,
    usage_record,
)
from credits.verify import ledger_verify
from portal.errors import (
    Conflict,
    IdempotencyConflict,
    InsufficientCredits,
    NotFound,
    ValidationFailed,
)

from ..conftest import SYSTEM

D = Decimal
Kind = LedgerAccount.Kind


def pool_of(tenant) -> LedgerAccount:
    return system_account(tenant.org, Kind.POOL)


def fresh(account: LedgerAccount) -> LedgerAccount:
    return LedgerAccount.objects.get(pk=account.pk)


def debit(account, amount, key, **kwargs):
    return ledger_debit(account=account, amount=amount, idempotency_key=key, digest=key, **kwargs)


def rows() -> dict[str, object]:
    """Row counts of every table a ledger write touches, and every cached figure."""
    return {
        "counts": [
            model.objects.count()
            for model in (LedgerTransaction, LedgerEntry, LedgerAccount, AuditEvent, UsageEvent)
        ],
        "accounts": list(LedgerAccount.objects.order_by("pk").values_list("balance", "held")),
        "lots": list(CreditLot.objects.order_by("pk").values_list("pk", "remaining")),
        "holds": list(Hold.objects.order_by("pk").values_list("pk", "status")),
    }


def lot_of(txn: LedgerTransaction) -> CreditLot:
    return CreditLot.objects.get(entries__transaction=txn)


def later(**kwargs):
    return timezone.now() + timedelta(**kwargs)


# Grants, allocations, reclaims ------------------------------------------------------------------


def test_a_grant_or_purchase_creates_a_lot_with_its_terms(tenant):
    expires = later(days=30)
    txn = tenant.grant("12.5", source="purchase", priority=20, expires_at=expires, memo="Invoice 7")
    lot = lot_of(txn)
    assert (lot.source, lot.original_amount, lot.remaining) == ("purchase", D("12.5"), D("12.5"))
    assert (lot.priority, lot.expires_at, lot.memo) == (20, expires, "Invoice 7")
    assert txn.kind == LedgerTransaction.Kind.PURCHASE
    legs = {(e.account.kind, e.amount) for e in txn.entries.select_related("account")}
    assert legs == {(Kind.POOL, D("12.5")), (Kind.PURCHASES, D("-12.5"))}
    assert fresh(pool_of(tenant)).balance == D("12.5")
    assert AuditEvent.objects.filter(organization=tenant.org, action="credits.purchased").exists()
    grant = tenant.grant("3")
    assert grant.kind == LedgerTransaction.Kind.GRANT
    assert grant.entries.get(amount__lt=0).account.kind == Kind.GRANTS
    assert ledger_verify(tenant.org.pk) == []


def test_allocate_and_reclaim_move_lot_portions_keeping_expiry_and_priority(tenant):
    soon, late = later(days=3), later(days=9)
    first = lot_of(tenant.grant("4", priority=10, expires_at=late))
    second = lot_of(tenant.grant("10", priority=60, expires_at=soon))
    tenant.allocate("6")
    team = team_account(tenant.team)
    portions = list(CreditLot.objects.filter(account=team).order_by("id"))
    # Burn order of the pool: priority 10 first (all 4), then 2 of the priority-60 lot.
    assert [(p.origin_id, p.remaining, p.priority, p.expires_at) for p in portions] == [
        (first.pk, D(4), 10, late),
        (second.pk, D(2), 60, soon),
    ]
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.remaining, second.remaining) == (D(0), D(8))
    assert fresh(team).balance == D(6) and fresh(pool_of(tenant)).balance == D(8)

    credits_reclaim(team=tenant.team, amount="5", actor=SYSTEM)
    back = list(CreditLot.objects.filter(account=pool_of(tenant), origin__isnull=False))
    # The team burns its priority-10 portion first (4), then 1 of the priority-60 one.
    assert sorted((b.origin_id, b.remaining, b.priority, b.expires_at) for b in back) == sorted(
        [(first.pk, D(4), 10, late), (second.pk, D(1), 60, soon)]
    )
    assert fresh(team).balance == D(1) and fresh(pool_of(tenant)).balance == D(13)
    assert ledger_verify(tenant.org.pk) == []


def test_an_allocation_refuses_more_than_the_pool_has_available(tenant):
    tenant.grant("5")
    hold_authorize(account=pool_of(tenant), amount="2", idempotency_key="h1")
    before = rows()
    with pytest.raises(InsufficientCredits) as caught:
        tenant.allocate("3.5")
    assert caught.value.metadata["available"] == "3.000000000000"
    assert rows() == before
    tenant.allocate("3")
    assert fresh(team_account(tenant.team)).balance == D(3)


# Debits -----------------------------------------------------------------------------------------


def test_a_debit_burns_lots_by_priority_then_earliest_expiry_then_age(tenant):
    def lot(amount, **terms):
        return lot_of(tenant.grant(amount, **terms))

    oldest = lot("1")  # priority 50, no expiry
    late = lot("1", expires_at=later(days=20))
    soon = lot("1", expires_at=later(days=5))
    urgent = lot("1", priority=5)  # newest, but the lowest priority number
    newer = lot("1")  # priority 50, no expiry, younger than `oldest`
    pool = pool_of(tenant)
    expected = [urgent, soon, late, oldest, newer]
    txn, created = debit(pool, "3.5", "d1")
    assert created
    burned = [(e.lot_id, e.amount) for e in txn.entries.filter(lot__isnull=False).order_by("id")]
    assert burned == [
        (urgent.pk, D(-1)),
        (soon.pk, D(-1)),
        (late.pk, D(-1)),
        (oldest.pk, D("-0.5")),
    ]
    debit(pool, "1", "d2")
    remaining = [CreditLot.objects.get(pk=x.pk).remaining for x in expected]
    assert remaining == [D(0), D(0), D(0), D(0), D("0.5")]
    assert txn.entries.get(lot__isnull=True).account.kind == Kind.USAGE
    assert fresh(pool).balance == D("0.5")
    assert ledger_verify(tenant.org.pk) == []


def test_a_debit_is_refused_when_balance_minus_held_cannot_cover_it(tenant):
    tenant.grant("10")
    pool = pool_of(tenant)
    hold_authorize(account=pool, amount="4", idempotency_key="h")
    before = rows()
    with pytest.raises(InsufficientCredits) as caught:
        debit(pool, "6.000000000001", "too-much")
    assert caught.value.status_code == 402
    assert caught.value.metadata["needed"] == "6.000000000001"
    assert rows() == before
    debit(pool, "6", "exact")
    assert (fresh(pool).balance, fresh(pool).held) == (D(4), D(4))


def test_usage_from_a_team_spends_its_allocation_not_the_pool(tenant):
    tenant.grant("10")
    tenant.allocate("3")
    result = usage_record(
        attribution=Attribution(organization=tenant.org, team=tenant.team),
        event=UsageInput(id="evt-1", model="any", cost=D("2.5")),
    )
    assert result.created and result.event.transaction is not None
    assert fresh(team_account(tenant.team)).balance == D("0.5")
    assert fresh(pool_of(tenant)).balance == D(7)


# Holds ------------------------------------------------------------------------------------------


def test_a_hold_reserves_and_a_capture_below_it_posts_the_actual_and_releases_the_rest(tenant):
    tenant.grant("10")
    pool = pool_of(tenant)
    hold, created = hold_authorize(
        account=pool, amount="4", idempotency_key="req-1", timeout=timedelta(minutes=3)
    )
    assert created and hold.status == Hold.Status.PENDING
    assert abs(hold.expires_at - later(minutes=3)) < timedelta(seconds=5)
    assert (fresh(pool).balance, fresh(pool).held) == (D(10), D(4))
    with pytest.raises(InsufficientCredits):
        debit(pool, "7", "d")
    txn = hold_capture(hold=hold, amount="1.25")
    hold.refresh_from_db()
    assert (hold.status, hold.captured_amount, hold.transaction_id) == (
        "captured",
        D("1.25"),
        txn.pk,
    )
    assert (fresh(pool).balance, fresh(pool).held) == (D("8.75"), D(0))
    assert txn.entries.get(account__kind=Kind.USAGE).amount == D("1.25")
    # A retry of the same capture returns the first result; another amount is refused.
    assert hold_capture(hold=hold, amount="1.25") == txn
    with pytest.raises(HoldNotPending):
        hold_capture(hold=hold, amount="2")
    assert LedgerTransaction.objects.filter(kind="usage").count() == 1
    assert ledger_verify(tenant.org.pk) == []


def test_a_capture_above_the_hold_takes_the_difference_only_when_available(tenant):
    tenant.grant("10")
    pool = pool_of(tenant)
    other, _ = hold_authorize(account=pool, amount="3", idempotency_key="other")
    hold, _ = hold_authorize(account=pool, amount="4", idempotency_key="req")
    before = rows()
    with pytest.raises(InsufficientCredits):
        hold_capture(hold=hold, amount="7.5")  # 4 held + 3 free = 7 at most
    assert rows() == before
    hold.refresh_from_db()
    assert hold.status == Hold.Status.PENDING
    hold_capture(hold=hold, amount="7")
    pool = fresh(pool)
    assert (pool.balance, pool.held) == (D(3), D(3))
    hold_void(hold=other)
    assert fresh(pool).held == D(0)
    assert ledger_verify(tenant.org.pk) == []


def test_void_releases_a_hold_and_a_voided_or_expired_hold_cannot_be_captured(tenant):
    tenant.grant("10")
    pool = pool_of(tenant)
    voided, _ = hold_authorize(account=pool, amount="4", idempotency_key="a")
    assert hold_void(hold=voided).status == Hold.Status.VOIDED
    assert hold_void(hold=voided).status == Hold.Status.VOIDED  # a retry
    assert fresh(pool).held == D(0)
    timed_out, _ = hold_authorize(account=pool, amount="2", idempotency_key="b")
    kept, _ = hold_authorize(
        account=pool, amount="1", idempotency_key="c", timeout=timedelta(hours=2)
    )
    assert holds_expire(now=later(hours=1)) == 1
    timed_out.refresh_from_db()
    assert timed_out.status == Hold.Status.EXPIRED and timed_out.resolved_at is not None
    assert fresh(pool).held == D(1)
    before = rows()
    for hold in (voided, timed_out):
        with pytest.raises(HoldNotPending) as caught:
            hold_capture(hold=hold, amount="1")
        assert caught.value.status_code == 409
    with pytest.raises(HoldNotPending):
        hold_void(hold=timed_out)
    # Past its timeout but not yet released by the task: refused too.
    Hold.objects.filter(pk=kept.pk).update(expires_at=later(seconds=-1))
    with pytest.raises(HoldNotPending) as caught:
        hold_capture(hold=kept, amount="1")
    assert caught.value.metadata["hold_status"] == "expired"
    assert rows() == before


def test_a_hold_is_refused_past_the_available_and_its_timeout_is_bounded(tenant):
    tenant.grant("5")
    pool = pool_of(tenant)
    before = rows()
    with pytest.raises(InsufficientCredits):
        hold_authorize(account=pool, amount="5.01", idempotency_key="x")
    for timeout in (timedelta(0), timedelta(hours=25), timedelta(seconds=-5), 600):
        with pytest.raises(ValidationFailed):
            hold_authorize(account=pool, amount="1", idempotency_key="y", timeout=timeout)
    assert rows() == before


# Expiry -----------------------------------------------------------------------------------------


def test_lots_expire_posts_what_remains_except_what_pending_holds_need(tenant):
    expiring = tenant.grant("10", expires_at=later(days=1))
    tenant.grant("1")  # no expiry
    lot = lot_of(expiring)
    pool = pool_of(tenant)
    debit(pool, "2", "d")  # burns the expiring lot first: 8 left of it
    hold, _ = hold_authorize(
        account=pool, amount="6", idempotency_key="h", timeout=timedelta(hours=1)
    )
    assert lots_expire(now=later(hours=12)) == 0
    assert lots_expire(now=later(days=2)) == 1
    lot.refresh_from_db()
    # 9 in the pool, 6 held: 3 may expire now; the hold keeps 5 of the lot (plus the 1 unexpiring).
    assert lot.remaining == D(5) and lot.expired_at is None
    pool = fresh(pool)
    assert (pool.balance, pool.held) == (D(6), D(6))
    expiry = LedgerTransaction.objects.get(kind=LedgerTransaction.Kind.EXPIRY)
    legs = {(e.account.kind, e.amount, e.lot_id) for e in expiry.entries.select_related("account")}
    assert legs == {(Kind.POOL, D(-3), lot.pk), (Kind.EXPIRY, D(3), None)}
    assert holds_expire(now=later(days=2)) == 1  # the hold is gone: what it kept expires too
    lot.refresh_from_db()
    assert lot.remaining == D(0) and lot.expired_at is not None
    assert (fresh(pool).balance, fresh(pool).held) == (D(1), D(0))
    assert LedgerTransaction.objects.filter(kind="expiry").count() == 2
    assert lots_expire(now=later(days=3)) == 0
    assert ledger_verify(tenant.org.pk) == []


def test_expiry_reaches_team_portions_and_holds_expire_releases_what_they_kept(tenant):
    tenant.grant("10", expires_at=later(days=1))
    tenant.allocate("4")
    team = team_account(tenant.team)
    hold_authorize(account=team, amount="1", idempotency_key="h", timeout=timedelta(minutes=30))
    assert lots_expire(now=later(days=2)) == 2
    assert (fresh(pool_of(tenant)).balance, fresh(team).balance) == (D(0), D(1))
    assert holds_expire(now=later(days=2)) == 1
    assert (fresh(team).balance, fresh(team).held) == (D(0), D(0))
    expired = LedgerEntry.objects.filter(account__kind=Kind.EXPIRY).values_list("amount", flat=True)
    assert sum(expired) == D(10)
    assert ledger_verify(tenant.org.pk) == []


def test_a_capture_spends_first_the_expired_credits_its_hold_kept(tenant):
    expiring = lot_of(tenant.grant("5", expires_at=later(days=1)))
    tenant.grant("5", priority=10)  # burns before the expiring lot in the usual order
    pool = pool_of(tenant)
    hold, _ = hold_authorize(
        account=pool, amount="8", idempotency_key="h", timeout=timedelta(hours=2)
    )
    # A day passes (the lot table has no trigger: move its expiry into the past).
    CreditLot.objects.filter(pk=expiring.pk).update(expires_at=later(seconds=-1))
    lots_expire()
    expiring.refresh_from_db()
    assert expiring.remaining == D(3)  # 10 - 8 held = 2 could expire
    hold_capture(hold=hold, amount="4")
    expiring.refresh_from_db()
    assert expiring.remaining == D(0)
    assert fresh(pool).balance == D(4)  # the live lot paid only 1 of the 4
    assert ledger_verify(tenant.org.pk) == []


def test_a_hold_expires_the_lots_past_expiry_first_and_counts_what_remains(tenant):
    expiring = lot_of(tenant.grant("5", expires_at=later(days=1)))
    tenant.grant("2")
    CreditLot.objects.filter(pk=expiring.pk).update(expires_at=later(seconds=-1))
    pool = pool_of(tenant)
    with pytest.raises(InsufficientCredits):  # 7 before the expiry, 2 after it
        hold_authorize(account=pool, amount="3", idempotency_key="too-much")
    assert not LedgerTransaction.objects.filter(kind="expiry").exists()  # rolled back with it
    hold, created = hold_authorize(account=pool, amount="1.5", idempotency_key="fits")
    assert created and LedgerTransaction.objects.filter(kind="expiry").count() == 1
    assert (fresh(pool).balance, fresh(pool).held) == (D(2), D("1.5"))
    again, created = hold_authorize(account=pool, amount="1.5", idempotency_key="fits")
    assert (again.pk, created) == (hold.pk, False)
    assert ledger_verify(tenant.org.pk) == []


def test_an_expired_lot_refilled_by_a_reversal_expires_again_in_a_new_transaction(tenant):
    tenant.grant("3", expires_at=later(days=1))
    lots_expire(now=later(days=2))
    first = LedgerTransaction.objects.get(kind=LedgerTransaction.Kind.EXPIRY)
    ledger_reverse(txn=first, actor=SYSTEM)
    assert fresh(pool_of(tenant)).balance == D(3)
    lots_expire(now=later(days=2))
    expiries = LedgerTransaction.objects.filter(kind=LedgerTransaction.Kind.EXPIRY)
    assert expiries.count() == 2
    assert first.entries.count() == 2  # the reversed expiry was not posted to again
    assert fresh(pool_of(tenant)).balance == D(0)
    assert ledger_verify(tenant.org.pk) == []


# Reversals --------------------------------------------------------------------------------------


def test_a_reversal_posts_the_mirror_and_gives_burned_lot_portions_back(tenant):
    tenant.grant("2", priority=1)
    tenant.grant("5")
    pool = pool_of(tenant)
    txn, _ = debit(pool, "3", "d")

    def legs(t):
        return list(t.entries.order_by("id").values_list("account_id", "amount", "lot_id"))

    original = legs(txn)
    reversal = ledger_reverse(txn=txn, memo="refund", actor=SYSTEM)
    assert reversal.kind == LedgerTransaction.Kind.REVERSAL and reversal.reverses_id == txn.pk
    assert legs(reversal) == [(a, -amount, lot) for a, amount, lot in original]
    assert legs(txn) == original  # entries never change
    remaining = CreditLot.objects.filter(account=pool).values_list("remaining", flat=True)
    assert sorted(remaining) == [D(2), D(5)]
    assert fresh(pool).balance == D(7)
    # A retry returns the first reversal; another key is refused; a reversal is not reversed.
    assert ledger_reverse(txn=txn, actor=SYSTEM) == reversal
    with pytest.raises(Conflict) as caught:
        ledger_reverse(txn=txn, idempotency_key="again", actor=SYSTEM)
    assert caught.value.metadata["reason"] == "already_reversed"
    with pytest.raises(Conflict):
        ledger_reverse(txn=reversal, actor=SYSTEM)
    assert ledger_verify(tenant.org.pk) == []


def test_a_reversal_is_refused_when_its_credits_were_spent_since(tenant):
    grant = tenant.grant("5")
    allocation = tenant.allocate("4")
    debit(team_account(tenant.team), "1", "spent")
    before = rows()
    with pytest.raises(InsufficientCredits):
        ledger_reverse(txn=allocation, actor=SYSTEM)
    with pytest.raises(InsufficientCredits):
        ledger_reverse(txn=grant, actor=SYSTEM)  # 4 of its 5 credits moved to the team
    assert rows() == before
    credits_reclaim(team=tenant.team, amount="3", actor=SYSTEM)
    with pytest.raises(InsufficientCredits):
        ledger_reverse(txn=grant, actor=SYSTEM)  # 4 of 5 back in the pool: 1 was spent
    assert ledger_verify(tenant.org.pk) == []


def test_a_grant_allocated_and_reclaimed_can_be_reversed_from_its_returned_portions(tenant):
    grant = tenant.grant("5", priority=1)
    tenant.grant("2", priority=90)
    tenant.allocate("4")
    credits_reclaim(team=tenant.team, amount="4", actor=SYSTEM)
    reversal = ledger_reverse(txn=grant, actor=SYSTEM)
    pool = pool_of(tenant)
    assert fresh(pool).balance == D(2)
    legs = sorted(reversal.entries.values_list("account__kind", "amount"))
    assert legs == [("grants", D(5)), ("pool", D(-4)), ("pool", D(-1))]
    root = lot_of(grant)
    assert not CreditLot.objects.filter(account=pool, remaining__gt=0, priority=1).exists()
    assert CreditLot.objects.filter(origin=root, account=pool).count() == 1
    assert ledger_verify(tenant.org.pk) == []


# Idempotency ------------------------------------------------------------------------------------


def test_the_same_key_and_request_returns_the_first_result_and_posts_nothing(tenant):
    first = tenant.grant("5", idempotency_key="g")
    alloc = tenant.allocate("2", idempotency_key="a")
    hold, created = hold_authorize(account=pool_of(tenant), amount="1", idempotency_key="h")
    txn, _ = debit(pool_of(tenant), "1", "usage:1")
    before = rows()
    assert tenant.grant("5.000", idempotency_key="g") == first
    assert tenant.allocate("2", idempotency_key="a") == alloc
    assert hold_authorize(account=pool_of(tenant), amount="1", idempotency_key="h") == (hold, False)
    assert debit(pool_of(tenant), "1", "usage:1") == (txn, False)
    assert rows() == before
    for retry in (
        lambda: tenant.grant("6", idempotency_key="g"),
        lambda: tenant.grant("5", idempotency_key="a"),  # a key is one per organization
        lambda: tenant.allocate("3", idempotency_key="a"),
        lambda: credits_reclaim(team=tenant.team, amount="2", idempotency_key="a", actor=SYSTEM),
        lambda: hold_authorize(account=pool_of(tenant), amount="2", idempotency_key="h"),
        lambda: ledger_debit(
            account=pool_of(tenant), amount="1", idempotency_key="usage:1", digest="other"
        ),
    ):
        with pytest.raises(IdempotencyConflict) as caught:
            retry()
        assert caught.value.status_code == 409
    assert rows() == before


def test_a_grant_retried_after_its_expiry_returns_the_first(tenant):
    expires = later(seconds=0.3)
    first = tenant.grant("1", expires_at=expires, idempotency_key="k")
    time.sleep(0.35)
    assert tenant.grant("1", expires_at=expires, idempotency_key="k") == first
    with pytest.raises(ValidationFailed):
        tenant.grant("1", expires_at=expires, idempotency_key="new")


def test_long_client_keys_fit_the_columns_of_derived_keys(tenant):
    tenant.grant("5")
    long_id = "e" * 255
    result = usage_record(
        attribution=Attribution(organization=tenant.org),
        event=UsageInput(id=long_id, model="any", cost=D(1)),
    )
    assert result.created
    again = usage_record(
        attribution=Attribution(organization=tenant.org),
        event=UsageInput(id=long_id, model="any", cost=D(1)),
    )
    assert not again.created and again.event.pk == result.event.pk
    hold, _ = hold_authorize(account=pool_of(tenant), amount="1", idempotency_key="h" * 255)
    assert hold_capture(hold=hold, amount="1") is not None
    assert fresh(pool_of(tenant)).balance == D(3)
    with pytest.raises(ValidationFailed):
        tenant.grant("1", idempotency_key="k" * 256)


# Bad input: a typed error, nothing written ------------------------------------------------------

BAD_AMOUNTS = ["0", "-1", "NaN", "Infinity", "-Infinity", "0.0000000000001", 1.5, "abc", "1e16", ""]


def test_bad_amounts_are_refused_by_every_service_and_nothing_is_written(tenant):
    tenant.grant("10")
    tenant.allocate("2")
    pool = pool_of(tenant)
    hold, _ = hold_authorize(account=pool, amount="1", idempotency_key="h")
    calls = {
        "grant": lambda a: tenant.grant(a),
        "allocate": lambda a: tenant.allocate(a),
        "reclaim": lambda a: credits_reclaim(team=tenant.team, amount=a, actor=SYSTEM),
        "debit": lambda a: debit(pool, a, "bad"),
        "hold": lambda a: hold_authorize(account=pool, amount=a, idempotency_key="bad"),
        "capture": lambda a: hold_capture(hold=hold, amount=a),
    }
    before = rows()
    for name, call in calls.items():
        for amount in BAD_AMOUNTS:
            if name == "capture" and amount == "0":
                continue  # a capture of nothing is allowed (the request cost nothing)
            with pytest.raises(ValidationFailed) as caught:
                call(amount)
            assert caught.value.status_code == 400, (name, amount)
            assert "amount" in caught.value.metadata["errors"], (name, amount)
    assert rows() == before


def test_bad_terms_of_a_grant_or_an_allocation_are_refused(tenant):
    pooled = team_create(
        organization=tenant.org, slug="ops", name="Ops", funding="pool", actor=SYSTEM
    )
    tenant.grant("5")
    before = rows()
    with pytest.raises(ValidationFailed):  # a team drawing on the pool has no allocation
        credits_allocate(team=pooled, amount="1", actor=SYSTEM)
    for terms in (
        {"priority": 101},
        {"priority": -1},
        {"priority": "5"},
        {"priority": True},
        {"expires_at": later(days=-1)},
        {"expires_at": (timezone.now() + timedelta(days=1)).replace(tzinfo=None)},
        {"expires_at": "2030-01-01"},
        {"source": "gift"},
        {"idempotency_key": "k" * 256},
    ):
        with pytest.raises(ValidationFailed):
            tenant.grant("1", **terms)
    assert rows() == before


def test_unknown_and_unspendable_accounts_are_refused(tenant):
    tenant.grant("5")
    unspendable = [system_account(tenant.org, kind) for kind in (Kind.GRANTS, Kind.USAGE)]
    before = rows()
    with pytest.raises(ValidationFailed):
        system_account(tenant.org, "bogus")
    ghost = LedgerAccount(pk=987654321, organization=tenant.org, kind=Kind.POOL)
    unsaved = LedgerAccount(organization=tenant.org, kind=Kind.POOL)
    for account in (ghost, unsaved):
        with pytest.raises(NotFound):
            debit(account, "1", "ghost")
        with pytest.raises(NotFound):
            hold_authorize(account=account, amount="1", idempotency_key="ghost")
    for account in unspendable:
        with pytest.raises(ValidationFailed):
            debit(account, "1", "sink")
        with pytest.raises(ValidationFailed):
            hold_authorize(account=account, amount="1", idempotency_key="s")
    with pytest.raises(NotFound):
        hold_capture(hold=Hold(pk=987654321, organization=tenant.org), amount="1")
    assert rows() == before


def test_another_organizations_account_team_hold_or_transaction_is_not_found(tenant, other_tenant):
    tenant.grant("5")
    theirs = other_tenant.grant("5")
    other_tenant.allocate("1")
    their_pool = pool_of(other_tenant)
    their_hold, _ = hold_authorize(account=their_pool, amount="1", idempotency_key="theirs")
    before = rows()
    scoped = {"organization": tenant.org}
    attempts = [
        lambda: usage_record(
            attribution=Attribution(organization=tenant.org, team=other_tenant.team),
            event=UsageInput(id="x", model="any", cost=D(1)),
        ),
        lambda: debit(their_pool, "1", "x", **scoped),
        lambda: hold_authorize(account=their_pool, amount="1", idempotency_key="x", **scoped),
        lambda: hold_capture(hold=their_hold, amount="1", **scoped),
        lambda: hold_void(hold=their_hold, **scoped),
        lambda: credits_allocate(team=other_tenant.team, amount="1", actor=SYSTEM, **scoped),
        lambda: credits_reclaim(team=other_tenant.team, amount="1", actor=SYSTEM, **scoped),
        lambda: ledger_reverse(txn=theirs, actor=SYSTEM, **scoped),
    ]
    for attempt in attempts:
        with pytest.raises(NotFound) as caught:
            attempt()
        assert caught.value.status_code == 404
        assert "globex" not in caught.value.message
    assert rows() == before
