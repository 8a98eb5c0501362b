"""Celery tasks of automatic top-up (`billing.services.topup`): thin."""

from celery import shared_task

from .models import TopUp
from .services import topup as services


@shared_task
def topup_run(organization_id: int) -> str:
    """Start a top-up of the organization if its rule says so, and charge it (unless it awaits
    approval). Queued by `topup_pool_changed` after a debit left the pool below the threshold.
    Returns the new top-up's state, or "" when nothing was started."""
    topup = services.topup_start(organization_id=organization_id)
    if topup is None:
        return ""
    if topup.state == TopUp.State.CHARGING:
        topup = services.topup_charge(topup_id=topup.pk)
    return topup.state


@shared_task
def topup_charge_task(topup_id: int) -> str:
    """Charge an approved top-up. Returns its state afterwards."""
    return services.topup_charge(topup_id=topup_id).state


@shared_task
def topup_sweep() -> int:
    """Every minute (beat): resend unanswered charges, start what no debit started."""
    return services.topup_sweep()
