"""The ledger's write path: grants, allocations and reclaims, debits, holds, expiry, reversals.

Every function here is atomic, takes an idempotency key unique per organization (a retry with the
same request returns the first result and posts nothing; the same key with another request raises
`IdempotencyConflict`), locks the accounts it changes with `select_for_update` in ascending id
order (so opposite transfers cannot deadlock), and checks and reserves in one step under those
locks (so parallel requests cannot spend past the balance). Sinks (usage, expiry) are never locked.

Rules: DESIGN.md "The ledger"; burn order as Lago, OpenMeter and Stripe credit grants (priority,
then earliest expiry, then age); holds as TigerBeetle's pending transfers.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from accounts.audit import Actor, audit_record
from accounts.models import Organization, Team
from portal.errors import (
    Conflict,
    IdempotencyConflict,
    InsufficientCredits,
    NotFound,
    ValidationFailed,
)
from portal.money import format_credits, parse_credits

from ..models import CreditLot, Hold, LedgerAccount, LedgerEntry, LedgerTransaction

Kind = LedgerAccount.Kind
LOT_FETCH = 50
MAX_HOLD_TIMEOUT = timedelta(hours=24)
DEFAULT_HOLD_TIMEOUT = timedelta(minutes=10)
MAX_KEY_LENGTH = 255  # the idempotency_key columns


class HoldNotPending(Conflict):
    """409: the hold was captured, voided or has expired."""

    type = "hold_not_pending"


def request_hash(**request) -> str:
    """sha256 of a canonical JSON form of a request, to tell a retry from a different request."""
    payload = json.dumps(request, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder)
    return hashlib.sha256(payload.encode()).hexdigest()


def new_idempotency_key() -> str:
    return f"auto:{uuid.uuid4()}"


def _check_key(key, *, derived: bool = False) -> str:
    """A non-blank idempotency key that fits the column (ValidationFailed). A `derived` key
    (`usage:<event id>`, `capture:<hold key>`) too long for it becomes its sha256 (the same for
    every retry)."""
    if not isinstance(key, str) or not key.strip() or (len(key) > MAX_KEY_LENGTH and not derived):
        raise ValidationFailed(
            {"idempotency_key": [f"A non-blank string of at most {MAX_KEY_LENGTH} characters."]}
        )
    if len(key) > MAX_KEY_LENGTH:
        return f"sha256:{hashlib.sha256(key.encode()).hexdigest()}"
    return key


def _check_organization(organization: Organization | None, organization_id, what: str) -> None:
    """NotFound (never a leak) when a caller scoped to `organization` names another's object."""
    if organization is not None and organization.pk != organization_id:
        raise NotFound(f"No such {what}.")


def _check_spendable(account: LedgerAccount) -> None:
    if account.kind not in LedgerAccount.HOLDS_LOTS:
        raise ValidationFailed({"account": ["Only a pool or team account can be spent or held."]})


# Accounts ---------------------------------------------------------------------------------------


def system_account(organization: Organization, kind: str) -> LedgerAccount:
    """The organization's pool or system account of `kind`, created on first use.
    Raises ValidationFailed for an unknown kind (or `team`: see `team_account`)."""
    if kind not in Kind.values or kind == Kind.TEAM:
        raise ValidationFailed({"kind": [f"Unknown system account kind '{kind}'."]})
    account = LedgerAccount.objects.filter(organization=organization, kind=kind).first()
    if account is not None:
        return account
    try:
        with transaction.atomic():
            return LedgerAccount.objects.create(
                organization=organization, kind=kind,
                may_overdraw=kind in LedgerAccount.SOURCES | LedgerAccount.SINKS,
            )
    except IntegrityError:
        return LedgerAccount.objects.get(organization=organization, kind=kind)


def team_account(team: Team) -> LedgerAccount:
    """The team's own allocation account, created on first use."""
    account = LedgerAccount.objects.filter(team=team).first()
    if account is not None:
        return account
    try:
        with transaction.atomic():
            return LedgerAccount.objects.create(
                organization_id=team.organization_id, kind=Kind.TEAM, team=team
            )
    except IntegrityError:
        return LedgerAccount.objects.get(team=team)


