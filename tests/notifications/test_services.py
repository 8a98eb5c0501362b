"""notify, preferences, the outbox's channels (e-mail through locmem, SMS through a loopback Twilio,
webhooks in-process), the SSRF rules, secrets at rest, and disabling a failing endpoint."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection, transaction
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from accounts.roles import Role
from notifications.models import (
    DeliveryAttempt,
    Notification,
    NotificationEvent,
    OutboxMessage,
    WebhookEndpoint,
)
from notifications.services import (
    notification_preferences_set,
    notify,
    webhook_endpoint_create,
    webhook_endpoint_update,
)
from notifications.tasks import outbox_deliver, outbox_sweep
from notifications.urlcheck import UrlRefused, check_url
from portal.errors import ValidationFailed
from tests.conftest import SYSTEM

pytestmark = pytest.mark.django_db

DATA = {"budget": "pool-monthly", "threshold": 75, "window_start": "2025-06-01"}


@pytest.fixture
def email_backend(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


def test_notify_reaches_members_whose_role_may_see_it_per_their_preferences(
    tenant, email_backend, django_capture_on_commit_callbacks
):
    admin = tenant.member(Role.ADMIN, email="admin@acme.test")
    member = tenant.member(Role.MEMBER, email="member@acme.test")
    viewer = tenant.member(Role.VIEWER, email="viewer@acme.test")
    notification_preferences_set(
        organization=tenant.org,
        user=admin,
        preferences={"budget.exhausted": {"in_app": False}},
        actor=SYSTEM,
    )
    with django_capture_on_commit_callbacks(execute=True):
        notify(organization=tenant.org, type="budget.exhausted", data=DATA)
    # default audience: who manages credits (owner, admin); the admin opted out of in-app
    assert set(Notification.objects.values_list("recipient__email", flat=True)) == {
        tenant.owner.email
    }
    assert sorted(m.to[0] for m in mail.outbox) == sorted([tenant.owner.email, admin.email])
    assert "pool-monthly" in mail.outbox[0].body and "[Acme]" in mail.outbox[0].subject
    assert OutboxMessage.objects.filter(channel="email", status="delivered").count() == 2

    # an explicit audience: only those whose role may see the type (viewer: credits:read)
    with django_capture_on_commit_callbacks(execute=True):
        notify(
            organization=tenant.org,
            type="budget.threshold_crossed",
            data=DATA,
            audience=[member, viewer.pk],
        )
    got = Notification.objects.filter(type="budget.threshold_crossed")
    assert set(got.values_list("recipient", flat=True)) == {member.pk, viewer.pk}
    # webhook.endpoint_disabled needs org:write: a member named in the audience gets nothing
    notify(
        organization=tenant.org,
        type="webhook.endpoint_disabled",
        data={"url": "https://x.test"},
        audience=[member],
    )
    assert not Notification.objects.filter(type="webhook.endpoint_disabled").exists()


def test_notify_rolls_back_with_its_caller(tenant):
    with pytest.raises(RuntimeError), transaction.atomic():
        notify(organization=tenant.org, type="balance.low", data={"available": "1.00"})
        raise RuntimeError("the change failed")
    assert not Notification.objects.exists() and not OutboxMessage.objects.exists()


def test_unknown_type_is_refused(tenant):
    with pytest.raises(ValueError, match="Unknown event type"):
        notify(organization=tenant.org, type="budget.nope", data={})


def test_authorization_refused_fires_once_per_key_per_hour(tenant):
    data = {"key": "sk-abc", "reason": "budget exceeded"}
    first = notify(organization=tenant.org, type="authorization.refused", data=data)
    again = notify(organization=tenant.org, type="authorization.refused", data=data)
    other = notify(
        organization=tenant.org, type="authorization.refused", data={**data, "key": "sk-xyz"}
    )
    assert first is not None and again is None and other is not None
    assert Notification.objects.filter(type="authorization.refused").count() == 2
    # the rule is the database's: a row of the same bucket cannot be inserted twice
    from django.db import IntegrityError

    with pytest.raises(IntegrityError), transaction.atomic():
        NotificationEvent.objects.create(
            organization=tenant.org,
            type="authorization.refused",
            dedupe_key="sk-abc",
            bucket=first.bucket,
        )
    # the next hour's bucket is a new one
    NotificationEvent.objects.filter(pk=first.pk).update(bucket=first.bucket - timedelta(hours=1))
    assert notify(organization=tenant.org, type="authorization.refused", data=data) is not None


@pytest.mark.django_db(transaction=True)
def test_authorization_refused_once_under_concurrency(tenant):
    """Two transactions notifying the same key at once: one event, one notification."""
    results, barrier = [], threading.Barrier(2)

    def run():
        try:
            barrier.wait()
            with transaction.atomic():
                results.append(
                    notify(
                        organization=tenant.org,
                        type="authorization.refused",
                        data={"key": "sk-race", "reason": "x"},
                    )
                )
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(r is None for r in results) == [False, True]
    assert NotificationEvent.objects.filter(type="authorization.refused").count() == 1


def test_the_secret_is_encrypted_at_rest(tenant):
    endpoint, secret = webhook_endpoint_create(
        organization=tenant.org, url="https://hooks.example.test/a", events=["balance.low"],
        actor=SYSTEM,
    )  # fmt: skip
    assert secret.startswith("whsec_")
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM notifications_webhookendpoint WHERE id = %s", [endpoint.pk])
        row = " ".join(str(v) for v in cursor.fetchone())
    assert secret not in row and secret.removeprefix("whsec_") not in row
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).secret == secret


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.test/x",
        "file:///etc/passwd",
        "http://127.0.0.1:8080/x",
        "http://localhost/x",
        "http://[::1]/x",
        "http://10.1.2.3/x",
        "http://192.168.0.10/x",
        "http://172.16.5.4/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/x",
        "http://0.0.0.0/x",
        "http://100.64.0.1/x",
        "https://portal.example.test/api/v1/webhooks",
        "https://user:pw@hooks.example.test/x",
        "not a url",
    ],
)
def test_urls_refused_at_creation(tenant, settings, url):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    with pytest.raises(ValidationFailed) as refused:
        webhook_endpoint_create(
            organization=tenant.org, url=url, events=["balance.low"], actor=SYSTEM
        )
    assert "url" in refused.value.metadata["errors"]
    assert not WebhookEndpoint.objects.exists()


def test_a_public_address_is_allowed(settings, monkeypatch):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    import socket

    monkeypatch.setattr(
        socket, "getaddrinfo", lambda *a, **k: [(2, 1, 6, "", ("93.184.215.14", 443))]
    )
    assert check_url("https://hooks.example.com/x") == "https://hooks.example.com/x"


def test_refused_again_at_delivery_when_dns_changed(
    tenant, settings, monkeypatch, django_capture_on_commit_callbacks
):
    """Created while the name pointed at a public address; at delivery it resolves to the
    metadata service: the message fails without a request."""
    import socket

    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    answer = {"ip": "93.184.215.14"}
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [(2, 1, 6, "", (answer["ip"], 443))])
    webhook_endpoint_create(
        organization=tenant.org, url="https://rebind.example.com/x", events=["balance.low"],
        actor=SYSTEM,
    )  # fmt: skip
    answer["ip"] = "169.254.169.254"
    with django_capture_on_commit_callbacks(execute=True):
        notify(organization=tenant.org, type="balance.low", data={"available": "1"})
    message = OutboxMessage.objects.get(channel="webhook")
    assert message.status == "failed" and "Refused" in message.last_error
    attempt = DeliveryAttempt.objects.get(message=message)
    assert attempt.status_code is None and not attempt.success
    with pytest.raises(UrlRefused):
        check_url("https://rebind.example.com/x")


def test_unknown_event_types_are_refused(tenant):
    with pytest.raises(ValidationFailed):
        webhook_endpoint_create(
            organization=tenant.org, url="https://hooks.example.test/a", events=["nope"],
            actor=SYSTEM,
        )  # fmt: skip


def test_webhook_in_process_is_signed_and_subscribed_types_only(
    tenant, receiver, django_capture_on_commit_callbacks
):
    endpoint, secret = webhook_endpoint_create(
        organization=tenant.org, url=receiver.url, events=["budget.exhausted"], actor=SYSTEM
    )
    receiver.secret = secret
    with django_capture_on_commit_callbacks(execute=True):
        notify(organization=tenant.org, type="balance.low", data={"available": "1"})
        notify(organization=tenant.org, type="budget.exhausted", data=DATA)
    assert len(receiver.requests) == 1 and receiver.requests[0]["verified"]
    payload = Webhook(secret).verify(receiver.requests[0]["body"], receiver.requests[0]["headers"])
    assert payload["type"] == "budget.exhausted" and payload["data"] == DATA
    # disabled endpoints get nothing
    webhook_endpoint_update(endpoint=endpoint, enabled=False, actor=SYSTEM)
    with django_capture_on_commit_callbacks(execute=True):
        notify(organization=tenant.org, type="budget.exhausted", data=DATA)
    assert len(receiver.requests) == 1


def test_sms_through_twilio_messages_api(tenant, twilio, django_capture_on_commit_callbacks):
    notification_preferences_set(
        organization=tenant.org,
        user=tenant.owner,
        phone="+14155550123",
        preferences={"balance.low": {"sms": True}},
        actor=SYSTEM,
    )
    with django_capture_on_commit_callbacks(execute=True):
        notify(organization=tenant.org, type="balance.low", data={"available": "0.42"})
    assert len(twilio.messages) == 1
    sent = twilio.messages[0]
    assert sent["To"] == "+14155550123" and sent["From"] == "+15005550006"
    assert "0.42" in sent["Body"] and "Acme" in sent["Body"]
    message = OutboxMessage.objects.get(channel="sms")
    assert message.status == "delivered"
    assert DeliveryAttempt.objects.get(message=message).response_body == sent["sid"]


def test_sms_refused_by_twilio_fails_without_retry(
    tenant, twilio, django_capture_on_commit_callbacks
):
    twilio.fail_with = 400
    notification_preferences_set(
        organization=tenant.org, user=tenant.owner, phone="+14155550123",
        preferences={"balance.low": {"sms": True}}, actor=SYSTEM,
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        notify(organization=tenant.org, type="balance.low", data={"available": "0.42"})
    assert OutboxMessage.objects.get(channel="sms").status == "failed"


def test_sms_needs_a_phone_number(tenant):
    with pytest.raises(ValidationFailed):
        notification_preferences_set(
            organization=tenant.org, user=tenant.owner,
            preferences={"balance.low": {"sms": True}}, actor=SYSTEM,
        )  # fmt: skip


def test_retries_back_off_then_die(tenant, receiver, settings):
    settings.WEBHOOK_RETRY_DELAYS = [5, 300, 1800, 7200, 18000]
    receiver.statuses = [500] * 10
    webhook_endpoint_create(
        organization=tenant.org, url=receiver.url, events=["balance.low"], actor=SYSTEM
    )
    notify(organization=tenant.org, type="balance.low", data={"available": "1"})
    message = OutboxMessage.objects.get(channel="webhook")
    gaps = []
    for _ in range(6):
        before = timezone.now()
        assert outbox_deliver(message.pk) in ("pending", "dead")
        message.refresh_from_db()
        gaps.append(round((message.next_attempt_at - before).total_seconds()))
        assert outbox_deliver(message.pk) == "skipped"  # not due yet
        OutboxMessage.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now())
    assert gaps[:5] == [5, 300, 1800, 7200, 18000]
    assert message.status == "dead" and message.attempts == 6


def test_the_sweep_requeues_what_is_due(tenant, receiver, django_capture_on_commit_callbacks):
    webhook_endpoint_create(
        organization=tenant.org, url=receiver.url, events=["balance.low"], actor=SYSTEM
    )
    notify(organization=tenant.org, type="balance.low", data={"available": "1"})  # not queued
    due = OutboxMessage.objects.count()  # the webhook and the owner's e-mail
    assert due == 2
    with django_capture_on_commit_callbacks(execute=True):
        assert outbox_sweep() == due
    assert set(OutboxMessage.objects.values_list("status", flat=True)) == {"delivered"}
    assert len(receiver.accepted()) == 1
    assert outbox_sweep() == 0


def test_an_endpoint_failing_for_a_day_is_disabled_and_admins_told(tenant, receiver):
    admin = tenant.member(Role.ADMIN, email="admin@acme.test")
    member = tenant.member(Role.MEMBER, email="member@acme.test")
    receiver.statuses = [500] * 5
    endpoint, _ = webhook_endpoint_create(
        organization=tenant.org, url=receiver.url, events=["balance.low"], actor=SYSTEM
    )
    notify(organization=tenant.org, type="balance.low", data={"available": "1"})
    message = OutboxMessage.objects.get(channel="webhook")
    outbox_deliver(message.pk)
    endpoint.refresh_from_db()
    assert endpoint.enabled and endpoint.failing_since is not None
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        failing_since=timezone.now() - timedelta(hours=24, minutes=1)
    )
    OutboxMessage.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now())
    outbox_deliver(message.pk)
    endpoint.refresh_from_db()
    assert not endpoint.enabled and endpoint.disabled_at is not None
    told = Notification.objects.filter(type="webhook.endpoint_disabled")
    assert set(told.values_list("recipient", flat=True)) == {tenant.owner.pk, admin.pk}
    assert member.pk not in told.values_list("recipient", flat=True)
    message.refresh_from_db()
    assert message.status == "failed"
