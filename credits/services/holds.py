"""Holds: reserve credits for a request before its cost is known, then capture the actual cost,
void the hold, or let it expire (as TigerBeetle's pending transfers). A hold moves an account's
`held`, not its balance; its lots are spent only at capture.

`hold_authorize_in_transaction` is the reservation in the caller's transaction
(`credits.services.usage.authorization_create` adds the budgets and the model's price to it);
`hold_authorize` is the same in a transaction of its own. Every write locks the hold's account,
then its budget windows, then the hold (`_lock_hold`): the order of every write, docs/ledger.md.
The posting primitives are in `credits.services.ledger_core`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Organization
from portal.errors import (
    ApplicationError,
    Conflict,
    IdempotencyConflict,
    NotFound,
    ValidationFailed,
)
from portal.money import credits_expression, parse_credits

from ..models import Hold, LedgerAccount, LedgerTransaction
from .budgets import budget_windows_release, lock_hold_windows
from .ledger_core import (
    _check_key,
    _check_organization,
    _check_spendable,
    _create_once,
    _ensure_available,
    _expire_due,
    _first_result,
    _lock,
    _spend,
    hold_create,
    hold_insert_unless_due,
    request_hash,
    system_account_of,
)

Kind = LedgerAccount.Kind
MIN_HOLD_TIMEOUT = timedelta(seconds=1)
MAX_HOLD_TIMEOUT = timedelta(hours=24)
DEFAULT_HOLD_TIMEOUT = timedelta(minutes=10)


class HoldNotPending(Conflict):
    """409: the hold was captured, voided or has expired."""

    type = "hold_not_pending"


def hold_authorize_in_transaction(
    *,
    account: LedgerAccount,
    amount,
    idempotency_key: str,
    timeout: timedelta | None = None,
    extra_digest: str = "",
    organization: Organization | None = None,
    account_locked: bool = False,
    check: Callable[[], None] | None = None,
    **context,
) -> tuple[Hold, bool]:
    """Reserve `amount` credits on a pool or team `account` until `now + timeout` (default
    10 min, from 1 s to 24 h). Returns (hold, created); a retry of `idempotency_key` with the same
    request returns the first hold, also when it raced this one. Raises InsufficientCredits,
    ValidationFailed, IdempotencyConflict, NotFound (unknown or another organization's account).

    `account_locked`: the caller has locked `account` in this transaction already (the row as
    locked), so it is not locked again. `check`: called once a new hold is to be made (not for
    a retry), after the balance is checked, to refuse it by raising (the budgets of
    `credits.services.usage.authorization_create`).

    Runs in the caller's transaction, without a savepoint of its own (an error leaves it to roll
    back): `authorization_create` calls it so; `hold_authorize` is the same in a transaction
    (or savepoint) of its own."""
    amount = parse_credits(amount)
    _check_key(idempotency_key)
    timeout = DEFAULT_HOLD_TIMEOUT if timeout is None else timeout
    if not isinstance(timeout, timedelta) or not MIN_HOLD_TIMEOUT <= timeout <= MAX_HOLD_TIMEOUT:
        raise ValidationFailed({"timeout": ["From 1 second to 24 hours."]})
    _check_organization(organization, account.organization_id, "account")
    _check_spendable(account)
    digest = request_hash(op="hold", amount=amount, account=account.pk, extra=extra_digest)
    if account_locked:
        locked = account
    else:
        existing = _first_result(Hold, account.organization_id, idempotency_key, digest)
        if existing is not None:
            return existing, False
        locked = _lock([account])[account.pk]
    # A retry of the key (or a concurrent first use that committed while we waited for the lock)
    # returns the first hold, whatever the credits now: a refusal counts only for a new key.
    # Lots past expiry are expired first (below); an expiry lowers what is available, so a
    # refusal before it stands after it.
    _refused_unless_retry(locked, amount, check, idempotency_key, digest)
    now = timezone.now()
    hold = Hold(
        organization_id=locked.organization_id,
        idempotency_key=idempotency_key,
        request_hash=digest,
        account=locked,
        amount=amount,
        expires_at=now + timeout,
        **context,
    )
    inserted, created, due = hold_insert_unless_due(locked, hold, now)
    if due:  # rare: expire them, check again, then insert
        _expire_due(locked, now, due)
        _refused_unless_retry(locked, amount, check, idempotency_key, digest)
        inserted, created = hold_create(locked, hold)
    if created:
        locked.held += amount  # the row as committed (credits.hooks reads it)
    return inserted, created


def _refused_unless_retry(locked, amount, check, idempotency_key: str, digest: str) -> None:
    """Raise the refusal of a new hold (the credits, then `check`), unless the key has a hold
    already: then it is a retry, and the caller's insert finds it."""
    try:
        _ensure_available(locked, amount)
        if check is not None:
            check()
    except ApplicationError:
        if _first_result(Hold, locked.organization_id, idempotency_key, digest) is None:
            raise


