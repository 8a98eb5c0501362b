"""Refused requests: `authorization.refused` tells the organization (in-app, e-mail, SMS,
webhooks; `notifications.events`) that an authorization was refused for want of credits or by a
budget, at most once per API key per hour (the notification's own dedupe)."""

from __future__ import annotations

from django.db import transaction

from accounts.models import ApiKey, Organization
from notifications.services import notify
from portal.errors import ApplicationError, BudgetExceeded


def authorization_refused_record(
    *, organization: Organization, api_key: ApiKey | None, error: ApplicationError
):
    """Record that an authorization of `api_key` was refused with `error` (402
    `insufficient_credits` or `budget_exceeded`). Call after the refused transaction rolled
    back: this runs in its own. A session's request (no key) is keyed by the organization.
    Returns the notification event, or None when one was told already this hour."""
    metadata = error.metadata or {}
    data = {
        "key": api_key.label if api_key is not None else "(session)",
        "reason": error.message,
    }
    if isinstance(error, BudgetExceeded) and isinstance(metadata.get("budget"), dict):
        data["budget"] = metadata["budget"].get("id")
    dedupe = api_key.hash if api_key is not None else f"org:{organization.pk}"
    with transaction.atomic():
        return notify(
            organization=organization, type="authorization.refused", data=data, key=dedupe
        )