def spending_account(organization: Organization, team: Team | None) -> LedgerAccount:
    """Where a request of `team` is paid from: the team's allocation, or the pool for a team that
    draws on it (`Team.funding == pool`) and for requests without a team. Raises NotFound for a
    team of another organization."""
    if team is not None and team.organization_id != organization.pk:
        raise NotFound("No such team.")
    if team is None or team.funding == Team.Funding.POOL:
        return system_account(organization, Kind.POOL)
    return team_account(team)


def _lock(accounts: Iterable[LedgerAccount]) -> dict[int, LedgerAccount]:
    """Lock the non-sink accounts among `accounts`, in ascending id order; fresh rows by id.
    Raises NotFound for an account that is not in the database."""
    accounts = [a for a in accounts if a.kind not in LedgerAccount.SINKS]
    if any(a.pk is None for a in accounts):
        raise NotFound("No such account.")
    ids = sorted({a.pk for a in accounts})
    rows = LedgerAccount.objects.select_for_update().filter(pk__in=ids).order_by("pk")
    locked = {a.pk: a for a in rows}
    if len(locked) != len(ids):
        raise NotFound("No such account.")
    return locked


def _first_result(model, organization_id: int | None, key: str, digest: str):
    """The earlier result of an idempotency key, or None; IdempotencyConflict on another request."""
    existing = model.objects.filter(organization_id=organization_id, idempotency_key=key).first()
    if existing is not None and existing.request_hash != digest:
        raise IdempotencyConflict(
            f"The idempotency key '{key}' was used for a different request.",
            idempotency_key=key,
        )
    return existing


def _create_once(model, organization_id: int, key: str, digest: str, **fields):
    """Insert the row that claims `key` (in a savepoint). Returns (row, created). A concurrent
    first use of the key has committed by the time the unique index lets us go on (READ
    COMMITTED: the lookup after the IntegrityError sees it); IdempotencyConflict if it was
    another request."""
    try:
        with transaction.atomic():
            return model.objects.create(
                organization_id=organization_id, idempotency_key=key, request_hash=digest,
                **fields,
            ), True
    except IntegrityError:
        existing = _first_result(model, organization_id, key, digest)
        if existing is None:
            raise
        return existing, False


# Lots -------------------------------------------------------------------------------------------


def _burn_order(qs):
    return qs.order_by("priority", F("expires_at").asc(nulls_last=True), "created_at", "id")


def _burn(
    account: LedgerAccount, amount: Decimal, *, live_at: datetime | None = None
) -> list[tuple[CreditLot, Decimal]]:
    """Take `amount` from the account's lots in burn order; the account is locked by the caller,
    which guards its lots. With `live_at`, lots expired by then (kept only because pending holds
    need them) are left alone. Returns the (lot, portion) pairs taken."""
    taken: list[tuple[CreditLot, Decimal]] = []
    left = amount
    lots_qs = CreditLot.objects.filter(account=account, remaining__gt=0)
    if live_at is not None:
        lots_qs = lots_qs.exclude(expires_at__lte=live_at)
    while left > 0:
        lots = list(_burn_order(lots_qs).exclude(pk__in=[lot.pk for lot, _ in taken])[:LOT_FETCH])
        if not lots:
            raise AssertionError(f"lots of account {account.pk} do not cover its balance")
        for lot in lots:
            portion = min(lot.remaining, left)
            lot.remaining -= portion
            lot.save(update_fields=["remaining"])
            taken.append((lot, portion))
            left -= portion
            if left == 0:
                break
    return taken


