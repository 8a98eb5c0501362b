"""The exports page (billing area, `billing:read`): a form with the usage explorer's filters; a
small export (at most BILLING_EXPORT_STREAM_MAX_ROWS rows) is streamed at once, a larger one
becomes an export job run by Celery, listed below with a progress bar that htmx refreshes, and a
download link when done. The rows are those the member may read (`billing.exports`)."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from accounts.audit import Actor
from accounts.pages import organization_page
from credits.views import local_time
from portal.errors import ApplicationError, NotFound

from .apis_exports import file_response, stream_response
from .exports import (
    ExportRequest,
    export_count,
    export_job_get,
    export_jobs_visible,
    stream_max_rows,
)
from .forms_exports import ExportForm
from .services.exports import export_job_create, pseudonym_secret

JOBS_SHOWN = 20


def _jobs(request) -> dict:
    jobs = list(export_jobs_visible(request.principal)[:JOBS_SHOWN])
    return {"jobs": jobs, "pending": any(not job.finished for job in jobs)}


@require_http_methods(["GET", "POST"])
@organization_page(scope="billing:read")
@local_time
def exports(request):
    """GET: the form and the member's export jobs. POST: stream the export when small, else
    queue a job and come back here (redirect after POST) to watch it."""
    principal = request.principal
    form = ExportForm(request.POST or None, principal=principal)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        filters = form.export_filters()
        export = ExportRequest(principal=principal, kind=data["kind"], format=data["format"],
                               filters=filters)  # fmt: skip
        limit = stream_max_rows()
        if export.format == "pdf" or export_count(export, limit=limit) <= limit:
            if data["pseudonymize"]:
                export.pseudonymize = True
                export.secret = pseudonym_secret(
                    organization=request.organization, actor=Actor.from_request(request)
                )
            return stream_response(export)
        try:
            job = export_job_create(
                principal=principal,
                kind=data["kind"],
                format=data["format"],
                filters=filters,
                pseudonymize=data["pseudonymize"],
                actor=Actor.from_request(request),
            )
        except ApplicationError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(
                request,
                f"More than {limit:,} rows: the export runs in the background. "
                "It appears below; download it when it is done.",
            )
            return redirect(reverse("billing-exports", kwargs={"org": request.organization.slug})
                            + f"#export-{job.public_id}")  # fmt: skip
    context = {"form": form, "stream_max_rows": stream_max_rows(), **_jobs(request)}
    status = 400 if request.method == "POST" else 200
    return render(request, "billing/exports.html", context, status=status)


@require_GET
@organization_page(scope="billing:read")
@local_time
def export_jobs(request):
    """The member's export jobs (the fragment htmx polls while one is queued or running)."""
    response = render(request, "billing/exports.html#jobs", _jobs(request))
    response["Cache-Control"] = "no-store"
    return response


@require_GET
@organization_page(scope="billing:read")
def export_download(request, id):
    """The file of one of the member's done export jobs; another's (or not done) is 404."""
    try:
        job = export_job_get(principal=request.principal, id=id)
        return file_response(job)
    except (NotFound, ApplicationError):
        raise Http404("No such export") from None
