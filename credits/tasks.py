"""Periodic work (the beat schedule is in settings): expire holds and lots, verify the ledger,
refresh model prices."""

from celery import shared_task

from .services import ledger as ledger_services
from .services.prices import prices_sync as sync
from .verify import ledger_verify as verify


@shared_task
def holds_expire() -> int:
    return ledger_services.holds_expire()


@shared_task
def lots_expire() -> int:
    return ledger_services.lots_expire()


@shared_task
def ledger_verify() -> int:
    """Hourly proof that cached balances equal their entries; logs and returns the mismatches."""
    import logging

    mismatches = verify()
    for m in mismatches:
        logging.getLogger("credits.verify").error("ledger mismatch: %s", m)
    return len(mismatches)


@shared_task
def prices_sync() -> bool:
    """Refresh model prices from genai-prices' published data (every 6 hours); without internet
    the installed prices stay (logged, no error). True when fresh data was fetched."""
    return sync().fetched
