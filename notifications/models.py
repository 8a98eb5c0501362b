"""Notifications: in-app notifications, members' preferences, webhook endpoints, and the
transactional outbox every e-mail, SMS and webhook leaves through (with its delivery attempts).

Rules in the database: one preference per member and event type; an event that may fire once per
key and period (`authorization.refused`: once per API key per hour) is unique on its `bucket`;
message ids are unique."""

from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Organization

from . import crypto


def message_id() -> str:
    """A Standard Webhooks message id (`webhook-id`): `msg_` and 26 random characters."""
    return "msg_" + secrets.token_urlsafe(20).replace("-", "a").replace("_", "b")[:26]


class NotificationEvent(models.Model):
    """One call of `notify`: what happened, once. Events that may fire once per key and period
    carry `dedupe_key` and `bucket` (the period's start); the unique constraint refuses the
    second one in the same period, whoever inserts it concurrently."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="notification_events"
    )
    type = models.CharField(max_length=64)
    data = models.JSONField(default=dict)
    dedupe_key = models.CharField(max_length=200, blank=True)
    bucket = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "type", "dedupe_key", "bucket"],
                condition=~Q(dedupe_key=""),
                nulls_distinct=False,
                name="notification_event_once_per_bucket",
            )
        ]

    def __str__(self) -> str:
        return self.type


class Notification(models.Model):
    """An in-app notification of one member."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="notifications"
    )
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    event = models.ForeignKey(
        NotificationEvent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    type = models.CharField(max_length=64)
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["organization", "recipient", "-created_at"],
                name="notification_inbox",
            ),
            models.Index(
                fields=["organization", "recipient"],
                condition=Q(read_at__isnull=True),
                name="notification_unread",
            ),
        ]

    def __str__(self) -> str:
        return self.title


class NotificationPreference(models.Model):
    """A member's channels for one event type (no row: the type's defaults). Webhooks are the
    organization's, not a member's (`WebhookEndpoint`)."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="notification_preferences"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preferences"
    )
    event_type = models.CharField(max_length=64)
    in_app = models.BooleanField(default=True)
    email = models.BooleanField(default=False)
    sms = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "user", "event_type"], name="notification_preference_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.event_type}"


class WebhookEndpoint(models.Model):
    """An organization's webhook receiver. The signing secret (`whsec_...`, Standard Webhooks) is
    stored encrypted (Fernet, `FIELD_ENCRYPTION_KEY`) and shown once, at creation and rotation."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    event_types = models.JSONField(default=list)
    enabled = models.BooleanField(default=True)
    secret_encrypted = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    disabled_at = models.DateTimeField(null=True, blank=True)
    failing_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.url

    @property
    def secret(self) -> str:
        return crypto.decrypt(self.secret_encrypted)

    @secret.setter
    def secret(self, value: str) -> None:
        self.secret_encrypted = crypto.encrypt(value)


class OutboxMessage(models.Model):
    """A side effect written in the same transaction as the change that caused it; Celery
    delivers it after commit, retries with back-off, and a beat sweep re-queues what a lost worker
    left (`pending` past `next_attempt_at`). `failed`: refused for good (e.g. a URL that is not
    allowed, a disabled endpoint, a 4xx of Twilio); `dead`: every attempt failed."""

    class Channel(models.TextChoices):
        WEBHOOK = "webhook", "Webhook"
        EMAIL = "email", "E-mail"
        SMS = "sms", "SMS"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"
        DEAD = "dead", "Dead"

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="outbox_messages"
    )
    channel = models.CharField(max_length=16, choices=Channel.choices)
    target = models.CharField(max_length=2000, help_text="URL, e-mail address or phone number.")
    endpoint = models.ForeignKey(
        WebhookEndpoint,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
    )
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    event = models.ForeignKey(
        NotificationEvent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    event_type = models.CharField(max_length=64)
    payload = models.JSONField(default=dict)
    message_id = models.CharField(max_length=40, unique=True, default=message_id)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending"),
                name="outbox_due",
            ),
            models.Index(fields=["endpoint", "-created_at"], name="outbox_endpoint"),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} ({self.channel}, {self.status})"


class DeliveryAttempt(models.Model):
    """One try of one outbox message."""

    message = models.ForeignKey(OutboxMessage, on_delete=models.CASCADE, related_name="deliveries")
    started_at = models.DateTimeField(default=timezone.now)
    duration_ms = models.PositiveIntegerField(default=0)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    response_body = models.TextField(blank=True)
    success = models.BooleanField(default=False)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"{self.message.message_id} at {self.started_at:%Y-%m-%d %H:%M:%S}"
