"""Reads of the notifications app, scoped to one organization (and, for notifications, to the
member they were written for)."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from accounts.models import Organization, User

from .models import DeliveryAttempt, Notification, OutboxMessage, WebhookEndpoint


def notification_list(*, organization: Organization, user: User | None) -> QuerySet[Notification]:
    """The member's own notifications, newest first (none for a key that acts for no member)."""
    if user is None:
        return Notification.objects.none()
    return Notification.objects.filter(organization=organization, recipient=user)


def notification_unread_count(*, organization: Organization, user: User) -> int:
    return notification_list(organization=organization, user=user).filter(read_at=None).count()


def notification_get(*, organization: Organization, user: User | None, id) -> Notification | None:
    try:
        return notification_list(organization=organization, user=user).filter(public_id=id).first()
    except Exception:  # noqa: BLE001 - not a UUID: no such notification
        return None


def webhook_endpoint_list(*, organization: Organization) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(organization=organization).order_by("created_at", "id")


def webhook_endpoint_get(*, organization: Organization, id) -> WebhookEndpoint | None:
    try:
        return webhook_endpoint_list(organization=organization).filter(public_id=id).first()
    except Exception:  # noqa: BLE001 - not a UUID
        return None


def delivery_list(*, endpoint: WebhookEndpoint) -> QuerySet[OutboxMessage]:
    """The endpoint's messages, newest first, with their attempts."""
    return (
        OutboxMessage.objects.filter(organization_id=endpoint.organization_id, endpoint=endpoint)
        .prefetch_related(
            Prefetch("deliveries", queryset=DeliveryAttempt.objects.order_by("-started_at", "-id"))
        )
        .order_by("-id")
    )


def delivery_get(*, endpoint: WebhookEndpoint, message_id: str) -> OutboxMessage | None:
    return delivery_list(endpoint=endpoint).filter(message_id=message_id).first()
