"""Automatic top-up: when an organization's pool falls below its rule's threshold, charge its
saved card off-session (Stripe) and grant the credits through `order_settle`.

The rule (`TopUpRule`, one per organization): a `threshold` (credits), either a fixed `amount`
(USD = credits) or a `target_balance` (the whole shortfall `target - available`, rounded up to
the cent, in one charge), a `monthly_cap` (USD charged per calendar month in the organization's
time zone, tax included) and optionally `requires_approval` by a billing member.

How a top-up starts and ends:
1. A debit that leaves the pool below the threshold: `credits.hooks` calls `topup_pool_changed`
   after its commit, which compares the pool's available credits with the cached threshold (no
   database statement; kept a second in the process over Redis, so above the threshold no round
   trip either) and queues `topup_run` (at most one queued per
   organization: a cache key the task removes when it starts). The beat sweep (`topup_sweep`)
   starts what no debit did (a rule saved while the pool was already low, a lost task).
2. `topup_start`, under the rule's row lock: the rule is enabled and not backing off, the pool is
   below the threshold, nothing is in flight, a card is saved, and this month's top-ups
   (pending and paid orders) plus this one stay within the cap. It creates the order (purpose
   `topup`, provider `stripe`) and the `TopUp` (`charging`, or `awaiting_approval`). At most one
   top-up per organization is in flight: a partial unique constraint (`topup_one_in_flight`),
   whatever the callers do.
3. `topup_charge`: a PaymentIntent with `off_session=true, confirm=true` whose idempotency key
   is the order's public id (a resent charge is never a second charge). `succeeded` settles
   the order (`order_settle`: the grant and the paid invoice, once; the Stripe webhook's
   `payment_intent.succeeded` may settle it too, harmlessly). A card error (declined,
   authentication required) fails the order, backs the rule off (doubling from
   TOPUP_BACKOFF_SECONDS up to TOPUP_BACKOFF_MAX_SECONDS) and tells `topup.failed` once. A
   provider that does not answer leaves the top-up `charging`: the sweep resends the same
   charge every TOPUP_CHARGE_RETRY_SECONDS, and fails it after TOPUP_CHARGE_GIVE_UP_SECONDS.

Lock order: the rule row, the top-up row, then what `order_create` / `order_settle` lock (the
order, the ledger's accounts, the document sequence, the organization's audit chain). Debits
never take the rule: their hook runs after their commit.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import F, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.audit import Actor, audit_record
from accounts.models import Organization
from credits.models import LedgerAccount
from credits.periods import window_bounds
from notifications.services import notify
from portal.errors import Conflict, ValidationFailed
from portal.money import CENT, parse_usd
from portal.process_cache import ProcessCache

from ..models import Order, TopUp, TopUpRule
from ..providers import ProviderUnavailable
from ..providers import stripe_offsession as stripe
from .documents import billing_profile_of, tax_of
from .orders import PaymentMismatch, order_create, order_settle, order_status_set, purchase_limits

log = logging.getLogger("billing.topup")
SYSTEM = Actor(system="topup")
State = TopUp.State

RULE_CACHE_SECONDS = 60  # a rule saved in another process is seen within this (and on save)
KICK_SECONDS = 300  # a queued run that never started (lost) no longer blocks the next after this
IN_FLIGHT_QUIET_SECONDS = 3600  # debits do not queue runs while one is in flight (cleared at end)


class TopUpNotAwaiting(Conflict):
    """409: the top-up was already approved, rejected, charged or failed."""

    type = "topup_not_awaiting_approval"


# The trigger (the debit path's side: cheap) ------------------------------------------------------


def _keys(organization_id: int) -> tuple[str, str, str]:
    return (
        f"topup:rule:{organization_id}",
        f"topup:quiet:{organization_id}",
        f"topup:kick:{organization_id}",
    )


# The threshold as this process last read it, kept for a second: a debit of an organization
# without a rule, or above its threshold, makes no round trip at all (one a second per process).
_THRESHOLDS: ProcessCache[Decimal | None] = ProcessCache(seconds=1)


def topup_pool_changed(organization_id: int, available: Decimal) -> bool:
    """`credits.hooks` callback, after the commit of a change to the pool: queue `topup_run`
    when `available` (credits) is below the organization's enabled rule's threshold, the rule is
    not quiet (backing off, capped for the month, a top-up in flight) and no run is queued.
    The threshold comes from this process (`_THRESHOLDS`), else the shared cache, else the
    database; only below it is the shared cache read (the quiet time) and written (the queued
    run). Returns True when a run was queued."""
    threshold = _THRESHOLDS.get(organization_id, lambda: _threshold(organization_id))
    if threshold is None or available >= threshold:
        return False
    _, quiet_key, kick_key = _keys(organization_id)
    quiet = cache.get(quiet_key)
    if quiet is not None and timezone.now().timestamp() < quiet:
        return False
    if not cache.add(kick_key, 1, KICK_SECONDS):
        return False  # a run is queued: it reads the balance when it starts
    from ..tasks import topup_run

    topup_run.delay(organization_id)
    return True


def _threshold(organization_id: int) -> Decimal | None:
    """The enabled rule's threshold (credits), or None: from the shared cache, else the database
    (then cached there for RULE_CACHE_SECONDS)."""
    rule_key = _keys(organization_id)[0]
    threshold = cache.get(rule_key)
    if threshold is None:
        found = (
            TopUpRule.objects.filter(organization_id=organization_id, enabled=True)
            .values_list("threshold", flat=True)
            .first()
        )
        threshold = "" if found is None else str(found)
        cache.set(rule_key, threshold, RULE_CACHE_SECONDS)
    return None if threshold == "" else Decimal(threshold)


def _quiet(organization_id: int, until: datetime) -> None:
    """Debits queue no run for the organization before `until` (cached)."""
    seconds = int((until - timezone.now()).total_seconds()) + 1
    if seconds > 0:
        cache.set(_keys(organization_id)[1], until.timestamp(), seconds)


def _wake(organization_id: int) -> None:
    """Forget the cached threshold and quiet time: the next debit looks again (in this process
    at once, in the others within `_THRESHOLDS`' second)."""
    cache.delete_many(list(_keys(organization_id)[:2]))
    _THRESHOLDS.evict_now()


# The rule -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleInput:
    """A rule as given (strings of decimals or Decimals); validated by `topup_rule_set`."""

    enabled: bool
    threshold: object
    monthly_cap: object
    amount: object = None
    target_balance: object = None
    requires_approval: bool = False


def _parse_rule(data: RuleInput) -> dict:
    errors: dict[str, list[str]] = {}

    def money(name: str):
        value = getattr(data, name)
        if value is None or value == "":
            return None
        try:
            return parse_usd(value, field=name)
        except ValidationFailed as exc:
            errors.update(exc.metadata["errors"])
            return None

    threshold, cap = money("threshold"), money("monthly_cap")
    amount, target = money("amount"), money("target_balance")
    for name, value in (("threshold", threshold), ("monthly_cap", cap)):
        if value is None and name not in errors:
            errors[name] = ["Required, greater than zero."]
    given = [n for n in ("amount", "target_balance") if getattr(data, n) not in (None, "")]
    if len(given) != 1:
        errors.setdefault(
            "amount", ["Give either a fixed amount or a target balance (exactly one)."]
        )
    low, high = purchase_limits()
    if amount is not None and not low <= amount <= high:
        errors.setdefault("amount", [f"Between {low} and {high} USD."])
    if target is not None and threshold is not None and target <= threshold:
        errors.setdefault("target_balance", ["Must be above the threshold."])
    if target is not None and target > high:
        errors.setdefault("target_balance", [f"At most {high} credits."])
    if cap is not None and amount is not None and cap < amount:
        errors.setdefault("monthly_cap", ["At least one top-up: not below the amount."])
    if cap is not None and amount is None and cap < low:
        errors.setdefault("monthly_cap", [f"At least {low} USD (the smallest top-up)."])
    if errors:
        raise ValidationFailed(errors)
    return {
        "enabled": bool(data.enabled),
        "threshold": threshold,
        "amount": amount,
        "target_balance": target,
        "monthly_cap": cap,
        "requires_approval": bool(data.requires_approval),
    }


def _rule_document(rule: TopUpRule) -> dict:
    return {
        "enabled": rule.enabled,
        "threshold": rule.threshold,
        "amount": rule.amount,
        "target_balance": rule.target_balance,
        "monthly_cap": rule.monthly_cap,
        "requires_approval": rule.requires_approval,
    }


@transaction.atomic
def topup_rule_set(*, organization: Organization, data: RuleInput, actor: Actor) -> TopUpRule:
    """Create or replace the organization's rule. Saving clears the back-off (a new card or new
    figures deserve a new try). Enabling needs a saved card.

    Raises ValidationFailed (not a positive whole-cent amount; neither or both of `amount` and
    `target_balance`; `amount` outside BILLING_PURCHASE_MIN..MAX; target not above the
    threshold; a cap below one top-up; enabled without a saved card): nothing is written."""
    fields = _parse_rule(data)
    profile = billing_profile_of(organization)
    if fields["enabled"] and not profile.stripe_payment_method_id:
        raise ValidationFailed({"enabled": ["Save a card for automatic top-ups first."]})
    rule = TopUpRule.objects.select_for_update().filter(organization=organization).first()
    before = _rule_document(rule) if rule else None
    now = timezone.now()
    if rule is None:
        rule = TopUpRule(organization=organization, created_at=now)
    for name, value in fields.items():
        setattr(rule, name, value)
    rule.failures, rule.next_attempt_at, rule.updated_at = 0, None, now
    rule.save()
    audit_record(
        organization=organization,
        actor=actor,
        target=rule,
        action="topup.rule_set",
        before=before,
        after=_rule_document(rule),
    )
    transaction.on_commit(lambda: _wake(organization.pk))
    return rule


# Saving the card ------------------------------------------------------------------------------


def topup_card_checkout(
    *, organization: Organization, success_url: str, cancel_url: str, actor: Actor
) -> tuple[str, str]:
    """Start saving a card for off-session top-ups: the organization's Stripe customer (created
    on first use, with its billing e-mail) and a Checkout Session in `setup` mode. Returns
    (session id, checkout URL). Raises ProviderUnavailable, ValidationFailed."""
    profile = billing_profile_of(organization)
    customer = profile.stripe_customer_id
    if not customer:
        made = stripe.customer_create(
            email=organization.billing_email,
            name=organization.name,
            organization_id=organization.pk,
        )
        with transaction.atomic():
            profile = type(profile).objects.select_for_update().get(pk=profile.pk)
            if not profile.stripe_customer_id:  # a concurrent request may have made one
                profile.stripe_customer_id = made
                profile.updated_at = timezone.now()
                profile.save(update_fields=["stripe_customer_id", "updated_at"])
                audit_record(
                    organization=organization,
                    actor=actor,
                    target=profile,
                    action="billing.stripe_customer_created",
                    after={"customer": made},
                )
        customer = profile.stripe_customer_id
    return stripe.setup_session_create(
        customer=customer, success_url=success_url, cancel_url=cancel_url
    )


def topup_card_save(*, organization: Organization, session_id: str, actor: Actor) -> str:
    """Store the card a completed setup Checkout Session saved (the session retrieved from
    Stripe, its customer the organization's) as the top-up card, and clear the back-off.
    Returns the payment method id. Raises ValidationFailed (not a completed setup session of
    this organization's customer), ProviderUnavailable."""
    if not isinstance(session_id, str) or not session_id.startswith("cs_") or len(session_id) > 255:
        raise ValidationFailed({"session_id": ["Not a Checkout Session id."]})
    profile = billing_profile_of(organization)
    saved = stripe.setup_session_result(session_id)
    if (
        saved is None
        or not profile.stripe_customer_id
        or saved.customer != (profile.stripe_customer_id)
    ):
        raise ValidationFailed({"session_id": ["Not a completed card setup of this organization."]})
    with transaction.atomic():
        profile = type(profile).objects.select_for_update().get(pk=profile.pk)
        before = profile.stripe_payment_method_id
        profile.stripe_payment_method_id = saved.payment_method
        profile.updated_at = timezone.now()
        profile.save(update_fields=["stripe_payment_method_id", "updated_at"])
        TopUpRule.objects.filter(organization=organization).update(failures=0, next_attempt_at=None)
        audit_record(
            organization=organization,
            actor=actor,
            target=profile,
            action="topup.card_saved",
            before={"payment_method": before},
            after={"payment_method": saved.payment_method},
        )
        transaction.on_commit(lambda: _wake(organization.pk))
    return saved.payment_method


# Starting a top-up ----------------------------------------------------------------------------


def month_charged(organization: Organization, now: datetime) -> Decimal:
    """USD of this calendar month's top-ups (organization's time zone) that are pending or
    paid: what counts against the monthly cap."""
    start, end = window_bounds("monthly", now, organization.time_zone)
    total = Order.objects.filter(
        organization=organization,
        purpose=Order.Purpose.TOPUP,
        status__in=(Order.Status.PENDING, Order.Status.PAID),
        created_at__gte=start,
        created_at__lt=end,
    ).aggregate(total=Sum("total"))["total"]
    return total or Decimal(0)


def _amount_for(rule: TopUpRule, available: Decimal, tax_rate: Decimal, room: Decimal):
    """The top-up's amount (USD before tax) under the rule and the cap's `room` (USD), or None
    when the cap leaves no room for it. A target balance asks the shortfall (at least the
    smallest order) and, near the cap, as much of it as fits; a fixed amount fits whole or not
    at all."""
    low, high = purchase_limits()
    if rule.amount is not None:
        amount = rule.amount
    else:
        shortfall = (rule.target_balance - available).quantize(CENT, rounding=ROUND_CEILING)
        amount = min(max(shortfall, low), high)
        if amount + tax_of(amount, tax_rate) > room:
            amount = (room * 100 / (100 + tax_rate)).quantize(CENT, rounding=ROUND_FLOOR)
            while amount >= low and amount + tax_of(amount, tax_rate) > room:
                amount -= CENT
    if amount < low or amount + tax_of(amount, tax_rate) > room:
        return None
    return amount


def _pool_available(organization_id: int) -> Decimal:
    pool = (
        LedgerAccount.objects.filter(organization_id=organization_id, kind=LedgerAccount.Kind.POOL)
        .values_list("balance", "held")
        .first()
    )
    return pool[0] - pool[1] if pool else Decimal(0)


def topup_start(*, organization_id: int, now: datetime | None = None) -> TopUp | None:
    """Start one top-up of the organization if its rule says so now (see the module's steps);
    returns the new TopUp (`charging` or `awaiting_approval`), or None (nothing to do)."""
    cache.delete(_keys(organization_id)[2])  # debits after this point queue a new run
    now = now or timezone.now()
    with transaction.atomic():
        rule = (
            TopUpRule.objects.select_for_update()
            .select_related("organization")
            .filter(organization_id=organization_id, enabled=True)
            .first()
        )
        if rule is None:
            return None
        organization = rule.organization
        if rule.next_attempt_at is not None and rule.next_attempt_at > now:
            transaction.on_commit(lambda: _quiet(organization_id, rule.next_attempt_at))
            return None
        if TopUp.objects.filter(
            organization_id=organization_id, state__in=TopUp.IN_FLIGHT
        ).exists():
            until = now + timedelta(seconds=IN_FLIGHT_QUIET_SECONDS)
            transaction.on_commit(lambda: _quiet(organization_id, until))
            return None
        available = _pool_available(organization_id)
        if available >= rule.threshold:
            return None
        profile = billing_profile_of(organization)
        if not profile.stripe_customer_id or not profile.stripe_payment_method_id:
            return None
        room = rule.monthly_cap - month_charged(organization, now)
        amount = _amount_for(rule, available, profile.tax_rate, room)
        if amount is None:  # the cap is reached for this month
            month_end = window_bounds("monthly", now, organization.time_zone)[1]
            transaction.on_commit(lambda: _quiet(organization_id, month_end))
            return None
        waits = rule.requires_approval
        try:
            with transaction.atomic():
                order, _ = order_create(
                    organization=organization,
                    amount=amount,
                    provider=Order.Provider.STRIPE,
                    purpose=Order.Purpose.TOPUP,
                    idempotency_key=f"topup:{uuid.uuid4()}",
                    actor=SYSTEM,
                )
                topup = TopUp.objects.create(
                    organization=organization,
                    order=order,
                    state=State.AWAITING_APPROVAL if waits else State.CHARGING,
                    available_before=available.quantize(CENT, rounding=ROUND_FLOOR),
                    retry_at=None
                    if waits
                    else now + timedelta(seconds=settings.TOPUP_CHARGE_RETRY_SECONDS),
                    created_at=now,
                    updated_at=now,
                )
        except IntegrityError:  # one in flight already (the constraint, should the lock not)
            return None
        audit_record(
            organization=organization,
            actor=SYSTEM,
            target=order,
            action="topup.started",
            after={
                "order": order.public_id,
                "amount": amount,
                "total": order.total,
                "available": available,
                "threshold": rule.threshold,
                "state": topup.state,
            },
        )
        if waits:
            notify(organization=organization, type="topup.approval_required", data=_data(topup))
        until = now + timedelta(seconds=IN_FLIGHT_QUIET_SECONDS)
        transaction.on_commit(lambda: _quiet(organization_id, until))
    return topup


def _data(topup: TopUp, **extra) -> dict:
    order = topup.order
    return {
        "order": str(order.public_id),
        "amount": str(order.amount),
        "total": str(order.total),
        "currency": order.currency,
        **extra,
    }


# Approval -------------------------------------------------------------------------------------


def _locked(topup: TopUp) -> tuple[TopUpRule | None, TopUp]:
    """Lock the rule, then the top-up (the module's lock order)."""
    rule = TopUpRule.objects.select_for_update().filter(organization_id=topup.organization_id)
    rule = rule.first()
    return rule, TopUp.objects.select_for_update().select_related("order").get(pk=topup.pk)


@transaction.atomic
def topup_approve(*, topup: TopUp, actor: Actor) -> TopUp:
    """A billing member approves a waiting top-up: it is charged (queued after commit).
    Raises TopUpNotAwaiting."""
    _, topup = _locked(topup)
    if topup.state != State.AWAITING_APPROVAL:
        raise TopUpNotAwaiting(f"This top-up is {topup.get_state_display().lower()}.")
    now = timezone.now()
    topup.state = State.CHARGING
    topup.decided_by, topup.decided_at, topup.updated_at = actor.user, now, now
    topup.retry_at = now + timedelta(seconds=settings.TOPUP_CHARGE_RETRY_SECONDS)
    topup.save(update_fields=["state", "decided_by", "decided_at", "updated_at", "retry_at"])
    audit_record(
        organization=topup.organization,
        actor=actor,
        target=topup.order,
        action="topup.approved",
        after={"order": topup.order.public_id, "total": topup.order.total},
    )
    from ..tasks import topup_charge_task

    # A broker that is down does not undo the approval (`robust`): the top-up is charging with
    # its `retry_at`, and `topup_sweep` sends the charge then.
    transaction.on_commit(lambda: topup_charge_task.delay(topup.pk), robust=True)
    return topup


@transaction.atomic
def topup_reject(*, topup: TopUp, actor: Actor) -> TopUp:
    """A billing member turns a waiting top-up down: its order fails and the rule rests for
    TOPUP_BACKOFF_SECONDS before it asks again. Raises TopUpNotAwaiting."""
    rule, topup = _locked(topup)
    if topup.state != State.AWAITING_APPROVAL:
        raise TopUpNotAwaiting(f"This top-up is {topup.get_state_display().lower()}.")
    now = timezone.now()
    order_status_set(order=topup.order, status=Order.Status.FAILED, actor=actor)
    topup.state = State.REJECTED
    topup.decided_by, topup.decided_at, topup.updated_at = actor.user, now, now
    topup.save(update_fields=["state", "decided_by", "decided_at", "updated_at"])
    if rule is not None:
        rule.next_attempt_at = now + timedelta(seconds=settings.TOPUP_BACKOFF_SECONDS)
        rule.save(update_fields=["next_attempt_at"])
    audit_record(
        organization=topup.organization,
        actor=actor,
        target=topup.order,
        action="topup.rejected",
        after={"order": topup.order.public_id},
    )
    transaction.on_commit(lambda: _wake(topup.organization_id))
    return topup


# Charging -------------------------------------------------------------------------------------


def backoff(failures: int) -> timedelta:
    """The wait after `failures` declines in a row: TOPUP_BACKOFF_SECONDS doubled per further
    failure, at most TOPUP_BACKOFF_MAX_SECONDS."""
    base, most = settings.TOPUP_BACKOFF_SECONDS, settings.TOPUP_BACKOFF_MAX_SECONDS
    return timedelta(seconds=min(base * 2 ** max(failures - 1, 0), most))


def topup_charge(*, topup_id: int) -> TopUp:
    """Charge a `charging` top-up (the first time, or again after the provider did not answer)
    and record the outcome. A top-up in another state is returned as it is."""
    now = timezone.now()
    with transaction.atomic():
        topup = TopUp.objects.select_for_update().select_related("order").get(pk=topup_id)
        if topup.state != State.CHARGING:
            return topup
        if topup.order.status == Order.Status.PAID:  # the webhook settled it meanwhile
            return _succeeded(topup, topup.payment_intent)
        topup.attempts += 1
        topup.retry_at = now + timedelta(seconds=settings.TOPUP_CHARGE_RETRY_SECONDS)
        topup.updated_at = now
        topup.save(update_fields=["attempts", "retry_at", "updated_at"])
        profile = billing_profile_of(topup.organization)
    order = topup.order
    try:
        result = stripe.charge_off_session(
            customer=profile.stripe_customer_id,
            payment_method=profile.stripe_payment_method_id,
            amount=order.total,
            currency=order.currency,
            order_id=str(order.public_id),
        )
    except ProviderUnavailable as exc:
        return _unanswered(topup, str(exc.message))
    except ValidationFailed as exc:  # Stripe refused the request: no such card or customer
        return _failed(topup, "invalid_request", str(exc.message)[:500], "")
    if result.status == "succeeded":
        with transaction.atomic():
            rule, topup = _locked(topup)
            if topup.state != State.CHARGING:
                return topup
            # Before the grant's own after-commit hook: it must find the rule awake (still
            # below the threshold after this top-up: the next one starts).
            organization_id = topup.organization_id
            transaction.on_commit(lambda: _wake(organization_id))
            try:
                order_settle(
                    order=topup.order,
                    amount_paid=result.amount,
                    currency=result.currency,
                    provider_reference=result.payment_intent,
                    actor=SYSTEM,
                )
            except PaymentMismatch as exc:
                log.error("top-up %s: %s", topup.order.public_id, exc.message)
                return _failed(topup, "payment_mismatch", exc.message, result.payment_intent)
            return _succeeded(topup, result.payment_intent, rule=rule)
    if result.status == "processing":
        with transaction.atomic():
            TopUp.objects.filter(pk=topup.pk, state=State.CHARGING).update(
                payment_intent=result.payment_intent, updated_at=timezone.now()
            )
        return topup
    return _failed(topup, result.failure_code, result.failure_message, result.payment_intent)


def _succeeded(topup: TopUp, payment_intent: str, rule: TopUpRule | None = None) -> TopUp:
    """Inside the caller's transaction, the top-up locked: mark it succeeded, reset the rule's
    back-off, tell `topup.succeeded`."""
    if rule is None:
        rule = TopUpRule.objects.filter(organization_id=topup.organization_id).first()
    now = timezone.now()
    topup.state, topup.retry_at, topup.updated_at = State.SUCCEEDED, None, now
    topup.payment_intent = payment_intent or topup.payment_intent
    topup.save(update_fields=["state", "retry_at", "updated_at", "payment_intent"])
    if rule is not None and (rule.failures or rule.next_attempt_at):
        TopUpRule.objects.filter(pk=rule.pk).update(failures=0, next_attempt_at=None)
    notify(organization=topup.organization, type="topup.succeeded", data=_data(topup))
    transaction.on_commit(lambda: _wake(topup.organization_id))
    return topup


def _failed(topup: TopUp, code: str, message: str, payment_intent: str) -> TopUp:
    """The charge failed: the order fails, the rule backs off, `topup.failed` is told once."""
    with transaction.atomic():
        rule, topup = _locked(topup)
        if topup.state != State.CHARGING:
            return topup
        now = timezone.now()
        if topup.order.status == Order.Status.PENDING and code != "payment_mismatch":
            order_status_set(order=topup.order, status=Order.Status.FAILED, actor=SYSTEM)
        topup.state, topup.retry_at, topup.updated_at = State.FAILED, None, now
        topup.failure_code, topup.failure_message = (code or "card_error")[:100], message[:500]
        topup.payment_intent = payment_intent or topup.payment_intent
        topup.save(
            update_fields=[
                "state",
                "retry_at",
                "updated_at",
                "failure_code",
                "failure_message",
                "payment_intent",
            ]
        )
        next_attempt = None
        if rule is not None:
            rule.failures += 1
            next_attempt = now + backoff(rule.failures)
            rule.next_attempt_at = next_attempt
            rule.save(update_fields=["failures", "next_attempt_at"])
        audit_record(
            organization=topup.organization,
            actor=SYSTEM,
            target=topup.order,
            action="topup.failed",
            after={"order": topup.order.public_id, "code": topup.failure_code},
        )
        notify(
            organization=topup.organization,
            type="topup.failed",
            data=_data(
                topup,
                reason=message or code,
                code=topup.failure_code,
                next_attempt_at=next_attempt.isoformat() if next_attempt else "",
            ),
        )
        if next_attempt is not None:
            organization_id = topup.organization_id
            transaction.on_commit(lambda: _quiet(organization_id, next_attempt))
    return topup


def _unanswered(topup: TopUp, message: str) -> TopUp:
    """The provider did not answer: resend later with the same idempotency key, or give up
    after TOPUP_CHARGE_GIVE_UP_SECONDS."""
    age = (timezone.now() - topup.created_at).total_seconds()
    if age >= settings.TOPUP_CHARGE_GIVE_UP_SECONDS:
        return _failed(topup, "provider_unavailable", message, "")
    log.warning("top-up %s: provider unavailable, resent later: %s", topup.order_id, message)
    return topup


def topup_sweep(*, now: datetime | None = None) -> int:
    """The beat's pass: resend charges whose `retry_at` has passed (the provider did not answer,
    or a worker was lost), then start top-ups of enabled rules whose pool is below the threshold
    (a rule saved while the pool was already low; no debit since). Returns how many top-ups
    were charged or started."""
    now = now or timezone.now()
    done = 0
    due = TopUp.objects.filter(state=State.CHARGING, retry_at__lte=now).values_list("pk", flat=True)
    for pk in list(due[:500]):
        topup_charge(topup_id=pk)
        done += 1
    pools = LedgerAccount.objects.filter(
        organization_id=OuterRef("organization_id"), kind=LedgerAccount.Kind.POOL
    )
    low = (
        TopUpRule.objects.filter(enabled=True)
        .exclude(next_attempt_at__gt=now)
        .annotate(available=Coalesce(Subquery(pools.values("balance")[:1]), Decimal(0)))
        .annotate(held=Coalesce(Subquery(pools.values("held")[:1]), Decimal(0)))
        .filter(available__lt=F("threshold") + F("held"))
        .exclude(organization__topups__state__in=TopUp.IN_FLIGHT)
        .values_list("organization_id", flat=True)
    )
    for organization_id in list(low[:1000]):
        topup = topup_start(organization_id=organization_id, now=now)
        if topup is not None and topup.state == State.CHARGING:
            topup_charge(topup_id=topup.pk)
            done += 1
    return done
