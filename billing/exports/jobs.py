"""Export jobs (reads): the jobs a principal asked for, and the export a job reads as its
requester now."""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils import timezone

from accounts.access import Principal
from portal.errors import NotFound, PermissionDenied

from ..models import ExportJob
from .filters import ExportFilters, require_kind_scope
from .request import ExportRequest


def export_jobs_visible(principal: Principal) -> QuerySet[ExportJob]:
    """The export jobs `principal` asked for: a session's own (made in a session), a key's own.
    An export holds what its requester may read, so nobody else sees it."""
    jobs = ExportJob.objects.filter(organization=principal.organization)
    if principal.key is not None:
        return jobs.filter(api_key=principal.key)
    return jobs.filter(api_key__isnull=True, requested_by=principal.user)


def export_job_get(*, principal: Principal, id) -> ExportJob:
    """One of `principal`'s export jobs by its public id. Raises NotFound (404): another
    organization's or another requester's job is not found."""
    job = export_jobs_visible(principal).filter(public_id=id).first()
    if job is None:
        raise NotFound("No such export in this organization.", resource="export")
    return job


def export_job_request(job: ExportJob, principal: Principal, secret: bytes | None) -> ExportRequest:
    """The job's export as `principal` (its requester, now) reads it."""
    return ExportRequest(
        principal=principal,
        kind=job.kind,
        format=job.format,
        filters=ExportFilters.from_json(job.filters),
        pseudonymize=job.pseudonymize,
        secret=secret,
    )


def principal_of_job(job: ExportJob) -> Principal:
    """Who the job reads as, with its rights of now: its API key (not deleted, disabled or
    expired), else the member who asked in a session. Raises PermissionDenied when the
    requester can no longer export this kind."""
    if job.api_key_id is not None:
        key = job.api_key
        expired = key.expires_at is not None and key.expires_at <= timezone.now()
        if key.deleted_at is not None or key.disabled or expired:
            raise PermissionDenied("The API key that asked for this export is no longer valid.")
        principal = Principal.for_key(key)
    else:
        principal = Principal.for_session(organization=job.organization, user=job.requested_by)
        if principal is None:
            raise PermissionDenied("The member who asked for this export left the organization.")
    principal.require("billing:read")
    require_kind_scope(principal, job.kind)
    return principal