def _expire_due(account: LedgerAccount, now: datetime) -> LedgerTransaction | None:
    """Post one expiry transaction for the account's lots past `expires_at` (the account is
    locked). Only what no pending hold needs expires now (the balance never drops below `held`);
    the rest goes once the holds are resolved. Returns the transaction, or None."""
    due = CreditLot.objects.filter(account=account, remaining__gt=0, expires_at__lte=now)
    free = account.balance - account.held
    legs: list[tuple[LedgerAccount, Decimal, CreditLot | None]] = []
    for lot in due.order_by("expires_at", "id"):
        portion = min(lot.remaining, free)
        if portion <= 0:
            break
        lot.remaining -= portion
        free -= portion
        if lot.remaining == 0:
            lot.expired_at = now
        lot.save(update_fields=["remaining", "expired_at"])
        legs.append((account, -portion, lot))
    if not legs:
        return None
    total = -sum(amount for _, amount, _ in legs)
    lots = [lot.pk for _, _, lot in legs]
    # A fresh key each time: a lot refilled by a reversal can expire again with the same amount.
    txn = LedgerTransaction.objects.create(
        organization_id=account.organization_id, kind=LedgerTransaction.Kind.EXPIRY,
        idempotency_key=f"expiry:{account.pk}:{uuid.uuid4()}",
        request_hash=request_hash(op="expiry", account=account.pk, lots=lots, total=total),
        memo=f"Expiry of lot(s) {', '.join(f'#{pk}' for pk in lots)}"[:500],
        metadata={"lots": lots, "as_of": now.isoformat()},
    )
    sink = system_account(account.organization, Kind.EXPIRY)
    _post_entries(txn, [*legs, (sink, total, None)])
    return txn


def _post_entries(
    txn: LedgerTransaction, legs: list[tuple[LedgerAccount, Decimal, CreditLot | None]]
) -> None:
    """Write the entries of `txn` and move the cached balances of non-sink accounts (locked by
    the caller). The entries must sum to zero (the database checks it again at commit)."""
    if len(legs) < 2 or sum(amount for _, amount, _ in legs) != 0:
        raise AssertionError(f"unbalanced transaction: {legs}")
    LedgerEntry.objects.bulk_create(
        [LedgerEntry(transaction=txn, account=a, amount=amt, lot=lot) for a, amt, lot in legs]
    )
    deltas: dict[int, Decimal] = defaultdict(Decimal)
    accounts = {}
    for account, amount, _ in legs:
        if account.kind not in LedgerAccount.SINKS:
            deltas[account.pk] += amount
            accounts[account.pk] = account
    for pk, delta in deltas.items():
        if delta:
            accounts[pk].balance += delta
            LedgerAccount.objects.filter(pk=pk).update(balance=F("balance") + delta)


def _ensure_available(account: LedgerAccount, amount: Decimal, **context) -> None:
    if account.available < amount:
        raise InsufficientCredits(
            f"Insufficient credits: {format_credits(amount)} needed, "
            f"{format_credits(account.available)} available",
            needed=str(amount),
            available=str(account.available),
            account=account.kind,
            **context,
        )


# Grants, allocations, reclaims ------------------------------------------------------------------


@transaction.atomic
def credits_grant(
    *, organization: Organization, amount, source: str = CreditLot.Source.GRANT,
    priority: int = 50, expires_at: datetime | None = None, memo: str = "",
    idempotency_key: str | None = None, actor: Actor,
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
    digest = request_hash(op="grant", amount=amount, source=source, priority=priority,
                          expires_at=expires_at)
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
        LedgerTransaction, organization.pk, key, digest,
        kind=LedgerTransaction.Kind.PURCHASE if source == "purchase" else Kind_.GRANT,
        memo=memo, created_by=actor.user,
    )
    if not created:
        return txn
    lot = CreditLot.objects.create(
        organization=organization, account=pool, source=source, original_amount=amount,
        remaining=amount, priority=priority, expires_at=expires_at, memo=memo,
    )
    _post_entries(txn, [(locked[origin.pk], -amount, None), (locked[pool.pk], amount, lot)])
    audit_record(organization=organization, actor=actor, target=txn,
                 action={"grant": "credits.granted", "purchase": "credits.purchased",
                         "promotion": "credits.promoted"}[source],
                 after={"amount": amount, "lot": lot.pk, "priority": priority,
                        "expires_at": expires_at, "idempotency_key": key})
    return txn


