"""The sweeps behind billing's queued work: a document PDF or an export job whose task was lost
(a broker that was down when it was queued, a worker killed while it ran) is done by the beat
sweep, once. Tasks run eagerly here; tests/faults/test_redis_outage.py has the broker really
down and a real worker."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import time_machine
from django.utils import timezone

from accounts.access import Principal
from billing.exports import ExportFilters
from billing.models import ExportJob, Invoice
from billing.services.documents import Line, invoice_issue
from billing.services.exports import export_job_create, export_job_run, exports_requeue
from billing.tasks import documents_sweep
from tests.conftest import SYSTEM


def later(minutes: float):
    return time_machine.travel(timezone.now() + timedelta(minutes=minutes), tick=False)


def test_an_invoice_whose_render_was_lost_gets_its_pdf_from_the_sweep(tenant):
    line = Line(description="AI credits", quantity=Decimal("10"), unit_price=Decimal("1.00"))
    invoice = invoice_issue(organization=tenant.org, lines=[line], actor=SYSTEM)
    assert not Invoice.objects.get(pk=invoice.pk).pdf  # its render was queued after a commit
    assert documents_sweep() == 0  # within a minute of its issue: the task may still run
    with later(2):
        assert documents_sweep() == 1
        assert documents_sweep() == 0
    stored = Invoice.objects.get(pk=invoice.pk).pdf
    assert stored and stored.read().startswith(b"%PDF-")


def _job(tenant) -> ExportJob:
    return export_job_create(
        principal=Principal.for_session(organization=tenant.org, user=tenant.owner),
        kind="usage", format="csv", filters=ExportFilters(), pseudonymize=False, actor=SYSTEM,
    )  # fmt: skip


def test_an_export_whose_message_was_lost_is_sent_again_and_runs_once(tenant):
    job = _job(tenant)  # its message goes after commit: here, never
    assert exports_requeue() == 0
    with later(2):
        assert exports_requeue() == 1  # runs eagerly here
        assert exports_requeue() == 0
    job.refresh_from_db()
    assert job.status == ExportJob.Status.DONE and job.file
    first = job.file.name
    assert export_job_run(job_id=job.pk).file.name == first  # a task sent twice: left as it is


def test_an_export_whose_worker_was_lost_is_run_again_after_its_lease(tenant, settings):
    settings.BILLING_EXPORT_LEASE_SECONDS = 600
    job = _job(tenant)
    ExportJob.objects.filter(pk=job.pk).update(
        status=ExportJob.Status.RUNNING, started_at=timezone.now(), progress=40
    )  # as a worker killed mid-export left it
    with later(5):
        assert exports_requeue() == 0  # within its lease: it may be running
    with later(11):
        assert exports_requeue() == 1
    job.refresh_from_db()
    assert (job.status, job.progress) == (ExportJob.Status.DONE, 100)
