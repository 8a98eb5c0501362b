"""Billing's Celery tasks (the beat schedule is in settings). Each feature keeps its tasks
in its own block."""

from celery import shared_task
from django.conf import settings

# Purchases -------------------------------------------------------------------------------------


@shared_task
def orders_expire() -> int:
    """Every 15 minutes: expire purchase orders pending past their age
    (`billing.services.payments.orders_expire`)."""
    from .services.payments import orders_expire as expire

    return expire()


# OpenRouter credit sync ---------------------------------------------------------------------------


@shared_task
def openrouter_sync_all() -> int:
    """Every OPENROUTER_SYNC_MINUTES (hourly by default): queue one sync per enabled OpenRouter
    connection (`openrouter_sync_connection`), so that workers sync organizations in parallel
    and one slow answer holds up no other. A sync still queued when the next round starts has
    expired. Returns how many were queued."""
    from .services.sync import openrouter_sync_due

    due = openrouter_sync_due()
    for connection_id in due:
        openrouter_sync_connection.apply_async(
            (connection_id,), expires=settings.OPENROUTER_SYNC_MINUTES * 60
        )
    return len(due)


@shared_task
def openrouter_sync_connection(connection_id: int) -> str | None:
    """Sync one connection (`billing.services.sync.openrouter_sync_scheduled`); returns the
    snapshot's status (`ok`, `error`), or None when the connection is gone or disabled."""
    from .services.sync import openrouter_sync_scheduled

    snapshot = openrouter_sync_scheduled(connection_id=connection_id)
    return snapshot.status if snapshot else None
