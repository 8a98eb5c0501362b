"""What a request is charged: the hold of its worst case (`chat_hold`), the capture of its actual
cost through the metering path (`chat_capture`, retried in the background when the database
cannot take it: `_capture`), or the hold released (`chat_void`); the usage object answered."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

from django.db import connection

from portal.errors import (
    DATABASE_UNAVAILABLE,
    ApplicationError,
    BudgetExceeded,
    InsufficientCredits,
    PermissionDenied,
    ValidationFailed,
)
from portal.money import parse_credits

from ..models import Upstream
from ..services.holds import HoldNotPending, hold_void
from ..services.usage import (
    Attribution,
    UsageInput,
    authorization_capture,
    authorization_create,
    usage_record,
)
from .request import ChatRequest, Held

logger = logging.getLogger(__name__)


HOLD_TIMEOUT = timedelta(minutes=30)  # the backstop: a stream longer than this pays by debit
# Seconds before each retry of a capture the database could not take (`_capture`): about
# 35 minutes in all, past HOLD_TIMEOUT (a capture after the hold expired is a plain debit).
CAPTURE_RETRY_DELAYS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 960)


def chat_hold(*, attribution: Attribution, request: ChatRequest) -> Held:
    """Hold the worst case of the first candidate the credits allow (in the order of the
    request). Raises the first candidate's refusal when none can be held: InsufficientCredits,
    BudgetExceeded (402), PermissionDenied (a guardrail refuses every candidate)."""
    generation_id = f"gen-{uuid.uuid4().hex}"
    first_refusal = None
    for candidate in request.candidates:
        try:
            hold, _ = authorization_create(
                attribution=attribution,
                id=generation_id,
                model=candidate.model,
                prompt_tokens=request.prompt_bound,
                max_tokens=candidate.max_output,
                timeout=HOLD_TIMEOUT,
            )
        except (InsufficientCredits, BudgetExceeded, PermissionDenied) as refusal:
            first_refusal = first_refusal or refusal
            continue
        return Held(request, candidate, hold, generation_id)
    raise first_refusal


def _usage_input(held: Held, usage: dict | None, streamed_bytes: int = 0) -> UsageInput:
    """The usage event of a served request: the upstream's reported counts (and, from an
    OpenRouter upstream, its `usage.cost`), or without usage the prompt bound and the bytes
    streamed."""
    upstream = held.candidate.upstream
    cost = None
    metadata = {
        "upstream": upstream.name,
        "upstream_id": str(upstream.public_id),
        "latency_ms": round((time.monotonic() - held.started) * 1000),
        "gateway": True,
    }
    if held.request.user:
        metadata["user"] = held.request.user
    if isinstance(usage, dict):
        prompt = _count(usage.get("prompt_tokens"))
        completion = _count(usage.get("completion_tokens"))
        cached = _count((usage.get("prompt_tokens_details") or {}).get("cached_tokens"))
        reasoning = _count((usage.get("completion_tokens_details") or {}).get("reasoning_tokens"))
        if upstream.kind == Upstream.Kind.OPENROUTER and usage.get("cost") is not None:
            try:
                cost = parse_credits(
                    Decimal(str(usage["cost"])), allow_zero=True, round_to_quantum=True
                )
            except (ArithmeticError, ValueError, ValidationFailed):  # not an amount: priced
                metadata["reported_cost_refused"] = str(usage["cost"])[:50]
    else:
        prompt, completion, cached, reasoning = held.request.prompt_bound, streamed_bytes, 0, 0
        metadata["usage_estimated"] = True
    return UsageInput(
        id=held.generation_id,
        model=held.candidate.model,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=min(cached, prompt),
        reasoning_tokens=min(reasoning, completion),
        cost=cost,
        conversation_id=held.request.session_id or held.request.user,
        metadata=metadata,
    )


def _count(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def chat_capture(held: Held, usage: dict | None, streamed_bytes: int = 0) -> Decimal:
    """Capture the hold with the request's actual cost (recording its usage event through the
    metering path) and return it (credits). The hold is always resolved:

    - a cost above the hold whose excess the credits or a budget do not allow is charged the
      hold's amount (the most that was reserved; `metadata.cost_above_hold` keeps the actual);
    - a hold that expired meanwhile (a stream longer than HOLD_TIMEOUT) is charged by a plain
      debit (`usage_record`)."""
    event = _usage_input(held, usage, streamed_bytes)
    try:
        return authorization_capture(hold=held.hold, event=event).event.cost
    except (InsufficientCredits, BudgetExceeded):
        capped = replace(
            event,
            cost=held.hold.amount,
            metadata={**(event.metadata or {}), "cost_above_hold": True},
        )
        return authorization_capture(hold=held.hold, event=capped).event.cost
    except HoldNotPending:
        attribution = Attribution.of_hold(held.hold)
        return usage_record(attribution=attribution, event=event).event.cost


def _capture(held: Held, usage: dict | None, streamed_bytes: int = 0) -> Decimal | None:
    """`chat_capture`, or None when the database cannot take it now (`DATABASE_UNAVAILABLE`):
    the upstream has answered and its tokens are bought, so the answer still goes out (without
    `usage.cost`) and a thread of its own retries the capture after each of
    CAPTURE_RETRY_DELAYS. A retry is idempotent (a capture that did commit before its error
    returns its first result); one after the hold expired is charged by a plain debit. Lost only
    when the process ends before the database answers: the hold then expires unpaid."""
    try:
        return chat_capture(held, usage, streamed_bytes)
    except DATABASE_UNAVAILABLE as exc:
        logger.warning("gateway: capture of %s deferred: %s", held.generation_id, exc)
    threading.Thread(
        target=_capture_retried,
        args=(held, usage, streamed_bytes),
        name=f"capture-{held.generation_id}",
        daemon=True,
    ).start()
    return None


def _capture_retried(held: Held, usage: dict | None, streamed_bytes: int) -> None:
    for delay in CAPTURE_RETRY_DELAYS:
        time.sleep(delay)
        try:
            cost = chat_capture(held, usage, streamed_bytes)
        except DATABASE_UNAVAILABLE:
            continue
        except ApplicationError:
            logger.exception("gateway: deferred capture of %s failed", held.generation_id)
            return
        finally:
            connection.close()  # this thread's connection, back to the pool
        logger.info("gateway: deferred capture of %s: %s credits", held.generation_id, cost)
        return
    logger.error("gateway: gave up the capture of %s; its hold expires", held.generation_id)


def chat_void(held: Held) -> None:
    """Release the whole hold (the upstream failed: nothing was bought)."""
    try:
        hold_void(hold=held.hold)
    except HoldNotPending:
        pass


def _usage_out(usage: dict | None, cost: Decimal | None) -> dict:
    """The usage object of an answer; without `cost` when the capture was deferred (None)."""
    usage = dict(usage) if isinstance(usage, dict) else {}
    for key in ("prompt_tokens", "completion_tokens"):
        usage[key] = _count(usage.get(key))
    usage.setdefault("total_tokens", usage["prompt_tokens"] + usage["completion_tokens"])
    usage.pop("cost", None)  # the upstream's, if any: ours is what was charged
    if cost is not None:  # Decimal; a JSON number at the boundary (DRF's encoder), as OpenRouter
        usage["cost"] = cost
    usage.setdefault("is_byok", False)
    return usage
