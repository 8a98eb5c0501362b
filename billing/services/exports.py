"""Exports: the organization's pseudonym secret (made on first use), export jobs (asked for,
then run by `billing.tasks.export_run`). What an export contains is `billing.exports`."""

from __future__ import annotations

import logging
import secrets
import tempfile
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.files import File
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.access import Principal
from accounts.audit import Actor, audit_record
from accounts.models import Organization
from notifications.crypto import decrypt, encrypt
from portal.errors import ApplicationError

from ..exports import (
    ExportFilters,
    export_chunks,
    export_count,
    export_job_request,
    kind_format_check,
    principal_of_job,
    require_kind_scope,
)
from ..models import ExportJob, PseudonymSecret

log = logging.getLogger("billing.exports")


def pseudonym_secret(*, organization: Organization, actor: Actor) -> bytes:
    """The organization's pseudonym secret (32 random bytes), created on first use and stored
    encrypted (`notifications.crypto`, FIELD_ENCRYPTION_KEY); its creation is audited. Two first
    uses at once make one secret (the loser of the race reads the winner's)."""
    found = PseudonymSecret.objects.filter(organization=organization).first()
    if found is None:
        try:
            with transaction.atomic():
                found = PseudonymSecret.objects.create(
                    organization=organization, secret_encrypted=encrypt(secrets.token_hex(32))
                )
                audit_record(
                    organization=organization,
                    actor=actor,
                    action="billing.pseudonym_secret_created",
                    target=found,
                )
        except IntegrityError:
            found = PseudonymSecret.objects.get(organization=organization)
    return bytes.fromhex(decrypt(found.secret_encrypted))


def export_job_create(
    *,
    principal: Principal,
    kind: str,
    format: str,
    filters: ExportFilters,
    pseudonymize: bool,
    actor: Actor,
) -> ExportJob:
    """Queue an export of `kind` (usage, ledger) in `format` for `principal` (who must hold
    billing:read and the kind's scope: usage:read, credits:read); a Celery task runs it after
    commit. Raises ValidationFailed (400), PermissionDenied (403)."""
    principal.require("billing:read")
    require_kind_scope(principal, kind)
    kind_format_check(kind, format)
    with transaction.atomic():
        job = ExportJob.objects.create(
            organization=principal.organization,
            requested_by=principal.user,
            api_key=principal.key,
            kind=kind,
            format=format,
            filters=filters.to_json(),
            pseudonymize=pseudonymize,
        )
        audit_record(
            organization=principal.organization,
            actor=actor,
            action="billing.export_requested",
            target=job,
            after={
                "kind": kind,
                "format": format,
                "filters": job.filters,
                "pseudonymize": pseudonymize,
            },  # fmt: skip
        )
        # A broker that is down does not undo the request (`robust`): the sweep sends it later.
        transaction.on_commit(lambda: _enqueue(job.pk), robust=True)
    return job


def exports_requeue(*, now=None) -> int:
    """Send again to the workers the jobs no worker has: queued for longer than
    settings.SWEEP_AFTER (the message was lost: a broker that was down), or running for longer
    than BILLING_EXPORT_LEASE_SECONDS (the worker was lost; such a job is queued again first).
    A job sent twice runs once (`export_job_run` claims it). Returns how many were sent."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.BILLING_EXPORT_LEASE_SECONDS)
    ExportJob.objects.filter(status=ExportJob.Status.RUNNING, started_at__lte=stale).update(
        status=ExportJob.Status.QUEUED, progress=0
    )
    due = ExportJob.objects.filter(
        Q(started_at__isnull=True) | Q(started_at__lte=stale),
        status=ExportJob.Status.QUEUED,
        created_at__lte=now - settings.SWEEP_AFTER,
    ).values_list("pk", flat=True)
    sent = 0
    for job_id in list(due[:100]):
        _enqueue(job_id)
        sent += 1
    return sent


def _enqueue(job_id: int) -> None:
    """Send the job to the workers (BILLING_EXPORT_QUEUE, else the default queue) over a
    connection to the broker configured now (not a pooled one made earlier)."""
    from ..tasks import export_run

    with export_run.app.connection_for_write() as connection:
        export_run.apply_async(
            args=[job_id], queue=settings.BILLING_EXPORT_QUEUE or None, connection=connection
        )


class _Progress:
    """Writes the job's progress (0-99 while running) when its whole percent changes."""

    def __init__(self, job: ExportJob, total: int):
        self.job, self.total, self.last = job, total, -1

    def __call__(self, done: int) -> None:
        percent = min(99, done * 100 // self.total) if self.total else 0
        if percent != self.last:
            ExportJob.objects.filter(pk=self.job.pk).update(progress=percent)
            self.last = percent


def export_job_run(*, job_id: int) -> ExportJob:
    """Run a queued export: read as its requester with their rights of now, write the file to
    Django's storage (default_storage: the filesystem, or S3 and the like) chunk by chunk from a
    temporary file, updating `progress`; then `done` with `row_count` and the file, or `failed`
    with the reason. Only a queued job runs: it is claimed (queued -> running) in one UPDATE,
    so a job done, failed or running elsewhere is left as it is (a task sent twice)."""
    job = ExportJob.objects.select_related("organization", "api_key", "requested_by").get(pk=job_id)
    claimed = ExportJob.objects.filter(pk=job.pk, status=ExportJob.Status.QUEUED).update(
        status=ExportJob.Status.RUNNING, started_at=timezone.now(), progress=0
    )
    if not claimed:  # finished, or another worker runs it (a job sent twice)
        return job
    try:
        principal = principal_of_job(job)
        secret = None
        if job.pseudonymize:
            secret = pseudonym_secret(
                organization=job.organization, actor=Actor(system="billing.exports")
            )
        request = export_job_request(job, principal, secret)
        progress = _Progress(job, export_count(request))
        stats: dict[str, Any] = {}
        with tempfile.TemporaryFile() as out:
            every = max(1, settings.BILLING_EXPORT_CHUNK_ROWS // 10)
            for chunk in export_chunks(request, progress=progress, every=every, stats=stats):
                out.write(chunk if isinstance(chunk, bytes) else chunk.encode())
            out.seek(0)
            job.file.save(request.filename(), File(out), save=False)
    except ApplicationError as exc:
        return _failed(job, exc.message)
    except Exception as exc:  # noqa: BLE001 - the job says it failed; the log has the trace
        log.exception("export %s failed", job.public_id)
        return _failed(job, f"The export failed ({type(exc).__name__}).")
    ExportJob.objects.filter(pk=job.pk).update(
        status=ExportJob.Status.DONE,
        progress=100,
        row_count=stats.get("rows", 0),
        file=job.file.name,
        finished_at=timezone.now(),
    )
    job.refresh_from_db()
    return job


def _failed(job: ExportJob, reason: str) -> ExportJob:
    ExportJob.objects.filter(pk=job.pk).update(
        status=ExportJob.Status.FAILED, error=reason[:500], finished_at=timezone.now()
    )
    job.refresh_from_db()
    return job
