"""Billing's Celery tasks (the beat schedule is in settings)."""

from celery import shared_task

# OpenRouter credit sync ---------------------------------------------------------------------------


@shared_task
def openrouter_sync_all() -> int:
    """Every OPENROUTER_SYNC_MINUTES (hourly by default): sync each enabled OpenRouter
    connection (`billing.services.sync.openrouter_sync_all`); returns how many were synced."""
    from .services.sync import openrouter_sync_all as sync_all

    return sync_all()
