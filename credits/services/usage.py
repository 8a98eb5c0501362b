"""Metering: record usage events (priced, debited, idempotent) and credit-aware requests
(authorize a worst-case hold, capture the actual usage, void).

Keep these names: `POST /api/v1/credits/usage` and the authorization endpoints call these."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import ApiKey, Organization, Team, User
from portal.errors import IdempotencyConflict, ValidationFailed
from portal.money import parse_credits

from ..metrics import metered
from ..models import Hold, LedgerAccount, UsageEvent
from .budgets import BudgetGate
from .guardrails import guardrail_check_model
from .ledger import (
    _lock,
    hold_authorize,
    hold_capture,
    ledger_debit,
    request_hash,
    spending_account,
    system_account_of,
)
from .prices import Tokens, cost_compute, model_suggestions, price_for

MAX_FUTURE_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class UsageInput:
    """One usage event as a client reports it (validated by the API's serializer or the replay).

    Token counts are the provider's (OpenAI's and OpenRouter's `usage`): `prompt_tokens` includes
    `cached_tokens` and `completion_tokens` includes `reasoning_tokens`."""

    id: str
    model: str
    operation: str = UsageEvent.Operation.CHAT
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    images: int = 0
    cost: Decimal | None = None
    occurred_at: datetime | None = None
    conversation_id: str = ""
    metadata: dict | None = None

    def digest(self) -> str:
        return request_hash(
            model=self.model,
            operation=self.operation,
            prompt=self.prompt_tokens,
            completion=self.completion_tokens,
            cached=self.cached_tokens,
            reasoning=self.reasoning_tokens,
            images=self.images,
            cost=self.cost,
            occurred_at=self.occurred_at,
            conversation=self.conversation_id,
            metadata=self.metadata or {},
        )

    @property
    def tokens(self) -> Tokens:
        return Tokens(
            self.prompt_tokens,
            self.completion_tokens,
            self.cached_tokens,
            self.reasoning_tokens,
            self.images,
        )


@dataclass(frozen=True)
class Attribution:
    """Who a request is charged to: the organization, and the key, team and member if known."""

    organization: Organization
    api_key: ApiKey | None = None
    team: Team | None = None
    member: User | None = None

    @classmethod
    def of_key(cls, key: ApiKey) -> Attribution:
        return cls(organization=key.organization, api_key=key, team=key.team, member=key.user)

    @classmethod
    def of_principal(cls, principal) -> Attribution:
        """An API key's attribution, or a member's session (charged to the pool, as theirs)."""
        if principal.key is not None:
            return cls.of_key(principal.key)
        return cls(organization=principal.organization, member=principal.user)


@dataclass(frozen=True)
class UsageResult:
    """A recorded event (`created`), or the first result of a retry; `balance_after` is the
    available credits (balance - held) of the account it was paid from, right after; `alerts`
    the budget thresholds it crossed (`credits.services.alerts.alert_record`)."""

    event: UsageEvent
    created: bool
    balance_after: Decimal
    alerts: tuple = ()  # the budget alerts (credits.Alert) this event fired


def _available(account: LedgerAccount) -> Decimal:
    return account.balance - account.held


def _available_now(account_id: int) -> Decimal:
    return _available(LedgerAccount.objects.get(pk=account_id))


def usage_price(event: UsageInput, occurred_at: datetime) -> tuple[Decimal, object, str]:
    """(cost, price row or None, cost source) of an event. Raises ValidationFailed for a model
    missing from the price table when no upstream cost is reported, or for a detail count above
    its total (`cached_tokens` > `prompt_tokens`, `reasoning_tokens` > `completion_tokens`)."""
    event.tokens.check()
    if event.cost is not None:
        return parse_credits(event.cost, field="cost", allow_zero=True), None, "reported"
    price = price_for(event.model, occurred_at)
    if price is None:
        close = model_suggestions(event.model)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValidationFailed(
            {
                "model": [
                    f"Unknown model '{event.model}': it is not in the price table.{hint} "
                    "Or report the request's cost in `cost`."
                ]
            },
            message=f"Unknown model '{event.model}' and no cost reported.{hint}",
        )
    return cost_compute(price, event.tokens, operation=event.operation), price, "price_table"


def _occurred_at(event: UsageInput, now: datetime) -> datetime:
    occurred_at = event.occurred_at or now
    if occurred_at.tzinfo is None:
        raise ValidationFailed({"occurred_at": ["Give a time zone (UTC: a trailing Z)."]})
    if occurred_at > now + MAX_FUTURE_SKEW:
        raise ValidationFailed({"occurred_at": ["Must not be in the future."]})
    return occurred_at


def _existing(organization: Organization, event: UsageInput, digest: str) -> UsageEvent | None:
    existing = UsageEvent.objects.filter(organization=organization, event_id=event.id).first()
    if existing is not None and existing.request_hash != digest:
        raise IdempotencyConflict(
            f"Usage event '{event.id}' was recorded with a different body.", event_id=event.id
        )
    return existing


def _usage_event(
    attribution: Attribution,
    event: UsageInput,
    digest: str,
    *,
    price,
    cost: Decimal,
    source: str,
    txn,
    occurred_at: datetime,
    now: datetime,
    extra_metadata: dict | None = None,
    budget_windows: list[int] | None = None,
) -> UsageEvent:
    """The (unsaved) row of a priced usage event."""
    return UsageEvent(
        organization=attribution.organization,
        event_id=event.id,
        request_hash=digest,
        api_key=attribution.api_key,
        team=attribution.team,
        member=attribution.member,
        operation=event.operation,
        model=event.model,
        price=price,
        prompt_tokens=event.prompt_tokens,
        completion_tokens=event.completion_tokens,
        cached_tokens=event.cached_tokens,
        reasoning_tokens=event.reasoning_tokens,
        images=event.images,
        cost=cost,
        cost_source=source,
        conversation_id=event.conversation_id,
        metadata={**(event.metadata or {}), **(extra_metadata or {})},
        transaction=txn,
        budget_windows=budget_windows or [],
        occurred_at=occurred_at,
        recorded_at=now,
    )


@metered  # counts recorded and refused events (credits.metrics), no statement more
@transaction.atomic
def usage_record(*, attribution: Attribution, event: UsageInput) -> UsageResult:
    """Price, check and record one usage event, debiting its cost from the team's allocation or
    the pool. A retry with the same `id` and body returns the first result (created=False).

    Every budget that applies (organization, team, member, key; matching operation and model)
    is checked and counted in the same transaction, after the account's lock (the strictest
    decides).

    Raises ValidationFailed (unknown model, future time), IdempotencyConflict (same id, other
    body), InsufficientCredits, BudgetExceeded (a hard budget, a soft one past its grace, or the
    key's limit); nothing is recorded then."""
    organization = attribution.organization
    account = spending_account(organization, attribution.team)
    digest = event.digest()
    existing = _existing(organization, event, digest)
    if existing is not None:
        return UsageResult(existing, False, _available_now(account.pk))
    now = timezone.now()
    occurred_at = _occurred_at(event, now)
    cost, price, source = usage_price(event, occurred_at)
    txn = None
    if cost > 0:
        txn, created = ledger_debit(
            account=account,
            amount=cost,
            digest=digest,
            idempotency_key=f"usage:{event.id}",
            metadata={"event_id": event.id},
        )
        if not created:  # a concurrent duplicate committed first
            return UsageResult(_existing(organization, event, digest), False, _available(account))
    gate = BudgetGate.of(attribution, now)
    pairs = gate.applicable(event.operation, event.model)
    gate.check(pairs, cost)
    gate.charge(pairs, cost)
    usage = _usage_event(
        attribution,
        event,
        digest,
        price=price,
        cost=cost,
        source=source,
        txn=txn,
        occurred_at=occurred_at,
        now=now,
        budget_windows=[w.pk for _, w in pairs] if cost > 0 else [],
    )
    try:
        with transaction.atomic():
            usage.save(force_insert=True)
    except IntegrityError:
        return UsageResult(_existing(organization, event, digest), False, _available(account))
    alerts = gate.flush()
    if txn is None:
        account.refresh_from_db(fields=["balance", "held"])
    return UsageResult(usage, True, _available(account), tuple(alerts))


# Credit-aware requests: authorize, capture, void -------------------------------------------------


def authorization_estimate(
    *, model: str, prompt_tokens: int, max_tokens: int, at: datetime
) -> Decimal:
    """The worst case of a request: its prompt and `max_tokens` of output at the model's price.
    Raises ValidationFailed for a model not in the price table."""
    estimate = UsageInput(
        id="estimate", model=model, prompt_tokens=prompt_tokens, completion_tokens=max_tokens
    )
    return usage_price(estimate, at)[0]


@transaction.atomic
def authorization_create(
    *,
    attribution: Attribution,
    id: str,
    amount: Decimal | None = None,
    model: str = "",
    prompt_tokens: int = 0,
    max_tokens: int = 0,
    timeout: timedelta | None = None,
    operation: str = UsageEvent.Operation.CHAT,
) -> tuple[Hold, bool]:
    """Hold the worst-case cost of a request (an `amount`, or `model` with `prompt_tokens` and
    `max_tokens`) on the spending account, checked against the balance and every budget that
    applies (reserved in their windows' `held`) in one step. `id` is the idempotency key.
    Returns (hold, created).

    Raises ValidationFailed, InsufficientCredits, BudgetExceeded, IdempotencyConflict,
    PermissionDenied (a model a guardrail of the key or member does not allow)."""
    now = timezone.now()
    guardrail_check_model(
        organization_id=attribution.organization.pk,
        api_key_id=attribution.api_key.pk if attribution.api_key else None,
        member_id=attribution.member.pk if attribution.member else None,
        model=model,
    )
    if amount is None:
        if not model:
            raise ValidationFailed({"amount": ["Give an amount, or a model and max_tokens."]})
        amount = authorization_estimate(
            model=model, prompt_tokens=prompt_tokens, max_tokens=max_tokens, at=now
        )
    amount = parse_credits(amount)
    account = spending_account(attribution.organization, attribution.team)
    existing = Hold.objects.filter(
        organization=attribution.organization, idempotency_key=id
    ).first()
    gate, pairs = None, []
    if existing is None:
        _lock([account])  # accounts first, then the budget windows: the order of every debit
        gate = BudgetGate.of(attribution, now)
        pairs = gate.applicable(operation, model)
        gate.check(pairs, amount)
    hold, created = hold_authorize(
        account=account,
        amount=amount,
        idempotency_key=id,
        timeout=timeout,
        extra_digest=request_hash(model=model, prompt=prompt_tokens, max_tokens=max_tokens),
        api_key=attribution.api_key,
        team=attribution.team,
        member=attribution.member,
        model=model,
        budget_windows=[w.pk for _, w in pairs],
    )
    if created and gate is not None:
        gate.reserve(pairs, amount)
        gate.flush()
    return hold, created


@metered
@transaction.atomic
def authorization_capture(*, hold: Hold, event: UsageInput) -> UsageResult:
    """Capture a hold with the request's actual usage: records the usage event (priced as
    `usage_record` does) and posts its cost, releasing the rest of the hold. A retry of the
    same capture returns the first result.

    The hold's reservation leaves its budget windows; the cost is counted in the current windows
    of every budget that applies. Beyond the hold, a capture is checked like a new debit.

    Raises HoldNotPending, InsufficientCredits (cost above the hold and not available),
    BudgetExceeded (cost above the hold and past a budget), ValidationFailed,
    IdempotencyConflict."""
    organization = hold.organization
    digest = event.digest()
    existing = _existing(organization, event, digest)
    if existing is not None:
        return UsageResult(existing, False, _available_now(hold.account_id))
    now = timezone.now()
    occurred_at = _occurred_at(event, now)
    cost, price, source = usage_price(event, occurred_at)
    attribution = Attribution(
        organization=organization, api_key=hold.api_key, team=hold.team, member=hold.member
    )
    # The lock order of every debit: the account, the budget windows (current ones and the
    # hold's), then the hold row. The usage sink is created (first use) before any lock.
    system_account_of(organization.pk, LedgerAccount.Kind.USAGE)
    _lock([hold.account])
    gate = BudgetGate.of(attribution, now, extra_window_ids=hold.budget_windows)
    locked = Hold.objects.select_for_update().get(pk=hold.pk)
    pairs = gate.applicable(event.operation, event.model)
    fresh = locked.status == Hold.Status.PENDING and locked.expires_at > now
    if fresh:
        gate.release_in_memory(locked.budget_windows, locked.amount)  # hold_capture writes it
        if cost > locked.amount:  # beyond the hold: checked like a new debit
            gate.check(pairs, cost)
        gate.charge(pairs, cost)
    txn = hold_capture(hold=locked, amount=cost, metadata={"event_id": event.id})
    usage = _usage_event(
        attribution,
        event,
        digest,
        price=price,
        cost=cost,
        source=source,
        txn=txn,
        occurred_at=occurred_at,
        now=now,
        extra_metadata={"authorization": hold.idempotency_key},
        budget_windows=[w.pk for _, w in pairs] if fresh and cost > 0 else [],
    )
    try:
        with transaction.atomic():
            usage.save(force_insert=True)
    except IntegrityError:  # the id was taken by a concurrent event: refuse, nothing posted
        raise IdempotencyConflict(
            f"Usage event '{event.id}' was recorded by another request.", event_id=event.id
        ) from None
    alerts = gate.flush() if fresh else []
    return UsageResult(usage, True, _available_now(hold.account_id), tuple(alerts))
