"""Webhook delivery on a real Celery worker over Redis, to a loopback receiver that verifies the
Standard Webhooks signature with the `standardwebhooks` library."""

from __future__ import annotations

import json
import time

import pytest
from django.db import transaction

from notifications import tasks
from notifications.models import DeliveryAttempt, OutboxMessage
from notifications.services import notify, webhook_endpoint_create
from tests.conftest import SYSTEM

pytestmark = pytest.mark.django_db(transaction=True)

DATA = {"budget": "team-research-monthly", "threshold": 90, "window_start": "2025-06-01"}


def _endpoint(tenant, receiver):
    endpoint, secret = webhook_endpoint_create(
        organization=tenant.org, url=receiver.url, events=["budget.threshold_crossed"], actor=SYSTEM
    )
    receiver.secret = secret
    return endpoint


def _notify_through(worker, monkeypatch, tenant) -> OutboxMessage:
    """notify in a transaction; its on-commit queueing goes to the real worker's queue."""
    monkeypatch.setattr(
        tasks.outbox_deliver,
        "delay",
        lambda pk: worker.send("notifications.tasks.outbox_deliver", pk),
    )
    with transaction.atomic():
        notify(organization=tenant.org, type="budget.threshold_crossed", data=DATA)
    return OutboxMessage.objects.get(organization=tenant.org, channel="webhook")


def _wait_status(message: OutboxMessage, status: str, timeout: float = 40) -> OutboxMessage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message.refresh_from_db()
        if message.status == status:
            return message
        time.sleep(0.1)
    raise AssertionError(f"{message.message_id} is {message.status}, attempts {message.attempts}")


def test_a_signed_webhook_is_delivered_by_a_real_worker(tenant, receiver, worker, monkeypatch):
    _endpoint(tenant, receiver)
    w = worker()
    message = _notify_through(w, monkeypatch, tenant)
    _wait_status(message, "delivered")
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request["verified"] is True, "the standardwebhooks library verified the signature"
    assert request["headers"]["webhook-id"] == message.message_id
    assert message.message_id.startswith("msg_")
    body = json.loads(request["body"])
    assert body["type"] == "budget.threshold_crossed"
    assert body["data"] == DATA and body["timestamp"]
    attempt = DeliveryAttempt.objects.get(message=message)
    assert attempt.success and attempt.status_code == 200


def test_a_receiver_failing_three_times_gets_exactly_one_accepted_delivery(
    tenant, receiver, worker, monkeypatch
):
    _endpoint(tenant, receiver)
    receiver.statuses = [500, 502, 503]
    w = worker()
    message = _notify_through(w, monkeypatch, tenant)
    message = _wait_status(message, "delivered")
    time.sleep(2.5)  # no late duplicate after the success (retries are 1 s apart in tests)
    assert [r["status"] for r in receiver.requests] == [500, 502, 503, 200]
    assert len(receiver.accepted()) == 1
    assert all(r["verified"] for r in receiver.requests)
    assert {r["headers"]["webhook-id"] for r in receiver.requests} == {message.message_id}
    assert message.attempts == 4
    attempts = DeliveryAttempt.objects.filter(message=message)
    assert attempts.count() == 4 and attempts.filter(success=True).count() == 1
    message.endpoint.refresh_from_db()
    assert message.endpoint.failing_since is None  # cleared by the success


def test_a_worker_killed_mid_delivery_loses_no_message(tenant, receiver, worker, monkeypatch):
    """The first worker dies while the receiver holds its request (unanswered); the message
    stays pending until its lease runs out, and the beat sweep has another worker deliver it."""
    _endpoint(tenant, receiver)
    receiver.statuses = [500]  # the request the dead worker never got an answer to
    receiver.hang = 30
    first = worker()
    message = _notify_through(first, monkeypatch, tenant)
    receiver.wait(lambda: len(receiver.requests) == 1)
    first.kill()
    message.refresh_from_db()
    assert message.status == "pending" and message.attempts == 1
    assert not DeliveryAttempt.objects.filter(message=message).exists()

    receiver.hang = 0
    second = worker()
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        second.run("notifications.tasks.outbox_sweep")
        message.refresh_from_db()
        if message.status == "delivered":
            break
        time.sleep(1)
    assert message.status == "delivered", (message.status, message.attempts)
    assert len(receiver.accepted()) == 1
    assert receiver.accepted()[0]["headers"]["webhook-id"] == message.message_id
    assert receiver.accepted()[0]["verified"] is True
