"""Reads of the OpenRouter credit sync, scoped to one organization."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import Organization

from .models import OpenRouterConnection, OpenRouterSnapshot


def connection_get(*, organization: Organization) -> OpenRouterConnection | None:
    return (
        OpenRouterConnection.objects.filter(organization=organization)
        .select_related("organization")
        .first()
    )


def snapshot_list(*, organization: Organization) -> QuerySet[OpenRouterSnapshot]:
    """The organization's snapshots, newest first."""
    return OpenRouterSnapshot.objects.filter(organization=organization).order_by(
        "-fetched_at", "-id"
    )


def with_usage_drift(snapshot: OpenRouterSnapshot) -> OpenRouterSnapshot:
    """`snapshot` with `usage_drift` (upstream total_usage - portal total_usage, credits; None
    for a failed sync), as the snapshot list annotates it."""
    if snapshot.upstream_total_usage is None:
        snapshot.usage_drift = None
    else:
        snapshot.usage_drift = snapshot.upstream_total_usage - snapshot.portal_total_usage
    return snapshot


def snapshot_history(
    *, organization: Organization, days: int = 30, now: datetime | None = None
) -> list[OpenRouterSnapshot]:
    """The successful snapshots of the last `days` days, oldest first (the page's chart). At most
    one an hour by default: about 720 points for 30 days."""
    since = (now or timezone.now()) - timedelta(days=days)
    rows = snapshot_list(organization=organization).filter(
        status=OpenRouterSnapshot.Status.OK, fetched_at__gte=since
    )
    return list(reversed(rows[:2000]))
