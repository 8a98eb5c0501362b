"""Metering: record usage events (priced, debited, idempotent) and credit-aware requests
(authorize a worst-case hold, capture the actual usage, void).

Keep these names: `POST /api/v1/credits/usage` and the authorization endpoints call these."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.access import Principal
from accounts.models import ApiKey, Organization, Team, User
from portal.errors import ApplicationError, IdempotencyConflict, ValidationFailed
from portal.money import parse_credits

from ..metrics import usage_outcomes_count, usage_refused
from ..models import Hold, LedgerTransaction, UsageEvent
from . import usage_store
from .budgets import BudgetGate
from .group_commit import lane_of, record_grouped
from .guardrails import guardrail_check_model
from .holds import HoldNotPending, hold_authorize_in_transaction
from .ledger_core import (
    Kind,
    _check_key,
    _ensure_available,
    _expire_due,
    burn_lots,
    request_hash,
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
        """A key's attribution (`of_principal` of the key)."""
        return cls.of_principal(Principal.for_key(key))

    @classmethod
    def of_hold(cls, hold: Hold) -> Attribution:
        """The attribution a hold was made for (its capture is charged to it)."""
        return cls(
            organization=hold.organization, api_key=hold.api_key, team=hold.team, member=hold.member
        )

    @classmethod
    def of_principal(cls, principal: Principal) -> Attribution:
        """Who the usage of `principal` (a key or a member's session) is charged to: its key,
        its member, and the team `Principal.spending_team` names (None: the pool). Raises
        PermissionDenied for a member on no team or on several, through a key bound to no team
        or a session."""
        team = principal.spending_team()
        if principal.key is not None:
            key = principal.key
            return cls(organization=key.organization, api_key=key, team=team, member=key.user)
        return cls(organization=principal.organization, team=team, member=principal.user)