def _move(
    *, organization: Organization, source: LedgerAccount, target: LedgerAccount, amount,
    kind: str, idempotency_key: str | None, memo: str, actor: Actor, team: Team,
) -> LedgerTransaction:
    amount = parse_credits(amount)
    key = _check_key(idempotency_key) if idempotency_key else new_idempotency_key()
    digest = request_hash(op=kind, amount=amount, source=source.pk, target=target.pk)
    existing = _first_result(LedgerTransaction, organization.pk, key, digest)
    if existing is not None:
        return existing
    locked = _lock([source, target])
    source, target = locked[source.pk], locked[target.pk]
    txn, created = _create_once(LedgerTransaction, organization.pk, key, digest, kind=kind,
                                memo=(memo or "")[:500], created_by=actor.user)
    if not created:
        return txn
    now = timezone.now()
    _expire_due(source, now)
    _ensure_available(source, amount)
    legs = []
    # Live lots only: what expired is kept only for pending holds and must not move.
    for lot, portion in _burn(source, amount, live_at=now):
        portion_lot = CreditLot.objects.create(
            organization=organization, account=target, source=lot.source,
            origin=lot.origin or lot, original_amount=portion, remaining=portion,
            priority=lot.priority, expires_at=lot.expires_at, memo=lot.memo,
        )
        legs += [(source, -portion, lot), (target, portion, portion_lot)]
    _post_entries(txn, legs)
    audit_record(organization=organization, actor=actor,
                 action="credits.allocated" if kind == "allocation" else "credits.reclaimed",
                 target=team,
                 after={"amount": amount, "transaction": txn.pk, "idempotency_key": key})
    return txn


@transaction.atomic
def credits_allocate(*, team: Team, amount, idempotency_key: str | None = None, memo: str = "",
                     actor: Actor, organization: Organization | None = None) -> LedgerTransaction:
    """Move `amount` credits from the pool to the team's account, as lot portions that keep their
    priority and expiry. With `organization`, the team must be one of its own (else NotFound).
    Raises InsufficientCredits, ValidationFailed, IdempotencyConflict, NotFound."""
    _check_organization(organization, team.organization_id, "team")
    if team.funding == Team.Funding.POOL:
        raise ValidationFailed({"team": ["This team draws on the pool; it has no allocation."]})
    organization = team.organization
    return _move(organization=organization, source=system_account(organization, Kind.POOL),
                 target=team_account(team), amount=amount,
                 kind=LedgerTransaction.Kind.ALLOCATION, idempotency_key=idempotency_key,
                 memo=memo, actor=actor, team=team)


@transaction.atomic
def credits_reclaim(*, team: Team, amount, idempotency_key: str | None = None, memo: str = "",
                    actor: Actor, organization: Organization | None = None) -> LedgerTransaction:
    """Move `amount` credits back from the team's account to the pool (lot portions keep their
    priority and expiry). With `organization`, the team must be one of its own (else NotFound).
    Raises InsufficientCredits, ValidationFailed, IdempotencyConflict, NotFound."""
    _check_organization(organization, team.organization_id, "team")
    organization = team.organization
    return _move(organization=organization, source=team_account(team),
                 target=system_account(organization, Kind.POOL), amount=amount,
                 kind=LedgerTransaction.Kind.RECLAIM, idempotency_key=idempotency_key,
                 memo=memo, actor=actor, team=team)


# Debits and holds -------------------------------------------------------------------------------


@transaction.atomic
def ledger_debit(
    *, account: LedgerAccount, amount, idempotency_key: str, digest: str,
    metadata: dict | None = None, memo: str = "", organization: Organization | None = None,
) -> tuple[LedgerTransaction, bool]:
    """Spend `amount` credits (> 0) from a pool or team `account` into the usage sink, burning its
    lots. Returns (transaction, created); a retry of `idempotency_key` with the same `digest`
    returns the first transaction. Raises InsufficientCredits, ValidationFailed, NotFound
    (unknown account, or another organization's), IdempotencyConflict."""
    amount = parse_credits(amount)
    _check_organization(organization, account.organization_id, "account")
    _check_spendable(account)
    key = _check_key(idempotency_key, derived=True)
    locked = _lock([account])[account.pk]
    txn, created = _create_once(
        LedgerTransaction, locked.organization_id, key, digest,
        kind=LedgerTransaction.Kind.USAGE, memo=(memo or "")[:500], metadata=metadata or {},
    )
    if not created:
        return txn, False
    _expire_due(locked, timezone.now())
    _ensure_available(locked, amount)
    _spend(locked, amount, txn)
    account.balance, account.held = locked.balance, locked.held
    return txn, True