@transaction.atomic
def hold_authorize(**arguments) -> tuple[Hold, bool]:
    """`hold_authorize_in_transaction` (same keyword arguments, result and errors) in a
    transaction of its own, or a savepoint of the caller's."""
    return hold_authorize_in_transaction(**arguments)


def _lock_hold(hold: Hold) -> tuple[Hold, LedgerAccount]:
    """Lock the hold's account, then its budget windows (ascending id), then the hold: the
    order of every write (docs/ledger.md). A hold's windows never change once it is made."""
    row = Hold.objects.filter(pk=hold.pk).select_related("account").first() if hold.pk else None
    if row is None:
        raise NotFound("No such hold.")
    account = _lock([row.account])[row.account_id]
    lock_hold_windows(row.budget_windows)
    return Hold.objects.select_for_update().get(pk=hold.pk), account


def _release(hold: Hold, account: LedgerAccount, status: str) -> None:
    """Release the hold's reservation from its account and its budget windows (locked)."""
    LedgerAccount.objects.filter(pk=account.pk).update(
        held=credits_expression(F("held") - hold.amount)
    )
    budget_windows_release(window_ids=hold.budget_windows, amount=hold.amount)
    account.held -= hold.amount
    hold.status = status
    hold.resolved_at = timezone.now()


@transaction.atomic
def hold_capture(
    *, hold: Hold, amount, metadata: dict | None = None, organization: Organization | None = None
) -> LedgerTransaction | None:
    """Post the actual cost `amount` (>= 0) of a pending hold and release the rest. Above the hold,
    the difference is taken when available. Capturing a captured hold again with the same amount
    returns the first result. It spends first the lots the hold kept past their expiry; what
    remains of those expires right after.

    Raises HoldNotPending (voided, expired, or captured with another amount),
    InsufficientCredits (the excess is not available), ValidationFailed, NotFound."""
    amount = parse_credits(amount, allow_zero=True)
    _check_organization(organization, hold.organization_id, "hold")
    sink = system_account_of(hold.organization_id, Kind.USAGE)  # created before any lock
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
            LedgerTransaction,
            hold.organization_id,
            _check_key(f"capture:{hold.idempotency_key}", derived=True),
            request_hash(hold=hold.pk, amount=amount),
            kind=LedgerTransaction.Kind.USAGE,
            metadata=metadata or {},
        )
        if not created:
            raise IdempotencyConflict("The capture's idempotency key is taken.", hold=hold.pk)
        _spend(account, amount, txn, expired_first_at=now, sink=sink)
    hold.captured_amount = amount
    hold.transaction = txn
    hold.save(update_fields=["status", "resolved_at", "captured_amount", "transaction"])
    _expire_due(account, now)
    return txn


@transaction.atomic
def hold_void(*, hold: Hold, organization: Organization | None = None) -> Hold:
    """Release a pending hold entirely (then expire what it kept of lots past their expiry).
    Voiding a voided hold returns it; others raise HoldNotPending; NotFound for another
    organization's hold."""
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
