"""Random sequences of ledger operations (hypothesis state machine) on a fresh organization per
example: grants (some expiring, varied priority), allocations, reclaims, debits, holds,
captures below and above the hold, voids, a fake clock for `holds_expire` / `lots_expire`, and
reversals. Each operation's outcome is predicted from the balances before it; after every step
the invariants hold: no negative available on pool or team accounts, every cached figure equals
its rows (`ledger_verify`), and the organization's entries sum to zero (conservation). The
balanced-entries trigger runs IMMEDIATE, so PostgreSQL checks every posting too."""

from __future__ import annotations

import itertools
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from accounts.models import Organization, Team
from credits.models import CreditLot, Hold, LedgerAccount, LedgerEntry, LedgerTransaction
from credits.services import (
    HoldNotPending,
    credits_allocate,
    credits_grant,
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
)
from credits.verify import ledger_verify
from portal.errors import Conflict, InsufficientCredits

from ..conftest import SYSTEM

D = Decimal
Kind = LedgerAccount.Kind
EXAMPLES = itertools.count()
amounts = st.decimals(min_value=D("0.000001"), max_value=D("30"), places=6)
modes = st.sampled_from(["amount", "amount", "exact", "over"])


def burn_key(lot: CreditLot):
    return (lot.priority, lot.expires_at is None, lot.expires_at, lot.created_at, lot.pk)