def _spend(account: LedgerAccount, amount: Decimal, txn: LedgerTransaction) -> None:
    sink = system_account(account.organization, Kind.USAGE)
    legs = [(account, -portion, lot) for lot, portion in _burn(account, amount)]
    _post_entries(txn, [*legs, (sink, amount, None)])


@transaction.atomic
def hold_authorize(
    *, account: LedgerAccount, amount, idempotency_key: str, timeout: timedelta | None = None,
    extra_digest: str = "", organization: Organization | None = None, **context,
) -> tuple[Hold, bool]:
    """Reserve `amount` credits on a pool or team `account` until `now + timeout` (default
    10 min, from 1 s to 24 h). Returns (hold, created); a retry of `idempotency_key` with the same
    request returns the first hold, also when it raced this one. Raises InsufficientCredits,
    ValidationFailed, IdempotencyConflict, NotFound (unknown or another organization's account)."""
    amount = parse_credits(amount)
    _check_key(idempotency_key)
    timeout = DEFAULT_HOLD_TIMEOUT if timeout is None else timeout
    if not isinstance(timeout, timedelta) or not MIN_HOLD_TIMEOUT <= timeout <= MAX_HOLD_TIMEOUT:
        raise ValidationFailed({"timeout": ["From 1 second to 24 hours."]})
    _check_organization(organization, account.organization_id, "account")
    _check_spendable(account)
    digest = request_hash(op="hold", amount=amount, account=account.pk, extra=extra_digest)
    existing = _first_result(Hold, account.organization_id, idempotency_key, digest)
    if existing is not None:
        return existing, False
    locked = _lock([account])[account.pk]
    # A concurrent first use of the key may have committed while we waited for the lock: it must
    # be returned, not checked again against the credits it reserved.
    existing = _first_result(Hold, locked.organization_id, idempotency_key, digest)
    if existing is not None:
        return existing, False
    _expire_due(locked, timezone.now())
    _ensure_available(locked, amount)
    hold, created = _create_once(
        Hold, locked.organization_id, idempotency_key, digest, account=locked, amount=amount,
        expires_at=timezone.now() + timeout, **context,
    )
    if created:
        LedgerAccount.objects.filter(pk=locked.pk).update(held=F("held") + amount)
    return hold, created


def _lock_hold(hold: Hold) -> tuple[Hold, LedgerAccount]:
    """Lock the hold's account, then the hold (the accounts-first order of every write)."""
    if hold.pk is None:
        raise NotFound("No such hold.")
    account = _lock([hold.account])[hold.account_id]
    locked = Hold.objects.select_for_update().filter(pk=hold.pk).first()
    if locked is None:
        raise NotFound("No such hold.")
    return locked, account


def _release(hold: Hold, account: LedgerAccount, status: str) -> None:
    LedgerAccount.objects.filter(pk=account.pk).update(held=F("held") - hold.amount)
    account.held -= hold.amount
    hold.status = status
    hold.resolved_at = timezone.now()


@transaction.atomic
def hold_capture(*, hold: Hold, amount, metadata: dict | None = None,
                 organization: Organization | None = None) -> LedgerTransaction | None:
    """Post the actual cost `amount` (>= 0) of a pending hold and release the rest. Above the hold,
    the difference is taken when available. Capturing a captured hold again with the same amount
    returns the first result. Lots that expired while the hold needed them expire afterwards.

    Raises HoldNotPending (voided, expired, or captured with another amount),
    InsufficientCredits (the excess is not available), ValidationFailed, NotFound."""
    amount = parse_credits(amount, allow_zero=True)
    _check_organization(organization, hold.organization_id, "hold")
    hold, account = _lock_hold(hold)
    if hold.status == Hold.Status.CAPTURED and hold.captured_amount == amount:
        return hold.transaction
    now = timezone.now()
    if hold.status != Hold.Status.PENDING or hold.expires_at <= now:
        raise HoldNotPending(
            f"This hold is {hold.status if hold.status != 'pending' else 'expired'}.",
            hold_status=hold.status if hold.status != "pending" else "expired",
        )
    _release(hold, account, Hold.Status.CAPTURED)
    txn = None
    if amount > 0:
        _ensure_available(account, amount, hold=hold.pk)
        txn, created = _create_once(
            LedgerTransaction, hold.organization_id,
            _check_key(f"capture:{hold.idempotency_key}", derived=True),
            request_hash(hold=hold.pk, amount=amount), kind=LedgerTransaction.Kind.USAGE,
            metadata=metadata or {},
        )
        if not created:
            raise IdempotencyConflict("The capture's idempotency key is taken.", hold=hold.pk)
        _spend(account, amount, txn)
    hold.captured_amount = amount
    hold.transaction = txn
    hold.save(update_fields=["status", "resolved_at", "captured_amount", "transaction"])
    _expire_due(account, now)
    return txn


