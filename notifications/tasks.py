"""Delivery of the outbox, on Celery.

`outbox_deliver(id)` claims a due message for a lease (`attempts + 1`, `next_attempt_at` pushed
past the attempt's timeout) in a short transaction, sends it outside any transaction, and records
the attempt: delivered; failed for good; or pending again after the next back-off delay
(`WEBHOOK_RETRY_DELAYS`), dead after the last. A worker lost mid-attempt leaves the message pending
with its lease running out; `outbox_sweep` (beat, every minute) re-queues every pending message
past its `next_attempt_at` (`select_for_update(skip_locked=True)`), as it does retries due later
than a minute (no long countdowns sit in the broker). Claims skip locked rows and check the time,
so a message queued twice is sent once.

An endpoint failing for `WEBHOOK_DISABLE_AFTER` (24 hours) is disabled, and the organization's
admins get a notification."""

from __future__ import annotations

from datetime import timedelta

from celery import current_app, shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .delivery import Outcome, send
from .metrics import delivery_count
from .models import DeliveryAttempt, OutboxMessage, WebhookEndpoint

SWEEP_BATCH = 500
COUNTDOWN_LIMIT = 60  # seconds: later retries are left to the sweep


def _lease() -> timedelta:
    return timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS + 5)


def _claim(message_id: int) -> OutboxMessage | None:
    now = timezone.now()
    with transaction.atomic():
        message = (
            OutboxMessage.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("endpoint", "organization")
            .filter(
                pk=message_id,
                status=OutboxMessage.Status.PENDING,
                next_attempt_at__lte=now,
            )
            .first()
        )
        if message is None:
            return None
        message.attempts += 1
        message.next_attempt_at = now + _lease()
        message.save(update_fields=["attempts", "next_attempt_at"])
    return message


def _endpoint_failed(endpoint: WebhookEndpoint, now) -> bool:
    """Mark the endpoint failing; disable it (and tell the admins) after a day of failures.
    Returns whether it was disabled now."""
    from .services import notify

    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    if endpoint.failing_since is None:
        endpoint.failing_since = now
        endpoint.save(update_fields=["failing_since"])
        return False
    if endpoint.enabled and now - endpoint.failing_since >= settings.WEBHOOK_DISABLE_AFTER:
        endpoint.enabled = False
        endpoint.disabled_at = now
        endpoint.save(update_fields=["enabled", "disabled_at"])
        OutboxMessage.objects.filter(endpoint=endpoint, status=OutboxMessage.Status.PENDING).update(
            status=OutboxMessage.Status.FAILED, last_error="The endpoint was disabled."
        )
        notify(
            organization=endpoint.organization,
            type="webhook.endpoint_disabled",
            data={"endpoint": str(endpoint.public_id), "url": endpoint.url},
        )
        return True
    return False


def _record(message: OutboxMessage, outcome: Outcome, started) -> str:
    now = timezone.now()
    retry_in = None
    with transaction.atomic():
        current = OutboxMessage.objects.select_for_update(of=("self",)).get(pk=message.pk)
        DeliveryAttempt.objects.create(
            message=current,
            started_at=started,
            duration_ms=outcome.duration_ms,
            status_code=outcome.status_code,
            error=outcome.error,
            response_body=outcome.response_body,
            success=outcome.success,
        )
        endpoint = message.endpoint
        if outcome.success:
            current.status = OutboxMessage.Status.DELIVERED
            current.delivered_at = now
            current.last_error = ""
            if endpoint is not None:
                WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=None)
        else:
            current.last_error = outcome.error
            delays = settings.WEBHOOK_RETRY_DELAYS
            if current.status != OutboxMessage.Status.PENDING:
                pass  # failed meanwhile (endpoint deleted or disabled): stays so
            elif outcome.permanent:
                current.status = OutboxMessage.Status.FAILED
            elif current.attempts > len(delays):
                current.status = OutboxMessage.Status.DEAD
            else:
                delay = delays[current.attempts - 1]
                current.next_attempt_at = now + timedelta(seconds=delay)
                retry_in = delay
            if endpoint is not None and not outcome.permanent and _endpoint_failed(endpoint, now):
                current.status = OutboxMessage.Status.FAILED
                current.last_error = f"{outcome.error}; the endpoint was disabled."
                retry_in = None
        current.save(update_fields=["status", "delivered_at", "last_error", "next_attempt_at"])
        if retry_in is not None and retry_in <= COUNTDOWN_LIMIT:
            if not current_app.conf.task_always_eager:  # eager: the sweep retries
                pk = current.pk
                transaction.on_commit(
                    lambda: outbox_deliver.apply_async(args=[pk], countdown=retry_in)
                )
    return current.status


@shared_task(acks_late=True)
def outbox_deliver(message_id: int) -> str:
    """Send one outbox message if it is due and nobody else is sending it; returns its status
    afterwards (`skipped` when it was not due, not pending, or claimed elsewhere)."""
    message = _claim(message_id)
    if message is None:
        return "skipped"
    started = timezone.now()
    outcome = send(message)
    status = _record(message, outcome, started)
    delivery_count(channel=message.channel, status=status)  # for /metrics
    return status


@shared_task
def outbox_sweep(limit: int = SWEEP_BATCH) -> int:
    """Re-queue pending messages past their `next_attempt_at` (lost workers, later retries)."""
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            OutboxMessage.objects.select_for_update(skip_locked=True)
            .filter(status=OutboxMessage.Status.PENDING, next_attempt_at__lte=now)
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:limit]
        )
        transaction.on_commit(lambda: [outbox_deliver.delay(pk) for pk in ids])
    return len(ids)