def greedy(lots: list[CreditLot], amount: Decimal) -> dict[int, Decimal]:
    """What burning `amount` from `lots` in burn order takes from each."""
    taken, left = {}, amount
    for lot in sorted(lots, key=burn_key):
        if left == 0:
            break
        portion = min(lot.remaining, left)
        taken[lot.pk], left = portion, left - portion
    return taken


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        # Each example runs in a savepoint rolled back at teardown: a fresh, isolated ledger.
        self.atomic = transaction.atomic()
        self.atomic.__enter__()
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        n = next(EXAMPLES)
        self.org = Organization.objects.create(slug=f"machine-{n}", name=f"Machine {n}")
        self.teams = [
            Team.objects.create(organization=self.org, slug=slug, name=slug)
            for slug in ("red", "blue")
        ]
        self.pool = system_account(self.org, Kind.POOL)
        self.accounts = [self.pool, *(team_account(team) for team in self.teams)]
        self.now = timezone.now()
        self.holds: list[Hold] = []
        self.txns: list[LedgerTransaction] = []  # candidates for a reversal
        self.seen: set[int] = set()  # expiry transactions already among them
        self.keys = itertools.count()

    def teardown(self):
        transaction.set_rollback(True)
        self.atomic.__exit__(None, None, None)

    # helpers

    def key(self) -> str:
        return f"k{next(self.keys)}"

    def available(self, account: LedgerAccount) -> Decimal:
        fresh = LedgerAccount.objects.get(pk=account.pk)
        return fresh.balance - fresh.held

    def balance(self, account: LedgerAccount) -> Decimal:
        return LedgerAccount.objects.get(pk=account.pk).balance

    def live_lots(self, account: LedgerAccount) -> list[CreditLot]:
        return list(CreditLot.objects.filter(account=account, remaining__gt=0))

    def amount_for(self, mode: str, amount: Decimal, available: Decimal) -> Decimal:
        if mode == "exact" and available > 0:
            return available
        if mode == "over":
            return available + D("0.000000000001")
        return amount

    @initialize(amount=amounts)
    def first_grant(self, amount):
        self.txns.append(credits_grant(organization=self.org, amount=amount, actor=SYSTEM))

    # rules

    @rule(
        amount=amounts,
        priority=st.sampled_from([0, 10, 50, 90]),
        expires_in=st.none() | st.integers(min_value=1, max_value=72),
    )
    def grant(self, amount, priority, expires_in):
        expires_at = self.now + timedelta(hours=expires_in) if expires_in else None
        before = self.balance(self.pool)
        txn = credits_grant(
            organization=self.org,
            amount=amount,
            priority=priority,
            expires_at=expires_at,
            actor=SYSTEM,
        )
        lot = CreditLot.objects.get(entries__transaction=txn)
        assert (lot.remaining, lot.priority, lot.expires_at) == (amount, priority, expires_at)
        assert self.balance(self.pool) == before + amount
        self.txns.append(txn)

    @rule(team=st.integers(0, 1), amount=amounts, mode=modes, back=st.booleans())
    def move(self, team, amount, mode, back):
        """An allocation (pool to team) or a reclaim (team to pool)."""
        source, target = self.accounts[0], self.accounts[1 + team]
        if back:
            source, target = target, source
        available = self.available(source)
        amount = self.amount_for(mode, amount, available)
        expected = greedy(self.live_lots(source), amount)
        target_before = self.balance(target)
        service = credits_reclaim if back else credits_allocate
        try:
            txn = service(team=self.teams[team], amount=amount, actor=SYSTEM)
        except InsufficientCredits:
            assert amount > available
            return
        assert amount <= available
        entries = list(txn.entries.order_by("id").select_related("lot"))
        assert {e.lot_id: -e.amount for e in entries[0::2]} == expected
        for out, into in zip(entries[0::2], entries[1::2], strict=True):
            assert (out.account_id, into.account_id) == (source.pk, target.pk)
            assert into.amount == -out.amount == into.lot.original_amount
            # the portion keeps its credits' priority, expiry and origin
            assert (into.lot.priority, into.lot.expires_at) == (
                out.lot.priority,
                out.lot.expires_at,
            )
            assert into.lot.origin_id == (out.lot.origin_id or out.lot_id)
        assert self.balance(target) == target_before + amount
        self.txns.append(txn)

    @rule(which=st.integers(0, 2), amount=amounts, mode=modes)
    def debit(self, which, amount, mode):
        account = self.accounts[which]
        available = self.available(account)
        amount = self.amount_for(mode, amount, available)
        expected = greedy(self.live_lots(account), amount)
        key = self.key()
        try:
            with transaction.atomic():
                txn, created = ledger_debit(
                    account=account, amount=amount, idempotency_key=key, digest=key
                )
        except InsufficientCredits:
            assert amount > available
            return
        assert created and amount <= available
        burned = {e.lot_id: -e.amount for e in txn.entries.filter(lot__isnull=False)}
        assert burned == expected  # priority, then earliest expiry, then age
        assert self.available(account) == available - amount
        self.txns.append(txn)

    @rule(which=st.integers(0, 2), amount=amounts, mode=modes, minutes=st.integers(1, 180))
    def authorize(self, which, amount, mode, minutes):
        account = self.accounts[which]
        available = self.available(account)
        amount = self.amount_for(mode, amount, available)
        try:
            hold, created = hold_authorize(
                account=account,
                amount=amount,
                idempotency_key=self.key(),
                timeout=timedelta(minutes=minutes),
            )
        except InsufficientCredits:
            assert amount > available
            return
        assert created and amount <= available
        assert self.available(account) == available - amount
        self.holds.append(hold)

    @precondition(lambda self: self.holds)
    @rule(data=st.data(), extra=amounts, above=st.booleans())
    def capture(self, data, extra, above):
        hold = data.draw(st.sampled_from(self.holds))
        hold.refresh_from_db()
        account = hold.account
        available, balance = self.available(account), self.balance(account)
        if above:
            amount = hold.amount + extra
        else:
            amount = data.draw(st.sampled_from([D(0), hold.amount, (hold.amount / 3)]))
            amount = amount.quantize(D("0.000000000001"))
        if hold.status == Hold.Status.CAPTURED and hold.captured_amount == amount:
            assert hold_capture(hold=hold, amount=amount) == hold.transaction  # a retry
            assert self.balance(account) == balance
            return
        try:
            txn = hold_capture(hold=hold, amount=amount)
        except HoldNotPending:
            assert hold.status != Hold.Status.PENDING
            return
        except InsufficientCredits:
            assert hold.status == Hold.Status.PENDING and amount - hold.amount > available
            return
        assert hold.status == Hold.Status.PENDING and amount - hold.amount <= available
        hold.refresh_from_db()
        assert (hold.status, hold.captured_amount) == (Hold.Status.CAPTURED, amount)
        assert self.balance(account) == balance - amount  # no lot expires in real time here
        if txn is not None:
            self.txns.append(txn)

    @precondition(lambda self: self.holds)
    @rule(data=st.data())
    def void(self, data):
        hold = data.draw(st.sampled_from(self.holds))
        hold.refresh_from_db()
        available = self.available(hold.account)
        try:
            hold_void(hold=hold)
        except HoldNotPending:
            assert hold.status in (Hold.Status.CAPTURED, Hold.Status.EXPIRED)
            return
        if hold.status == Hold.Status.PENDING:
            assert self.available(hold.account) == available + hold.amount

    @rule(hours=st.integers(1, 48))
    def time_passes(self, hours):
        """Advance the fake clock and run both beat tasks as of it."""
        self.now += timedelta(hours=hours)
        holds_expire(now=self.now)
        assert not Hold.objects.filter(
            organization=self.org, status=Hold.Status.PENDING, expires_at__lte=self.now
        ).exists()
        lots_expire(now=self.now)
        for account in self.accounts:
            due = CreditLot.objects.filter(account=account, expires_at__lte=self.now)
            kept = due.aggregate(s=Sum("remaining"))["s"] or D(0)
            held = LedgerAccount.objects.get(pk=account.pk).held
            assert kept <= held  # only what pending holds need outlives its expiry
        expiries = LedgerTransaction.objects.filter(organization=self.org, kind="expiry")
        for txn in expiries.exclude(pk__in=self.seen):
            self.seen.add(txn.pk)
            self.txns.append(txn)

    @precondition(lambda self: self.txns)
    @rule(data=st.data())
    def reverse(self, data):
        txn = data.draw(st.sampled_from(self.txns))
        totals = dict(
            txn.entries.values("account").annotate(s=Sum("amount")).values_list("account", "s")
        )
        try:
            reversal = ledger_reverse(txn=txn, idempotency_key=self.key(), actor=SYSTEM)
        except (InsufficientCredits, Conflict):
            return
        mirrored = dict(
            reversal.entries.values("account").annotate(s=Sum("amount")).values_list("account", "s")
        )
        assert mirrored == {account: -amount for account, amount in totals.items()}
        self.txns.remove(txn)

    # invariants

    @invariant()
    def no_negative_available(self):
        for account in LedgerAccount.objects.filter(organization=self.org, may_overdraw=False):
            assert account.balance - account.held >= 0
            assert account.held >= 0

    @invariant()
    def every_figure_matches_its_rows(self):
        """Balances equal their entries, held their pending holds, lots their balances (and
        their own entries), and every transaction balances: `ledger_verify` finds nothing."""
        assert ledger_verify(self.org.pk) == []

    @invariant()
    def reversals_mirror_what_they_reverse(self):
        """Entries never change: a reversed transaction still sums, per account, to minus its
        reversal (nothing was posted to either since)."""
        entries = LedgerEntry.objects.filter(transaction__organization=self.org)
        mirrors = (
            entries.filter(transaction__reverses__isnull=False)
            .values_list("transaction__reverses", "account")
            .annotate(s=Sum("amount"))
        )
        originals = (
            entries.filter(transaction__reversed_by__isnull=False)
            .values_list("transaction", "account")
            .annotate(s=Sum("amount"))
        )
        assert {(t, a): -s for t, a, s in mirrors} == {(t, a): s for t, a, s in originals}

    @invariant()
    def credits_are_conserved(self):
        entries = LedgerEntry.objects.filter(transaction__organization=self.org)
        assert (entries.aggregate(s=Sum("amount"))["s"] or D(0)) == 0


@pytest.mark.django_db
def test_random_ledger_operations_keep_every_invariant():
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=30,
            stateful_step_count=25,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