@dataclass(frozen=True)
class UsageResult:
    """A recorded event (`created`), or the first result of a retry; `balance_after` is the
    available credits (balance - held) of the account it was paid from, right after; `alerts`
    the budget thresholds it crossed (`credits.services.alerts.alert_record`)."""

    event: UsageEvent
    created: bool
    balance_after: Decimal
    alerts: tuple = ()  # the budget alerts (credits.Alert) this event fired


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
    return usage_store.row(
        UsageEvent,
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


RACE_ATTEMPTS = 3  # a concurrent request took one of a batch's ids: roll back and run again

Outcome = UsageResult | ApplicationError


def usage_record(*, attribution: Attribution, event: UsageInput) -> UsageResult:
    """Price, check and record one usage event, debiting its cost from the team's allocation or
    the pool: `usage_record_many` with one event (the one metering path). A retry with the same
    `id` and body returns the first result (created=False).

    Every budget that applies (organization, team, member, key; matching operation and model)
    is checked and counted in the same transaction, after the account's lock (the strictest
    decides).

    Raises ValidationFailed (unknown model, future time), IdempotencyConflict (same id, other
    body), InsufficientCredits, BudgetExceeded (a hard budget, a soft one past its grace, or the
    key's limit); nothing is recorded then.

    Concurrent calls of this process for the same attribution may share one transaction
    (`group_commit`), each with its own outcome, as if recorded one after the other."""
    outcome = record_grouped(
        lane_of("usage", attribution),
        event,
        lambda events: usage_record_many(attribution=attribution, events=events),
    )
    if isinstance(outcome, ApplicationError):
        raise outcome
    return outcome


def usage_record_many(*, attribution: Attribution, events: Sequence[UsageInput]) -> list[Outcome]:
    """Record `events` in order, each as if alone: one outcome per event, a UsageResult (created,
    or the first result of a retry) or the ApplicationError that refused it (ValidationFailed,
    IdempotencyConflict, InsufficientCredits, BudgetExceeded). Refused events record nothing;
    the others are committed together. Every metering write goes through here: single events,
    batches, trace replays (captures share its pricing and rows: `authorization_capture`).

    One transaction, no savepoint, a constant number of statements whatever the batch's size
    (PostgreSQL; `usage_store`): the paying account locked (with the usage sink's id), the
    budgets that apply, their windows locked (when there are budgets), one read (lots, earlier
    events, new ids), one write; alerts when a threshold was crossed. Without budgets: 4.

    Idempotency: the account's lock orders requests that pay from it; a request paying from
    another account that records one of the ids first makes the insert fail on the unique
    index, and then the whole transaction is rolled back and run again (at most RACE_ATTEMPTS),
    finding that event recorded."""
    return _run(lambda: _record(attribution, events))


def _run(record: Callable[[], list[Outcome]]) -> list[Outcome]:
    """`record()` in a transaction of its own (a savepoint only inside a caller's), run again
    when it lost a race on a unique index; counts the outcomes (credits.metrics)."""
    for attempt in range(1, RACE_ATTEMPTS + 1):
        try:
            with transaction.atomic():
                outcomes = record()
        except IntegrityError:
            if attempt == RACE_ATTEMPTS:
                raise
            continue
        except ApplicationError as exc:  # of the whole call (NotFound: no such account)
            usage_refused(exc)
            raise
        usage_outcomes_count(outcomes)
        return outcomes
    raise AssertionError("unreachable")


@dataclass
class _Priced:
    """An event priced before the lock, with the rows it writes if it is recorded: built before
    the account's lock, so that the lock is not held while they are made (their ids, and the
    budget windows the event counts in, are set once it is held)."""

    index: int
    event: UsageInput
    key: str  # the ledger idempotency key of its debit
    usage: UsageEvent
    txn: LedgerTransaction | None  # its debit; None when it costs nothing

    @property
    def cost(self) -> Decimal:
        return self.usage.cost

    @property
    def digest(self) -> str:
        return self.usage.request_hash


def _record(
    attribution: Attribution, events: Sequence[UsageInput], hold: Hold | None = None
) -> list[Outcome]:
    """The metering path (see `usage_record_many`). With `hold`, `events` is the one event that
    captures it (`authorization_capture`): paid from the hold's account, the hold's reservation
    released, its transaction keyed by the hold, lots past expiry that it kept burned first."""
    organization = attribution.organization
    now = timezone.now()
    outcomes: list[Outcome | None] = [None] * len(events)
    priced: list[_Priced] = []
    for index, event in enumerate(events):
        try:
            occurred_at = _occurred_at(event, now)
            cost, price, source = usage_price(event, occurred_at)
        except ApplicationError as exc:
            if hold is not None:
                raise
            outcomes[index] = exc
            continue
        digest = event.digest()
        key = _check_key(
            f"capture:{hold.idempotency_key}" if hold else f"usage:{event.id}", derived=True
        )
        txn = None
        if cost > 0:
            txn = usage_store.row(
                LedgerTransaction,
                organization=organization,
                kind=LedgerTransaction.Kind.USAGE,
                idempotency_key=key,
                request_hash=request_hash(hold=hold.pk, amount=cost) if hold else digest,
                metadata={"event_id": event.id},
                created_at=now,  # the batch's one time, as its usage rows' recorded_at
            )
        usage = _usage_event(
            attribution, event, digest, price=price, cost=cost, source=source, txn=txn,
            occurred_at=occurred_at, now=now,
            extra_metadata={"authorization": hold.idempotency_key} if hold else None,
        )  # fmt: skip
        priced.append(_Priced(index, event, key, usage, txn))
    if not priced:
        return outcomes

    account, budgets = usage_store.lock_spending(
        attribution, account_id=hold.account_id if hold else None
    )
    sink_id = account.sink_id or system_account_of(organization.pk, Kind.USAGE).pk
    # The lock order of every debit: the account, the budget windows (and a hold's), the hold.
    gate = BudgetGate.of(
        attribution, now, extra_window_ids=hold.budget_windows if hold else (), budgets=budgets
    )
    locked = usage_store.read_locked(
        account,
        organization.pk,
        [p.event.id for p in priced],
        [p.key for p in priced],
        expired_first_at=now if hold else None,
        hold=hold,  # locked after the account and the windows, its state as committed
    )
    hold = locked.hold
    if hold is None:
        _expire_due(account, now, locked.lots)
    transaction_ids, usage_ids = iter(locked.transaction_ids), iter(locked.usage_ids)
    writes = usage_store.Writes(account=account, spent=Decimal(0))
    touched: dict[int, object] = {}
    new: dict[str, UsageEvent] = {}
    crossings: dict[int, list] = {}

    for item in priced:
        event = item.event
        refusal = _refusal(item, item.key, locked, new, hold, now)
        if isinstance(refusal, ApplicationError) and hold is not None:
            raise refusal  # a capture refused: its transaction rolls back whole
        if refusal is not None:
            outcomes[item.index] = (
                UsageResult(refusal, False, account.available)
                if isinstance(refusal, UsageEvent)
                else refusal
            )
            continue
        pairs = gate.applicable(event.operation, event.model)
        try:
            if hold is not None:  # its reservation leaves the account and its windows
                account.held -= hold.amount
                writes.released += hold.amount
                gate.release(hold.budget_windows, hold.amount)
            _ensure_available(account, item.cost)
            if hold is None or item.cost > hold.amount:  # beyond a hold: as a new debit
                gate.check(pairs, item.cost)
        except ApplicationError as exc:
            if hold is not None:
                raise  # the hold's release above rolls back with it
            outcomes[item.index] = exc
            continue
        txn, row = item.txn, item.usage
        if txn is not None:
            txn.pk = next(transaction_ids, None)  # the usage row has it as a related row
            writes.transactions.append(txn)
            writes.entries += [
                usage_store.entry(transaction_id=txn.pk, account_id=account.pk, amount=-portion,
                                  lot_id=lot.pk, created_at=now)
                for lot, portion in burn_lots(locked.lots, item.cost, touched)
            ]  # fmt: skip
            writes.entries.append(
                usage_store.entry(transaction_id=txn.pk, account_id=sink_id, amount=item.cost,
                                  lot_id=None, created_at=now)
            )  # fmt: skip
            account.balance -= item.cost
            writes.spent += item.cost
            row.budget_windows = [w.pk for _, w in pairs]
        crossings[item.index] = gate.charge(pairs, item.cost)
        row.pk = next(usage_ids, None)
        writes.usage.append(row)
        new[event.id] = row
        outcomes[item.index] = UsageResult(row, True, account.available)
        if hold is not None:
            hold.status, hold.resolved_at = Hold.Status.CAPTURED, now
            hold.captured_amount, hold.transaction = item.cost, txn
            writes.hold = hold

    writes.lots = list(touched.values())
    writes.windows = gate.counters_sql()
    usage_store.write(writes)
    if hold is not None:  # what the hold kept of lots past expiry goes now (rows as written)
        _expire_due(account, now, locked.lots)
    fired = {(a.budget_id, a.window_start, a.threshold): a for a in gate.flush()}
    for index, crossed in crossings.items():
        alerts = [fired[k] for c in crossed if (k := (c.budget.pk, c.window.window_start,
                                                      c.threshold)) in fired]  # fmt: skip
        if alerts:
            result = outcomes[index]
            outcomes[index] = UsageResult(result.event, True, result.balance_after, tuple(alerts))
    return outcomes


def _refusal(item: _Priced, key: str, locked, new: dict, hold: Hold | None, now: datetime):
    """Why an event is not recorded now, before its amounts are looked at: the event recorded
    before (a retry: its first result) or an ApplicationError; None to go on."""
    event = item.event
    earlier = locked.existing.get(event.id) or new.get(event.id)
    if earlier is not None:  # whichever request recorded it (the API hides others' events)
        if earlier.request_hash != item.digest:
            return IdempotencyConflict(
                f"Usage event '{event.id}' was recorded with a different body.", event_id=event.id
            )
        return earlier
    if hold is not None and (hold.status != Hold.Status.PENDING or hold.expires_at <= now):
        state = hold.status if hold.status != Hold.Status.PENDING else "expired"
        return HoldNotPending(f"This hold is {state}.", hold_status=state)
    if key in locked.keys_taken:  # a ledger debit of another request
        return IdempotencyConflict(
            f"Usage event '{event.id}' was recorded by another request.", event_id=event.id
        )
    return None


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


@dataclass(frozen=True)
class HoldRequest:
    """One hold to make: `authorization_create`'s arguments but the attribution."""

    id: str
    amount: Decimal | None = None
    model: str = ""
    prompt_tokens: int = 0
    max_tokens: int = 0
    timeout: timedelta | None = None
    operation: str = UsageEvent.Operation.CHAT


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
    PermissionDenied (a model a guardrail of the key or member does not allow).

    Concurrent calls of this process for the same attribution may share one transaction
    (`group_commit`: `authorization_create_many`), each with its own outcome, as if made one
    after the other."""
    outcome = record_grouped(
        lane_of("hold", attribution),
        HoldRequest(
            id=id,
            amount=amount,
            model=model,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            timeout=timeout,
            operation=operation,
        ),
        lambda requests: authorization_create_many(attribution=attribution, requests=requests),
    )
    if isinstance(outcome, ApplicationError):
        raise outcome
    return outcome


def authorization_create_many(
    *, attribution: Attribution, requests: Sequence[HoldRequest]
) -> list[tuple[Hold, bool] | ApplicationError]:
    """Make the holds of `requests` in order, each as if alone (`authorization_create`): one
    outcome per request, (hold, created) or the ApplicationError that refused it. One
    transaction (a savepoint inside a caller's): the spending account locked once (with the
    budgets that apply), their windows, then one statement per hold (`hold_insert_unless_due`)
    and one for the windows' counters. A refused request writes nothing of its own (what it
    found due meanwhile, lots past expiry or a budget's new window, is written as for any)."""
    now = timezone.now()
    outcomes: list = [None] * len(requests)
    amounts: dict[int, Decimal] = {}
    for index, request in enumerate(requests):
        try:
            amounts[index] = _hold_amount(attribution, request, now)
        except ApplicationError as exc:
            outcomes[index] = exc
    if not amounts:
        return outcomes
    with transaction.atomic():
        # Accounts first, then the budget windows: the order of every debit. The lock statement
        # reads the budgets that apply too (`usage_store.lock_spending`).
        account, budgets = usage_store.lock_spending(attribution)
        gate = BudgetGate.of(attribution, now, budgets=budgets)
        for index, amount in amounts.items():
            request = requests[index]
            pairs = gate.applicable(request.operation, request.model)
            try:
                hold, created = hold_authorize_in_transaction(
                    account=account,  # locked: its `held` counts the holds made before
                    account_locked=True,
                    check=lambda pairs=pairs, amount=amount: gate.check(pairs, amount),
                    amount=amount,
                    idempotency_key=request.id,
                    timeout=request.timeout,
                    extra_digest=request_hash(
                        model=request.model,
                        prompt=request.prompt_tokens,
                        max_tokens=request.max_tokens,
                    ),
                    api_key=attribution.api_key,
                    team=attribution.team,
                    member=attribution.member,
                    model=request.model,
                    budget_windows=[w.pk for _, w in pairs],
                )
            except ApplicationError as exc:
                outcomes[index] = exc
                continue
            if created:
                hold.organization = attribution.organization  # as loaded: a capture reads it
                gate.reserve(pairs, amount)
            outcomes[index] = (hold, created)
        gate.flush()
    return outcomes


def _hold_amount(attribution: Attribution, request: HoldRequest, now: datetime) -> Decimal:
    """The credits `request` holds, once the guardrails allow its model. Raises
    PermissionDenied, ValidationFailed."""
    guardrail_check_model(
        organization_id=attribution.organization.pk,
        api_key_id=attribution.api_key.pk if attribution.api_key else None,
        member_id=attribution.member.pk if attribution.member else None,
        model=request.model,
    )
    amount = request.amount
    if amount is None:
        if not request.model:
            raise ValidationFailed({"amount": ["Give an amount, or a model and max_tokens."]})
        amount = authorization_estimate(
            model=request.model,
            prompt_tokens=request.prompt_tokens,
            max_tokens=request.max_tokens,
            at=now,
        )
    return parse_credits(amount)


def authorization_capture(*, hold: Hold, event: UsageInput) -> UsageResult:
    """Capture a hold with the request's actual usage: records the usage event (priced as
    `usage_record` does, through the same path) and posts its cost, releasing the rest of the
    hold. A retry of the same capture returns the first result. It spends first the lots the
    hold kept past their expiry; what remains of those expires right after.

    The hold's reservation leaves its account and its budget windows; the cost is counted in the
    current windows of every budget that applies. Beyond the hold, a capture is checked like a
    new debit.

    Raises HoldNotPending (voided, expired, captured), InsufficientCredits (cost above the hold
    and not available), BudgetExceeded (cost above the hold and past a budget),
    ValidationFailed, IdempotencyConflict (the event id taken by another request), NotFound.

    Concurrent captures of this process on the same account may share one transaction
    (`group_commit`: `authorization_capture_many`), each with its own outcome."""
    lane = ("capture", hold.account_id)
    outcome = record_grouped(lane, (hold, event), authorization_capture_many)
    if isinstance(outcome, ApplicationError):
        raise outcome
    return outcome


def authorization_capture_many(captures: Sequence[tuple[Hold, UsageInput]]) -> list[Outcome]:
    """Capture each (hold, event) of `captures` in order, each as if alone
    (`authorization_capture`): one outcome per capture, its UsageResult or the ApplicationError
    that refused it (a refused capture writes nothing). One transaction, the metering path's
    statements for each capture."""

    def record() -> list[Outcome]:
        outcomes: list[Outcome] = []
        for hold, event in captures:
            try:
                outcomes.append(_record(Attribution.of_hold(hold), [event], hold)[0])
            except ApplicationError as exc:  # raised before it wrote anything
                outcomes.append(exc)
        return outcomes

    return _run(record)
