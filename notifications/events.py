"""The event types: what each means, who may see it, who gets it by default, and its channels.

Webhooks carry the name as `type` (Standard Webhooks' payload: `{"type", "timestamp", "data"}`).
`read` is the scope a member's role must hold to receive the event at all; `default` the scopes of
whom it reaches when the caller names no audience (any one of them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class EventType:
    name: str
    title: str
    read: str
    default: frozenset[str]
    email: bool = False  # the default of a member's e-mail preference
    once_per: timedelta | None = None  # at most once per `key` in this period (a DB constraint)
    key_required: bool = False  # `notify` refuses the event without a key
    webhook: bool = True  # endpoints may subscribe to it


_MANAGERS = frozenset({"credits:write"})
_FUNDERS = frozenset({"credits:write", "billing:write"})
_BILLING = frozenset({"billing:write"})
_DAY = timedelta(days=1)

EVENT_TYPES: dict[str, EventType] = {
    e.name: e
    for e in (
        EventType(
            "budget.threshold_crossed", "Budget threshold crossed", "credits:read", _MANAGERS
        ),
        EventType("budget.exhausted", "Budget exhausted", "credits:read", _MANAGERS, email=True),
        EventType("budget.recovered", "Budget recovered", "credits:read", _MANAGERS),
        # Scheduled checks (credits.services.watch): at most once per account, lot and
        # organization a day.
        EventType(
            "balance.low", "Balance low", "credits:read", _FUNDERS, email=True, once_per=_DAY
        ),
        EventType(
            "credits.expiring",
            "Credits expiring",
            "credits:read",
            _FUNDERS,
            email=True,
            once_per=_DAY,
        ),
        EventType(
            "budget.forecast_exceeded", "Budget forecast exceeded", "credits:read", _MANAGERS
        ),
        EventType(
            "authorization.refused",
            "Request refused",
            "usage:read",
            _MANAGERS,
            once_per=timedelta(hours=1),
            key_required=True,
        ),
        EventType(
            "usage.daily_summary", "Daily usage summary", "usage:read", _MANAGERS, once_per=_DAY
        ),
        # The OpenRouter credit sync (billing.services.sync): upstream credits left differ from
        # the portal's by more than the organization's threshold; once a day per organization.
        EventType(
            "credits.sync_drift",
            "Upstream credits drift",
            "billing:read",
            _FUNDERS,
            email=True,
            once_per=_DAY,
        ),
        # Automatic top-up (billing.services.topup): billing members and owners.
        EventType("topup.succeeded", "Automatic top-up", "billing:read", _BILLING),
        EventType("topup.failed", "Automatic top-up failed", "billing:read", _BILLING, email=True),
        EventType(
            "topup.approval_required",
            "Automatic top-up awaits approval",
            "billing:read",
            _BILLING,
            email=True,
        ),
        # The portal's own: an endpoint disabled after failing for a day (admins, in-app).
        EventType(
            "webhook.endpoint_disabled",
            "Webhook endpoint disabled",
            "org:write",
            frozenset({"org:write"}),
            email=True,
            webhook=False,
        ),
    )
}
# What webhook endpoints may subscribe to (and the API accepts as `events`).
WEBHOOK_EVENT_TYPES = tuple(name for name, e in EVENT_TYPES.items() if e.webhook)
# Members may set preferences for these.
PREFERENCE_EVENT_TYPES = tuple(EVENT_TYPES)
TEST_EVENT_TYPE = "webhook.test"  # POST /webhooks/{id}/test; sent whatever the subscription


class Channel:
    IN_APP = "in_app"
    EMAIL = "email"
    SMS = "sms"
    WEBHOOK = "webhook"
