"""The words of each event: an in-app title and body, an e-mail, an SMS, from the event's data."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from string import Formatter
from zoneinfo import ZoneInfo

from django.conf import settings
from django.template.loader import render_to_string, select_template

from portal.money import format_credits

from .events import EVENT_TYPES, TEST_EVENT_TYPE

BODIES = {
    "budget.threshold_crossed": "Spending reached {threshold}% of {budget_label} "
    "(window from {window_start}).",
    "budget.exhausted": "No room is left in {budget_label} (window from {window_start}); "
    "requests it covers are refused.",
    "budget.recovered": "There is room again in {budget_label} (window from {window_start}).",
    "balance.low": "The available balance is low: {available} credits left.",
    "credits.expiring": "{amount} credits expire on {expires_at}.",
    "budget.forecast_exceeded": "Spending is forecast to pass {budget_label}: {projected} "
    "credits by the end of the window ({window_end}).",
    "authorization.refused": "A request of the key {key} was refused: {reason}.",
    "usage.daily_summary": "Usage on {date}: {cost} credits over {requests} requests.",
    "credits.sync_drift": "OpenRouter has {upstream_remaining} credits left, the portal counts "
    "{portal_remaining}: a drift of {drift} credits, more than the {threshold} allowed.",
    "webhook.endpoint_disabled": "The webhook endpoint {url} failed for 24 hours and was "
    "disabled. Fix it, then enable it again on the webhooks page.",
    "topup.succeeded": "{amount} credits were added to the pool: {total} USD charged to the "
    "saved card.",
    "topup.failed": "The automatic top-up of {amount} credits failed: {reason}. The next "
    "attempt is not before {next_attempt_at}.",
    "topup.approval_required": "An automatic top-up of {amount} credits ({total} USD) waits for "
    "a billing member's approval on the top-up page.",
    TEST_EVENT_TYPE: "A test event.",
}


class _Missing(dict):
    def __missing__(self, key: str) -> str:
        return "?"


# Data shown to people rounded (credits) or in the organization's time zone (times); webhooks
# carry the data as it is.
AMOUNTS = frozenset({"available", "amount", "cost", "spent", "held", "limit", "projected"})
TIMES = frozenset({"window_start", "window_end", "expires_at"})


def _shown(key: str, value, zone: ZoneInfo):
    if key in AMOUNTS and isinstance(value, str):
        try:
            return format_credits(Decimal(value))
        except (InvalidOperation, ValueError):
            return value
    if key in TIMES and isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
        if moment.tzinfo is None:
            return value
        return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")
    return value


def describe(type: str, data: dict, time_zone: str = "UTC") -> tuple[str, str]:
    """(title, body) of an event, with '?' for data it lacks: credits rounded to 4 decimals,
    times (ISO 8601 in the data) in `time_zone` (the organization's)."""
    event = EVENT_TYPES.get(type)
    title = event.title if event else type
    template = BODIES.get(type, "{type}")
    zone = ZoneInfo(time_zone or "UTC")
    values = _Missing(
        {k: _shown(k, v, zone) for k, v in (data or {}).items() if isinstance(k, str)}, type=type
    )
    if "budget_label" not in values and "budget" in values:  # a caller that sends the id only
        values["budget_label"] = f"budget {values['budget']}"
    body = Formatter().vformat(template, (), values)
    return title, body


def email_render(*, organization, type: str, data: dict, title: str, body: str) -> dict:
    context = {
        "organization": organization,
        "type": type,
        "data": data,
        "title": title,
        "body": body,
        "link": settings.PORTAL_BASE_URL.rstrip("/") + f"/o/{organization.slug}/notifications/",
    }
    template = select_template(
        [f"notifications/email/{type}.txt", "notifications/email/default.txt"]
    )
    return {
        "subject": f"[{organization.name}] {title}",
        "body": template.render(context),
    }


def sms_render(*, organization, title: str, body: str) -> dict:
    text = render_to_string(
        "notifications/sms.txt", {"organization": organization, "title": title, "body": body}
    ).strip()
    return {"body": text[:1600]}
