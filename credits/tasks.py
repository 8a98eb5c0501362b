"""Periodic work (the beat schedule is in settings): expire holds and lots, verify the ledger,
refresh model prices, the watches (low balances, expiring credits, daily summaries) and the
budget checks (recovered budgets, forecasts past a limit)."""

from celery import shared_task

from .metrics import ledger_verify_result_store
from .services import holds as hold_services
from .services import ledger as ledger_services
from .services.prices import prices_sync as sync
from .verify import ledger_verify as verify


@shared_task
def holds_expire() -> int:
    return hold_services.holds_expire()


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
    ledger_verify_result_store(len(mismatches))  # for /metrics
    return len(mismatches)


@shared_task
def prices_sync() -> bool:
    """Refresh model prices from genai-prices' published data (every 6 hours); without internet
    the installed prices stay (logged, no error). True when fresh data was fetched."""
    return sync().fetched


@shared_task
def balances_low_check() -> int:
    """Hourly: `balance.low` for accounts below their low balance (once a day each)."""
    from .services.watch import balances_low_check as check

    return check()


@shared_task
def credits_expiring_check() -> int:
    """Daily: `credits.expiring` for lots expiring within CREDITS_EXPIRING_DAYS."""
    from .services.watch import credits_expiring_check as check

    return check()


@shared_task
def daily_summaries_send() -> int:
    """Daily: yesterday's `usage.daily_summary` of each organization with usage."""
    from .services.watch import daily_summaries_send as send

    return send()


@shared_task
def budgets_recovered_check() -> int:
    """Every minute: `budget.recovered` for budgets in the window after an exhausted one."""
    from .services.alerts import budgets_recovered_check as check

    return len(check())


@shared_task
def budgets_forecast_check() -> int:
    """Hourly: `budget.forecast_exceeded` for budgets projected past their limit."""
    from .services.alerts import budgets_forecast_check as check

    return len(check())


@shared_task
def usage_rollup() -> int:
    """Every minute: roll the usage recorded since the mark into the rollups read by the
    dashboard, reports, activity and forecast (`credits.services.rollups`). Returns the rollup
    rows written."""
    from .services.rollups import usage_rollup_advance

    return usage_rollup_advance().rows


@shared_task
def usage_partitions_ensure() -> list[str]:
    """Daily: the usage table's monthly partitions for this month and the next two
    (`credits.services.usage_partitions`). Returns the partitions created."""
    from .services.usage_partitions import usage_partitions_ensure as ensure

    return ensure()
