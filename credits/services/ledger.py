"""The ledger's write path: grants, allocations and reclaims, debits, expiry, reversals (holds:
`credits.services.holds`).

Every function here is atomic, takes an idempotency key unique per organization (a retry with the
same request returns the first result and posts nothing; the same key with another request raises
`IdempotencyConflict`), locks the accounts it changes with `select_for_update` in ascending id
order (so opposite transfers cannot deadlock), and checks and reserves in one step under those
locks (so parallel requests cannot spend past the balance). Sinks (usage, expiry) are never locked.
The posting primitives (locks, keys, lots, entries) are in `credits.services.ledger_core`.

Rules: docs/ledger.md; burn order as Lago, OpenMeter and Stripe credit grants (priority,
then earliest expiry, then age).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.audit import Actor, audit_record
from accounts.models import Organization, Team
from portal.errors import (
    Conflict,
    InsufficientCredits,
    ValidationFailed,
)
from portal.money import decimal_text, format_credits, parse_credits

from ..models import CreditLot, LedgerAccount, LedgerEntry, LedgerTransaction, UsageEvent
from .budgets import budget_windows_give_back
from .ledger_core import (
    _burn,
    _burn_order,
    _check_key,
    _check_organization,
    _check_spendable,
    _create_once,
    _ensure_available,
    _expire_due,
    _first_result,
    _lock,
    _post_entries,
    _spend,
    new_idempotency_key,
    request_hash,
    system_account,
    system_account_of,
    team_account,
)

Kind = LedgerAccount.Kind
# Grants, allocations, reclaims ------------------------------------------------------------------


@transaction.atomic
def credits_grant(
    *,
    organization: Organization,
    amount,
    source: str = CreditLot.Source.GRANT,
    priority: int = 50,
    expires_at: datetime | None = None,
    memo: str = "",
    idempotency_key: str | None = None,
    actor: Actor,
) -> LedgerTransaction:
    """Credit the organization's pool with a new lot of `amount` credits (a grant, purchase or
    promotion), burning by `priority` (0-100, lower first) and optional `expires_at`. A retry
    with the same key and request returns the first transaction (even once `expires_at` passed).

    Raises ValidationFailed (bad amount, priority, key, past expiry), IdempotencyConflict."""
    amount = parse_credits(amount)
    if source not in CreditLot.Source.values:
        raise ValidationFailed({"source": [f"One of: {', '.join(CreditLot.Source.values)}."]})
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 100:
        raise ValidationFailed({"priority": ["An integer from 0 to 100."]})
    if expires_at is not None:
        if not isinstance(expires_at, datetime) or expires_at.tzinfo is None:
            raise ValidationFailed({"expires_at": ["An aware time in the future."]})
        expires_at = expires_at.astimezone(UTC)
    key = _check_key(idempotency_key) if idempotency_key else new_idempotency_key()
    memo = (memo or "")[:500]
    digest = request_hash(
        op="grant", amount=amount, source=source, priority=priority, expires_at=expires_at
    )
    existing = _first_result(LedgerTransaction, organization.pk, key, digest)
    if existing is not None:
        return existing
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationFailed({"expires_at": ["An aware time in the future."]})
    pool = system_account(organization, Kind.POOL)
    origin = system_account(
        organization, Kind.PURCHASES if source == CreditLot.Source.PURCHASE else Kind.GRANTS
    )
    locked = _lock([pool, origin])
    txn, created = _create_once(
        LedgerTransaction,
        organization.pk,
        key,
        digest,
        kind=LedgerTransaction.Kind.PURCHASE
        if source == "purchase"
        else LedgerTransaction.Kind.GRANT,
        memo=memo,
        created_by=actor.user,
    )
    if not created:
        return txn
    lot = CreditLot.objects.create(
        organization=organization,
        account=pool,
        source=source,
        original_amount=amount,
        remaining=amount,
        priority=priority,
        expires_at=expires_at,
        memo=memo,
    )
    _post_entries(txn, [(locked[origin.pk], -amount, None), (locked[pool.pk], amount, lot)])
    audit_record(
        organization=organization,
        actor=actor,
        target=txn,
        action={
            "grant": "credits.granted",
            "purchase": "credits.purchased",
            "promotion": "credits.promoted",
        }[source],
        after={
            "amount": amount,
            "lot": lot.pk,
            "priority": priority,
            "expires_at": expires_at,
            "idempotency_key": key,
        },
    )
    return txn


def _move(
    *,
    organization: Organization,
    source: LedgerAccount,
    target: LedgerAccount,
    amount,
    kind: str,
    idempotency_key: str | None,
    memo: str,
    actor: Actor,
    team: Team,
) -> LedgerTransaction:
    amount = parse_credits(amount)
    key = _check_key(idempotency_key) if idempotency_key else new_idempotency_key()
    digest = request_hash(op=kind, amount=amount, source=source.pk, target=target.pk)
    existing = _first_result(LedgerTransaction, organization.pk, key, digest)
    if existing is not None:
        return existing
    locked = _lock([source, target])
    source, target = locked[source.pk], locked[target.pk]
    txn, created = _create_once(
        LedgerTransaction,
        organization.pk,
        key,
        digest,
        kind=kind,
        memo=(memo or "")[:500],
        created_by=actor.user,
    )
    if not created:
        return txn
    _expire_due(source, timezone.now())
    _ensure_available(source, amount)
    legs = []
    for lot, portion in _burn(source, amount):
        portion_lot = CreditLot.objects.create(
            organization=organization,
            account=target,
            source=lot.source,
            origin_id=lot.origin_id or lot.pk,
            original_amount=portion,
            remaining=portion,
            priority=lot.priority,
            expires_at=lot.expires_at,
            memo=lot.memo,
        )
        legs += [(source, -portion, lot), (target, portion, portion_lot)]
    _post_entries(txn, legs)
    audit_record(
        organization=organization,
        actor=actor,
        action="credits.allocated" if kind == "allocation" else "credits.reclaimed",
        target=team,
        after={"amount": amount, "transaction": txn.pk, "idempotency_key": key},
    )
    return txn


@transaction.atomic
def credits_allocate(
    *,
    team: Team,
    amount,
    idempotency_key: str | None = None,
    memo: str = "",
    actor: Actor,
    organization: Organization | None = None,
) -> LedgerTransaction:
    """Move `amount` credits from the pool to the team's account, as lot portions that keep their
    priority and expiry. With `organization`, the team must be one of its own (else NotFound).
    Raises InsufficientCredits, ValidationFailed, IdempotencyConflict, NotFound."""
    _check_organization(organization, team.organization_id, "team")
    if team.funding == Team.Funding.POOL:
        raise ValidationFailed({"team": ["This team draws on the pool; it has no allocation."]})
    organization = team.organization
    return _move(
        organization=organization,
        source=system_account(organization, Kind.POOL),
        target=team_account(team),
        amount=amount,
        kind=LedgerTransaction.Kind.ALLOCATION,
        idempotency_key=idempotency_key,
        memo=memo,
        actor=actor,
        team=team,
    )


@transaction.atomic
def credits_reclaim(
    *,
    team: Team,
    amount,
    idempotency_key: str | None = None,
    memo: str = "",
    actor: Actor,
    organization: Organization | None = None,
) -> LedgerTransaction:
    """Move `amount` credits back from the team's account to the pool (lot portions keep their
    priority and expiry). With `organization`, the team must be one of its own (else NotFound).
    Raises InsufficientCredits, ValidationFailed, IdempotencyConflict, NotFound."""
    _check_organization(organization, team.organization_id, "team")
    organization = team.organization
    return _move(
        organization=organization,
        source=team_account(team),
        target=system_account(organization, Kind.POOL),
        amount=amount,
        kind=LedgerTransaction.Kind.RECLAIM,
        idempotency_key=idempotency_key,
        memo=memo,
        actor=actor,
        team=team,
    )


# Debits --------------------------------------------------------------------------------------


@transaction.atomic
def ledger_debit(
    *,
    account: LedgerAccount,
    amount,
    idempotency_key: str,
    digest: str,
    metadata: dict | None = None,
    memo: str = "",
    organization: Organization | None = None,
) -> tuple[LedgerTransaction, bool]:
    """Spend `amount` credits (> 0) from a pool or team `account` into the usage sink, burning its
    lots. Returns (transaction, created); a retry of `idempotency_key` with the same `digest`
    returns the first transaction. Raises InsufficientCredits, ValidationFailed, NotFound
    (unknown account, or another organization's), IdempotencyConflict."""
    amount = parse_credits(amount)
    _check_organization(organization, account.organization_id, "account")
    _check_spendable(account)
    key = _check_key(idempotency_key, derived=True)
    sink = system_account_of(account.organization_id, Kind.USAGE)  # before the lock
    locked = _lock([account])[account.pk]
    txn, created = _create_once(
        LedgerTransaction,
        locked.organization_id,
        key,
        digest,
        kind=LedgerTransaction.Kind.USAGE,
        memo=(memo or "")[:500],
        metadata=metadata or {},
    )
    if not created:
        return txn, False
    _expire_due(locked, timezone.now())
    _ensure_available(locked, amount)
    _spend(locked, amount, txn, sink=sink)
    account.balance, account.held = locked.balance, locked.held
    return txn, True


def lots_expire(*, now: datetime | None = None) -> int:
    """Post expiry for what remains of lots past `expires_at` as of `now` (default: the current
    time; the beat task), one account at a time, except what pending holds need. Returns how many
    accounts were processed."""
    now = now or timezone.now()
    account_ids = (
        CreditLot.objects.filter(remaining__gt=0, expires_at__lte=now)
        .values_list("account_id", flat=True)
        .distinct()
    )
    count = 0
    for account in LedgerAccount.objects.filter(pk__in=list(account_ids)).order_by("pk"):
        with transaction.atomic():
            _expire_due(_lock([account])[account.pk], now)
            count += 1
    return count


# Reversals --------------------------------------------------------------------------------------


def _take_back(entry: LedgerEntry) -> list[tuple[CreditLot, Decimal]]:
    """Take the credits a positive `entry` put into its lot out again: from that lot, then from
    portions of the same credits (same origin) that came back to the same account since, as a
    grant's credits do after an allocation and a reclaim. Raises InsufficientCredits when they
    were spent, moved or expired since."""
    lot = CreditLot.objects.get(pk=entry.lot_id)
    root = lot.origin_id or lot.pk
    same_credits = CreditLot.objects.filter(
        Q(pk=root) | Q(origin_id=root), account_id=entry.account_id, remaining__gt=0
    ).exclude(pk=lot.pk)
    taken, left = [], entry.amount
    for candidate in [lot, *_burn_order(same_credits)]:
        portion = min(candidate.remaining, left)
        if portion > 0:
            candidate.remaining -= portion
            candidate.save(update_fields=["remaining"])
            taken.append((candidate, portion))
            left -= portion
    if left > 0:
        raise InsufficientCredits(
            f"Insufficient credits: {format_credits(left)} of the {format_credits(entry.amount)} "
            f"credits of lot #{lot.pk} were spent, moved or expired since.",
            needed=decimal_text(entry.amount),
            available=decimal_text(entry.amount - left),
        )
    return taken


@transaction.atomic
def ledger_reverse(
    *,
    txn: LedgerTransaction,
    idempotency_key: str | None = None,
    memo: str = "",
    actor: Actor,
    organization: Organization | None = None,
) -> LedgerTransaction:
    """Post the mirror image of `txn` (entries never change): every entry negated, burned lot
    portions given back to their lots, created portions taken out of theirs (or out of portions
    of the same credits that came back to the account since: see `_take_back`). Credits given
    back to a lot past its expiry expire at the next expiry run. A retry returns the first
    reversal.

    A usage transaction's cost leaves the budget windows its event was counted in.

    Raises Conflict (already reversed, or a reversal), InsufficientCredits (the credits were
    spent or moved since), IdempotencyConflict, NotFound (another organization's)."""
    _check_organization(organization, txn.organization_id, "transaction")
    organization = txn.organization
    key = _check_key(idempotency_key) if idempotency_key else f"reverse:{txn.pk}"
    digest = request_hash(op="reverse", txn=txn.pk)
    existing = _first_result(LedgerTransaction, organization.pk, key, digest)
    if existing is not None:
        return existing
    entries = list(txn.entries.select_related("account"))
    locked = _lock([e.account for e in entries])
    # A concurrent retry may have committed while we waited: return it, do not refuse it.
    existing = _first_result(LedgerTransaction, organization.pk, key, digest)
    if existing is not None:
        return existing
    if txn.kind == LedgerTransaction.Kind.REVERSAL:
        raise Conflict("A reversal is not reversed; post a new transaction.", reason="reversal")
    if LedgerTransaction.objects.filter(reverses=txn).exists():
        raise Conflict("This transaction is reversed already.", reason="already_reversed")
    reversal, created = _create_once(
        LedgerTransaction,
        organization.pk,
        key,
        digest,
        kind=LedgerTransaction.Kind.REVERSAL,
        reverses=txn,
        memo=(memo or "")[:500],
        created_by=actor.user,
    )
    if not created:
        return reversal
    taken: dict[int, Decimal] = defaultdict(Decimal)
    for entry in entries:
        if entry.amount > 0 and not entry.account.may_overdraw:
            taken[entry.account_id] += entry.amount
    for pk, amount in taken.items():
        _ensure_available(locked[pk], amount)
    legs = []
    for entry in entries:
        account = locked.get(entry.account_id, entry.account)
        if entry.lot_id is None:
            legs.append((account, -entry.amount, None))
        elif entry.amount < 0:  # a burned portion goes back to its lot
            lot = CreditLot.objects.get(pk=entry.lot_id)
            lot.remaining -= entry.amount
            lot.expired_at = None
            lot.save(update_fields=["remaining", "expired_at"])
            legs.append((account, -entry.amount, lot))
        else:
            legs += [(account, -portion, lot) for lot, portion in _take_back(entry)]
    _post_entries(reversal, legs)
    if txn.kind == LedgerTransaction.Kind.USAGE:
        # The cost leaves the budget windows it was counted in (after the account locks).
        usage = UsageEvent.objects.filter(transaction=txn).only("cost", "budget_windows").first()
        if usage is not None:
            budget_windows_give_back(window_ids=usage.budget_windows, amount=usage.cost)
    audit_record(
        organization=organization,
        actor=actor,
        action="ledger.reversed",
        target=txn,
        after={"reversal": reversal.pk, "kind": txn.kind},
    )
    return reversal


# Taking back what a refund returned -------------------------------------------------------------


@transaction.atomic
def credits_revoke(
    *,
    txn: LedgerTransaction,
    amount,
    idempotency_key: str,
    memo: str = "",
    actor: Actor,
    organization: Organization | None = None,
) -> tuple[LedgerTransaction | None, Decimal]:
    """Take back up to `amount` credits of the lot that the grant or purchase `txn` put on the
    pool, as far as they are still unspent there: min(`amount`, what remains of that lot and of
    portions of the same credits that came back to the pool, what the pool has available
    (balance - held)). Credits spent, expired or allocated to teams stay where they are (an
    admin may reclaim them). Posts a reversing transaction (kind `reversal`, pool -> the lot's
    source account, `metadata.revokes` = `txn`'s id) with its audit row `credits.revoked`; a
    refund of a purchase is the caller (`billing.services.payments`).

    Returns (transaction, credits taken); (None, 0) when nothing is left to take (nothing
    posted). A retry of `idempotency_key` with the same request returns the first result.
    Raises ValidationFailed (not a grant or purchase, bad amount or key), IdempotencyConflict,
    NotFound (another organization's transaction)."""
    _check_organization(organization, txn.organization_id, "transaction")
    amount = parse_credits(amount)
    organization = txn.organization
    key = _check_key(idempotency_key)
    digest = request_hash(op="revoke", txn=txn.pk, amount=amount)
    existing = _first_result(LedgerTransaction, organization.pk, key, digest)
    if existing is not None:
        return existing, Decimal(existing.metadata["taken"])
    if txn.kind not in (LedgerTransaction.Kind.GRANT, LedgerTransaction.Kind.PURCHASE):
        raise ValidationFailed({"transaction": ["Only a grant or a purchase is taken back."]})
    entries = list(txn.entries.select_related("account"))
    credit = next(e for e in entries if e.amount > 0 and e.lot_id is not None)
    debit = next(e for e in entries if e.amount < 0)
    locked = _lock([credit.account, debit.account])
    pool, source = locked[credit.account_id], locked[debit.account_id]
    existing = _first_result(LedgerTransaction, organization.pk, key, digest)
    if existing is not None:  # a concurrent retry committed while we waited for the locks
        return existing, Decimal(existing.metadata["taken"])
    _expire_due(pool, timezone.now())  # what expired is not there to take back
    lot = CreditLot.objects.get(pk=credit.lot_id)
    root = lot.origin_id or lot.pk
    same_credits = CreditLot.objects.filter(
        Q(pk=root) | Q(origin_id=root), account=pool, remaining__gt=0
    ).exclude(pk=lot.pk)
    left = min(amount, max(pool.available, Decimal(0)))
    taken: list[tuple[CreditLot, Decimal]] = []
    for candidate in [lot, *_burn_order(same_credits)]:
        portion = min(candidate.remaining, left)
        if portion > 0:
            taken.append((candidate, portion))
            left -= portion
    total = sum((portion for _, portion in taken), Decimal(0))
    if total == 0:
        return None, Decimal(0)
    revocation, created = _create_once(
        LedgerTransaction,
        organization.pk,
        key,
        digest,
        kind=LedgerTransaction.Kind.REVERSAL,
        memo=(memo or f"Taken back from #{txn.pk}")[:500],
        metadata={"revokes": txn.pk, "requested": str(amount), "taken": str(total)},
        created_by=actor.user,
    )
    if not created:
        return revocation, Decimal(revocation.metadata["taken"])
    for candidate, portion in taken:
        candidate.remaining -= portion
        candidate.save(update_fields=["remaining"])
    _post_entries(
        revocation, [*((pool, -portion, c) for c, portion in taken), (source, total, None)]
    )
    audit_record(
        organization=organization,
        actor=actor,
        action="credits.revoked",
        target=txn,
        after={"transaction": revocation.pk, "requested": amount, "taken": total},
    )
    return revocation, total