@transaction.atomic
def hold_void(*, hold: Hold, organization: Organization | None = None) -> Hold:
    """Release a pending hold entirely. Voiding a voided hold returns it; others raise
    HoldNotPending."""
    _check_organization(organization, hold.organization_id, "hold")
    hold, account = _lock_hold(hold)
    if hold.status == Hold.Status.VOIDED:
        return hold
    if hold.status != Hold.Status.PENDING:
        raise HoldNotPending(f"This hold is {hold.status}.", hold_status=hold.status)
    _release(hold, account, Hold.Status.VOIDED)
    hold.save(update_fields=["status", "resolved_at"])
    _expire_due(account, timezone.now())
    return hold


def holds_expire(*, now: datetime | None = None) -> int:
    """Release every pending hold past its `expires_at` as of `now` (default: the current time;
    the beat task), then expire what the hold kept of lots past their expiry. Returns how many
    holds were released."""
    now = now or timezone.now()
    count = 0
    for hold in Hold.objects.filter(status=Hold.Status.PENDING, expires_at__lte=now).order_by("id"):
        with transaction.atomic():
            hold, account = _lock_hold(hold)
            if hold.status == Hold.Status.PENDING:
                _release(hold, account, Hold.Status.EXPIRED)
                hold.save(update_fields=["status", "resolved_at"])
                _expire_due(account, now)
                count += 1
    return count


def lots_expire(*, now: datetime | None = None) -> int:
    """Post expiry for what remains of lots past `expires_at` as of `now` (default: the current
    time; the beat task), one account at a time, except what pending holds need. Returns how many
    accounts were processed."""
    now = now or timezone.now()
    account_ids = (
        CreditLot.objects.filter(remaining__gt=0, expires_at__lte=now)
        .values_list("account_id", flat=True).distinct()
    )
    count = 0
    for account in LedgerAccount.objects.filter(pk__in=list(account_ids)).order_by("pk"):
        with transaction.atomic():
            _expire_due(_lock([account])[account.pk], now)
            count += 1
    return count


# Reversals --------------------------------------------------------------------------------------


@transaction.atomic
def ledger_reverse(*, txn: LedgerTransaction, idempotency_key: str | None = None,
                   memo: str = "", actor: Actor,
                   organization: Organization | None = None) -> LedgerTransaction:
    """Post the mirror image of `txn` (entries never change): every entry negated, burned lot
    portions given back to their lots, created portions taken out of theirs. Credits given back to
    a lot past its expiry expire at the next expiry run. A retry returns the first reversal.

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
        LedgerTransaction, organization.pk, key, digest, kind=LedgerTransaction.Kind.REVERSAL,
        reverses=txn, memo=(memo or "")[:500], created_by=actor.user,
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
        lot = None
        if entry.lot_id is not None:
            lot = CreditLot.objects.get(pk=entry.lot_id)
            if lot.remaining < entry.amount:
                raise InsufficientCredits(
                    f"Insufficient credits: the {format_credits(entry.amount)} credits of lot "
                    f"#{lot.pk} were spent or moved since.",
                    needed=str(entry.amount), available=str(lot.remaining),
                )
            lot.remaining -= entry.amount
            if lot.remaining > 0:
                lot.expired_at = None
            lot.save(update_fields=["remaining", "expired_at"])
        legs.append((locked.get(entry.account_id, entry.account), -entry.amount, lot))
    _post_entries(reversal, legs)
    audit_record(organization=organization, actor=actor, action="ledger.reversed",
                 target=txn, after={"reversal": reversal.pk, "kind": txn.kind})
    return reversal
