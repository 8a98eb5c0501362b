"""Every write of the notifications app. Keyword-only and atomic; changes to webhook endpoints
are audited in the same transaction. `notify` runs inside its caller's transaction: the in-app
notifications and the outbox messages commit (or roll back) with the change that caused them, and
delivery is queued with `transaction.on_commit`."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.audit import Actor, audit_record
from accounts.models import Membership, Organization, User
from accounts.roles import ROLE_SCOPES
from portal.errors import Conflict, ValidationFailed

from .events import EVENT_TYPES, TEST_EVENT_TYPE, WEBHOOK_EVENT_TYPES, Channel
from .models import (
    Notification,
    NotificationEvent,
    NotificationPreference,
    OutboxMessage,
    WebhookEndpoint,
)
from .texts import describe, email_render, sms_render
from .urlcheck import UrlRefused, check_url

SECRET_PREFIX = "whsec_"  # noqa: S105 - Standard Webhooks' secret prefix, not a secret


# Preferences ------------------------------------------------------------------------------------


def preference_defaults(type: str) -> dict[str, bool]:
    event = EVENT_TYPES[type]
    return {Channel.IN_APP: True, Channel.EMAIL: event.email, Channel.SMS: False}


def preferences_of(*, organization: Organization, user_ids: Iterable[int], type: str) -> dict:
    """{user id: {channel: bool}} for one event type (the type's defaults where no row)."""
    user_ids = list(user_ids)
    rows = NotificationPreference.objects.filter(
        organization=organization, user_id__in=user_ids, event_type=type
    )
    found = {r.user_id: {"in_app": r.in_app, "email": r.email, "sms": r.sms} for r in rows}
    return {uid: found.get(uid) or preference_defaults(type) for uid in user_ids}


@transaction.atomic
def notification_preferences_set(
    *,
    organization: Organization,
    user: User,
    preferences: dict[str, dict[str, bool]],
    phone: str | None = None,
    actor: Actor,
) -> None:
    """Set a member's channels per event type (`{type: {"in_app", "email", "sms": bool}}`,
    channels left out keep their value) and, with `phone`, their mobile number (E.164)."""
    unknown = sorted(set(preferences) - set(EVENT_TYPES))
    if unknown:
        raise ValidationFailed({"preferences": [f"Unknown event types: {', '.join(unknown)}."]})
    if phone is not None:
        phone = phone.strip().replace(" ", "")
        if phone and not (phone.startswith("+") and phone[1:].isdigit() and 8 <= len(phone) <= 16):
            raise ValidationFailed({"phone": ["An international number, e.g. +14155550123."]})
    wants_sms = any(p.get("sms") for p in preferences.values())
    if wants_sms and not (phone if phone is not None else user.phone):
        raise ValidationFailed({"phone": ["Add a mobile number to get SMS."]})
    if phone is not None and phone != user.phone:
        User.objects.filter(pk=user.pk).update(phone=phone)
        user.phone = phone
    for type, channels in preferences.items():
        bad = set(channels) - {"in_app", "email", "sms"}
        if bad:
            raise ValidationFailed({f"preferences.{type}": [f"Unknown channels: {sorted(bad)}."]})
        current = preferences_of(organization=organization, user_ids=[user.pk], type=type)[user.pk]
        NotificationPreference.objects.update_or_create(
            organization=organization,
            user=user,
            event_type=type,
            defaults={**current, **{k: bool(v) for k, v in channels.items()}},
        )


# notify -----------------------------------------------------------------------------------------


def _bucket(now: datetime, period) -> datetime:
    seconds = int(period.total_seconds())
    epoch = int(now.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=UTC)


def _recipients(organization: Organization, type: str, audience) -> list[User]:
    """Members whose role may see `type` (its `read` scope); of them, the `audience` (users or
    user ids), or by default those whose role holds one of the type's `default` scopes."""
    event = EVENT_TYPES[type]
    memberships = Membership.objects.filter(organization=organization).select_related("user")
    readers = [m for m in memberships if event.read in ROLE_SCOPES.get(m.role, ())]
    if audience is None:
        return [m.user for m in readers if ROLE_SCOPES[m.role] & event.default]
    wanted = {getattr(u, "pk", u) for u in audience}
    return [m.user for m in readers if m.user_id in wanted]


def _queue(messages: list[OutboxMessage]) -> None:
    if not messages:
        return
    from .tasks import outbox_deliver

    ids = [m.pk for m in messages]
    # Robust: with the broker down the messages wait in the outbox (committed), and the sweep
    # queues them when it is back; the change that made them stands and its caller gets its answer.
    transaction.on_commit(lambda: [outbox_deliver.delay(pk) for pk in ids], robust=True)


def webhook_payload(type: str, data: dict, at: datetime | None = None) -> dict:
    """The Standard Webhooks body: `{"type", "timestamp", "data"}`."""
    at = at or timezone.now()
    return {"type": type, "timestamp": at.isoformat().replace("+00:00", "Z"), "data": data}


def notify(
    *,
    organization: Organization,
    type: str,
    data: dict,
    audience: Iterable[User | int] | None = None,
    key: str | None = None,
) -> NotificationEvent | None:
    """Tell an organization that `type` happened (see `events.EVENT_TYPES`), inside the caller's
    transaction: in-app notifications for the members whose role may see it and whose preferences
    want it (`audience`: these users only; default: the type's default roles), an outbox message
    per e-mail and SMS they want and per enabled webhook endpoint subscribed to the type. Delivery
    is queued on commit.

    An event with `once_per` fires at most once per `key` (default: `data["key"]`) and period:
    the second in the same period returns None, refused by a unique constraint on its bucket
    (concurrent callers included). `authorization.refused` requires a key; the scheduled
    watches (`balance.low`, `credits.expiring`, `usage.daily_summary`) pass one."""
    event_type = EVENT_TYPES.get(type)
    if event_type is None:
        raise ValueError(f"Unknown event type {type!r}")
    now = timezone.now()
    dedupe, bucket = "", None
    if event_type.once_per is not None:
        dedupe = str(key or data.get("key") or "")[:200]
        if not dedupe and event_type.key_required:
            raise ValueError(f"{type} needs a `key` (fires once per key per period)")
        bucket = _bucket(now, event_type.once_per) if dedupe else None
    try:
        with transaction.atomic():  # a savepoint: a duplicate leaves the caller's work intact
            event = NotificationEvent.objects.create(
                organization=organization,
                type=type,
                data=data,
                dedupe_key=dedupe,
                bucket=bucket,
                created_at=now,
            )
    except IntegrityError:
        return None

    title, body = describe(type, data, organization.time_zone)
    users = _recipients(organization, type, audience)
    prefs = preferences_of(organization=organization, user_ids=[u.pk for u in users], type=type)
    Notification.objects.bulk_create(
        Notification(
            organization=organization,
            recipient=u,
            event=event,
            type=type,
            title=title,
            body=body,
            data=data,
            created_at=now,
        )
        for u in users
        if prefs[u.pk]["in_app"]
    )
    messages = []
    email = sms = None

    def message(channel: str, user: User, target: str, payload: dict) -> OutboxMessage:
        return OutboxMessage(
            organization=organization, channel=channel, target=target, recipient=user,
            event=event, event_type=type, payload=payload, next_attempt_at=now, created_at=now,
        )  # fmt: skip

    for u in users:
        if prefs[u.pk]["email"] and u.email:
            email = email or email_render(
                organization=organization, type=type, data=data, title=title, body=body
            )
            messages.append(message(OutboxMessage.Channel.EMAIL, u, u.email, email))
        if prefs[u.pk]["sms"] and u.phone:
            sms = sms or sms_render(organization=organization, title=title, body=body)
            messages.append(message(OutboxMessage.Channel.SMS, u, u.phone, sms))
    if event_type.webhook:
        payload = webhook_payload(type, data, now)
        # An organization has a handful of endpoints: filtered here, as JSON containment is
        # PostgreSQL's (the SQLite demo has none).
        endpoints = [
            e
            for e in WebhookEndpoint.objects.filter(organization=organization, enabled=True)
            if type in e.event_types
        ]
        messages += [
            OutboxMessage(
                organization=organization,
                channel=OutboxMessage.Channel.WEBHOOK,
                target=endpoint.url,
                endpoint=endpoint,
                event=event,
                event_type=type,
                payload=payload,
                next_attempt_at=now,
                created_at=now,
            )
            for endpoint in endpoints
        ]
    OutboxMessage.objects.bulk_create(messages)
    _queue(messages)
    return event


# In-app notifications ---------------------------------------------------------------------------


@transaction.atomic
def notification_mark_read(*, notification: Notification) -> Notification:
    if notification.read_at is None:
        notification.read_at = timezone.now()
        Notification.objects.filter(pk=notification.pk, read_at__isnull=True).update(
            read_at=notification.read_at
        )
    return notification


@transaction.atomic
def notifications_mark_all_read(*, organization: Organization, user: User) -> int:
    return Notification.objects.filter(
        organization=organization, recipient=user, read_at__isnull=True
    ).update(read_at=timezone.now())


# Webhook endpoints ------------------------------------------------------------------------------


def new_secret() -> str:
    """A Standard Webhooks signing secret: `whsec_` and 32 random bytes, base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _url(url: str) -> str:
    try:
        return check_url(url)
    except UrlRefused as exc:
        raise ValidationFailed({"url": [str(exc)]}) from None


def _events(events) -> list[str]:
    if not isinstance(events, list | tuple) or not events:
        raise ValidationFailed({"events": ["Name at least one event type."]})
    unknown = sorted({e for e in events if e not in WEBHOOK_EVENT_TYPES}, key=str)
    if unknown:
        raise ValidationFailed(
            {"events": [f"Unknown event types: {', '.join(map(str, unknown))}."]}
        )
    return sorted(set(events))


def _description(value: str) -> str:
    value = (value or "").strip()
    if len(value) > 200:
        raise ValidationFailed({"description": ["At most 200 characters."]})
    return value


MAX_ENDPOINTS = 20


@transaction.atomic
def webhook_endpoint_create(
    *,
    organization: Organization,
    url: str,
    events: list[str],
    description: str = "",
    actor: Actor,
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its signing secret (returned here only; stored encrypted).
    Raises ValidationFailed (URL refused, unknown event types), Conflict (too many)."""
    url, events, description = _url(url), _events(events), _description(description)
    if WebhookEndpoint.objects.filter(organization=organization).count() >= MAX_ENDPOINTS:
        raise Conflict(f"An organization has at most {MAX_ENDPOINTS} webhook endpoints.")
    secret = new_secret()
    endpoint = WebhookEndpoint(
        organization=organization, url=url, event_types=events, description=description
    )
    endpoint.secret = secret
    endpoint.save()
    audit_record(
        organization=organization,
        actor=actor,
        action="webhook.created",
        target=endpoint,
        after={"id": str(endpoint.public_id), "url": url, "events": events},
    )
    return endpoint, secret


@transaction.atomic
def webhook_endpoint_update(
    *,
    endpoint: WebhookEndpoint,
    actor: Actor,
    url: str | None = None,
    events: list[str] | None = None,
    enabled: bool | None = None,
    description: str | None = None,
) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    before = {"url": endpoint.url, "events": endpoint.event_types, "enabled": endpoint.enabled}
    if url is not None:
        endpoint.url = _url(url)
    if events is not None:
        endpoint.event_types = _events(events)
    if description is not None:
        endpoint.description = _description(description)
    if enabled is not None and enabled != endpoint.enabled:
        endpoint.enabled = enabled
        endpoint.disabled_at = None if enabled else timezone.now()
        endpoint.failing_since = None
    endpoint.updated_at = timezone.now()
    endpoint.save()
    audit_record(
        organization=endpoint.organization,
        actor=actor,
        action="webhook.updated",
        target=endpoint,
        before=before,
        after={"url": endpoint.url, "events": endpoint.event_types, "enabled": endpoint.enabled},
    )
    return endpoint


@transaction.atomic
def webhook_endpoint_rotate_secret(*, endpoint: WebhookEndpoint, actor: Actor) -> str:
    """A new signing secret, at once (the old one stops signing); returned here only."""
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    secret = new_secret()
    endpoint.secret = secret
    endpoint.updated_at = timezone.now()
    endpoint.save(update_fields=["secret_encrypted", "updated_at"])
    audit_record(
        organization=endpoint.organization,
        actor=actor,
        action="webhook.secret_rotated",
        target=endpoint,
    )
    return secret


@transaction.atomic
def webhook_endpoint_delete(*, endpoint: WebhookEndpoint, actor: Actor) -> None:
    """Delete the endpoint; its pending messages fail (nothing is sent after this)."""
    OutboxMessage.objects.filter(endpoint=endpoint, status=OutboxMessage.Status.PENDING).update(
        status=OutboxMessage.Status.FAILED, last_error="The endpoint was deleted."
    )
    audit_record(
        organization=endpoint.organization,
        actor=actor,
        action="webhook.deleted",
        target=endpoint,
        before={"id": str(endpoint.public_id), "url": endpoint.url},
    )
    endpoint.delete()


@transaction.atomic
def webhook_endpoint_test(*, endpoint: WebhookEndpoint, actor: Actor) -> OutboxMessage:
    """Send a `webhook.test` event to the endpoint (whatever it subscribes to)."""
    data = {"endpoint": str(endpoint.public_id), "message": "A test event from the portal."}
    message = OutboxMessage.objects.create(
        organization=endpoint.organization,
        channel=OutboxMessage.Channel.WEBHOOK,
        target=endpoint.url,
        endpoint=endpoint,
        event_type=TEST_EVENT_TYPE,
        payload=webhook_payload(TEST_EVENT_TYPE, data),
    )
    _queue([message])
    return message


@transaction.atomic
def outbox_message_resend(*, message: OutboxMessage, actor: Actor) -> OutboxMessage:
    """Send a message again, with the same id (receivers deduplicate on `webhook-id`): pending,
    its attempts counted afresh."""
    message = OutboxMessage.objects.select_for_update().get(pk=message.pk)
    if message.endpoint_id is not None and not message.endpoint.enabled:
        raise Conflict("The endpoint is disabled: enable it first.")
    message.status = OutboxMessage.Status.PENDING
    message.attempts = 0
    message.next_attempt_at = timezone.now()
    message.last_error = ""
    message.save(update_fields=["status", "attempts", "next_attempt_at", "last_error"])
    _queue([message])
    return message
