"""Celery tasks of the billing app (thin: each calls a service)."""

from celery import shared_task

# Exports ------------------------------------------------------------------------------------------


@shared_task
def export_run(job_id: int) -> str:
    """Run one export job (`billing.services.exports.export_job_run`); returns its status."""
    from .services.exports import export_job_run

    return export_job_run(job_id=job_id).status


# (end of exports)
