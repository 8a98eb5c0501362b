"""Periodic work of billing (the beat schedule is in settings)."""

from celery import shared_task


@shared_task
def orders_expire() -> int:
    """Every 15 minutes: expire purchase orders pending past their age
    (`billing.services.payments.orders_expire`)."""
    from .services.payments import orders_expire as expire

    return expire()
