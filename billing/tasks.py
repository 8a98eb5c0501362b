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


# Documents: invoices, credit notes, statements ---------------------------------------------------


@shared_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def document_pdf_render(kind: str, pk: int) -> bool:
    """Render and store the PDF of an issued document (`kind`: invoice, credit_note, statement),
    queued after its issue commits. True when this run stored it (a download may have been
    first). Storage errors (OSError) retry with back-off."""
    from .models import CreditNote, Invoice, Statement
    from .pdf import document_pdf_store

    model = {"invoice": Invoice, "credit_note": CreditNote, "statement": Statement}[kind]
    document = model.objects.select_related("organization").filter(pk=pk).first()
    return document is not None and document_pdf_store(document)


@shared_task
def documents_sweep(limit: int = 100) -> int:
    """Every minute (beat): queue the rendering of issued documents still without a PDF
    settings.SWEEP_AFTER after their issue (the task queued after commit was lost: a broker
    that was down, a worker killed), at most `limit` of each kind. Rendering is idempotent
    (`document_pdf_store` stores one file). Returns how many were queued."""
    from django.utils import timezone

    from .models import CreditNote, Invoice, Statement

    before = timezone.now() - settings.SWEEP_AFTER
    due = {
        "invoice": Invoice.objects.filter(pdf="", issued_at__lte=before),
        "credit_note": CreditNote.objects.filter(pdf="", issued_at__lte=before),
        "statement": Statement.objects.filter(pdf="", generated_at__lte=before),
    }
    queued = 0
    for kind, rows in due.items():
        for pk in rows.order_by("pk").values_list("pk", flat=True)[:limit]:
            document_pdf_render.delay(kind, pk)
            queued += 1
    return queued


@shared_task
def statements_generate_due() -> int:
    """Hourly: the statement of the month that has just ended in each organization's time zone
    (`billing.services.statements.statements_generate_due`)."""
    from .services.statements import statements_generate_due as generate

    return generate()


# (end of the documents block)


# Exports ------------------------------------------------------------------------------------------


@shared_task
def exports_sweep() -> int:
    """Every minute (beat): send again the export jobs that no worker has: queued for longer
    than settings.SWEEP_AFTER, or running for longer than BILLING_EXPORT_LEASE_SECONDS (its
    worker was lost) (`billing.services.exports.exports_requeue`). Returns how many were sent."""
    from .services.exports import exports_requeue

    return exports_requeue()


@shared_task
def export_run(job_id: int) -> str:
    """Run one export job (`billing.services.exports.export_job_run`); returns its status."""
    from .services.exports import export_job_run

    return export_job_run(job_id=job_id).status


# (end of exports)


# Automatic top-up (billing.services.topup) -------------------------------------------------------


@shared_task
def topup_run(organization_id: int) -> str:
    """Start a top-up of the organization if its rule says so, and charge it (unless it awaits
    approval). Queued by `topup_pool_changed` after a debit left the pool below the threshold.
    Returns the new top-up's state, or "" when nothing was started."""
    from .models import TopUp
    from .services import topup as services

    topup = services.topup_start(organization_id=organization_id)
    if topup is None:
        return ""
    if topup.state == TopUp.State.CHARGING:
        topup = services.topup_charge(topup_id=topup.pk)
    return topup.state


@shared_task
def topup_charge_task(topup_id: int) -> str:
    """Charge an approved top-up. Returns its state afterwards."""
    from .services import topup as services

    return services.topup_charge(topup_id=topup_id).state


@shared_task
def topup_sweep() -> int:
    """Every minute (beat): resend unanswered charges, start what no debit started."""
    from .services import topup as services

    return services.topup_sweep()
