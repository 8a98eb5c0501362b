"""REST endpoints of exports (docs/api.md, "Exports"): usage and ledger history streamed at once
for small ranges, or written to a file by a Celery task (an export job) for any range.

Scopes: `billing:read` on every route (exports live in the billing area), and the kind's own
scope on top (`usage:read` for usage, `credits:read` for the ledger). The rows are always those
the caller may read (`billing.exports`); a job is its requester's own (another's, or another
organization's, is 404)."""

from __future__ import annotations

from django.http import FileResponse, StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from portal.api import (
    OrganizationAPIView,
    OrganizationListAPIView,
    StrictSerializer,
    error_responses,
)
from portal.errors import ApplicationError, Conflict, ValidationFailed

from .exports import (
    CONTENT_TYPES,
    FORMATS,
    ExportRequest,
    export_chunks,
    export_count,
    export_job_get,
    export_jobs_visible,
    filters_parse,
    kind_format_check,
    require_kind_scope,
    stream_max_rows,
)
from .models import ExportJob
from .services.exports import export_job_create, pseudonym_secret


class ExportTooLarge(ApplicationError):
    """413: more rows than are streamed at once; ask for an export job instead."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    type = "export_too_large"


class ExportNotReady(Conflict):
    """409: the export job is not done (queued, running or failed)."""

    type = "export_not_ready"


class ExportInput(StrictSerializer):
    kind = serializers.ChoiceField(choices=ExportJob.Kind.choices)
    format = serializers.ChoiceField(
        choices=ExportJob.Format.choices,
        help_text="usage: csv, json, focus.csv (FOCUS 1.2), pdf; ledger: csv, json, pdf.",
    )
    filters = serializers.DictField(
        required=False,
        default=dict,
        help_text="The usage explorer's filters: from, to (ISO 8601 dates or date-times; "
        "without an offset in the organization's time zone; `to` exclusive), team (slug), "
        "member (e-mail), key (hash), model (part of the id), operation, conversation, "
        "min_tokens, max_tokens, min_cost, max_cost; ledger: account (id), transaction_kind.",
    )
    pseudonymize = serializers.BooleanField(
        default=False,
        help_text="Members and keys as stable pseudonyms (member-<12 hex>, key-<12 hex>).",
    )


class ExportJobOutput(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    kind = serializers.CharField()
    format = serializers.CharField()
    filters = serializers.DictField()
    pseudonymize = serializers.BooleanField()
    status = serializers.ChoiceField(choices=ExportJob.Status.choices)
    progress = serializers.IntegerField(help_text="Percent done, 0-100.")
    row_count = serializers.IntegerField(allow_null=True, help_text="Rows written, once done.")
    error = serializers.CharField(help_text="Why it failed; empty otherwise.")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    download_url = serializers.SerializerMethodField()

    def get_download_url(self, job) -> str | None:
        """Where to download the file once done (null before)."""
        if job.status != ExportJob.Status.DONE:
            return None
        path = reverse("api:billing-export-download", kwargs={"id": job.public_id})
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path


class ExportListApi(OrganizationListAPIView):
    scope_map = {"GET": "billing:read", "POST": "billing:read"}
    model = ExportJob

    def selector(self, organization):
        return export_jobs_visible(self.principal)

    @extend_schema(
        operation_id="billing_exports_list",
        responses={200: ExportJobOutput(many=True)},
        description="The caller's own export jobs, newest first.",
    )
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        data = ExportJobOutput(page, many=True, context={"request": request}).data
        return self.get_paginated_response(data)

    @extend_schema(
        operation_id="billing_exports_create",
        request=ExportInput,
        responses={201: ExportJobOutput},
        description="Queue an export job of any size: 201 with the job (status queued); poll "
        "GET /billing/exports/{id} for its progress, then download it. Small ranges can be "
        "streamed at once instead: GET /billing/exports/usage.csv (and the other formats).",
    )
    def post(self, request):
        data = self.parse(ExportInput)
        require_kind_scope(self.principal, data["kind"])
        kind_format_check(data["kind"], data["format"])
        filters = filters_parse(self.principal, data["filters"], kind=data["kind"])
        job = export_job_create(
            principal=self.principal,
            kind=data["kind"],
            format=data["format"],
            filters=filters,
            pseudonymize=data["pseudonymize"],
            actor=self.actor,
        )
        return Response(
            ExportJobOutput(job, context={"request": request}).data, status=status.HTTP_201_CREATED
        )


class ExportDetailApi(OrganizationAPIView):
    scope_map = {"GET": "billing:read"}

    @extend_schema(operation_id="billing_exports_get", responses={200: ExportJobOutput})
    def get(self, request, id):
        job = export_job_get(principal=self.principal, id=id)
        return Response(ExportJobOutput(job, context={"request": request}).data)


def file_response(job: ExportJob) -> FileResponse:
    """The job's file from Django's storage, as an attachment."""
    if job.status != ExportJob.Status.DONE:
        raise ExportNotReady(f"The export is {job.status}, not done.", status=job.status)
    name = job.file.name.rsplit("/", 1)[-1]
    content_type = CONTENT_TYPES[job.format]
    response = FileResponse(
        job.file.open("rb"), as_attachment=True, filename=name, content_type=content_type
    )
    response["Cache-Control"] = "no-store"
    return response


class ExportDownloadApi(OrganizationAPIView):
    scope_map = {"GET": "billing:read"}

    @extend_schema(
        operation_id="billing_exports_download",
        responses={
            (200, "text/csv"): OpenApiResponse(str, description="csv, focus.csv"),
            (200, "application/json"): OpenApiResponse(dict, description="json"),
            (200, "application/pdf"): OpenApiResponse(bytes, description="pdf"),
            **error_responses(409),
        },
        description="The file of a done export job (409 export_not_ready before).",
    )
    def get(self, request, id):
        return file_response(export_job_get(principal=self.principal, id=id))


class StreamParams(serializers.Serializer):
    pseudonymize = serializers.BooleanField(default=False)


def stream_response(export: ExportRequest) -> StreamingHttpResponse:
    """The export streamed as it is read (constant memory), as an attachment."""
    content_type = CONTENT_TYPES[export.format]
    response = StreamingHttpResponse(export_chunks(export), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{export.filename()}"'
    response["Cache-Control"] = "no-store"
    return response


def _stream(view: OrganizationAPIView, kind: str, fmt: str) -> StreamingHttpResponse:
    principal = view.principal
    require_kind_scope(principal, kind)
    if fmt not in FORMATS[kind]:
        raise ValidationFailed({"format": [f"One of: {', '.join(FORMATS[kind])}."]})
    query = view.request.query_params
    params = view.parse(StreamParams, data={k: v for k, v in query.items() if k == "pseudonymize"})
    filters = filters_parse(
        principal, {k: v for k, v in query.items() if k != "pseudonymize"}, kind=kind
    )
    export = ExportRequest(principal=principal, kind=kind, format=fmt, filters=filters)
    limit = stream_max_rows()
    if export_count(export, limit=limit) > limit:
        raise ExportTooLarge(
            f"More than {limit:,} rows: POST /api/v1/billing/exports to make an export job.",
            limit=limit,
        )
    if params["pseudonymize"]:
        export.pseudonymize = True
        export.secret = pseudonym_secret(organization=principal.organization, actor=view.actor)
    return stream_response(export)


_FILTER_PARAMETERS = [
    OpenApiParameter(name, str, description=description)
    for name, description in (
        ("from", "ISO 8601 date or date-time (no offset: the organization's time zone)"),
        ("to", "exclusive; as `from`"),
        ("team", "team slug"),
        ("member", "member e-mail"),
        ("key", "API key hash"),
        ("model", "part of the model id"),
        ("operation", "chat, completion, image, embedding, audio, batch, other"),
        ("conversation", "conversation id"),
        ("min_tokens", "prompt + completion tokens at least"),
        ("max_tokens", "prompt + completion tokens at most"),
        ("min_cost", "credits at least"),
        ("max_cost", "credits at most"),
        ("pseudonymize", "true: members and keys as pseudonyms"),
    )
]
_STREAM_RESPONSES = {
    (200, "text/csv"): OpenApiResponse(str, description="csv, focus.csv"),
    (200, "application/json"): OpenApiResponse(dict, description="json"),
    (200, "application/pdf"): OpenApiResponse(bytes, description="pdf"),
    **error_responses(413),
}


class UsageStreamApi(OrganizationAPIView):
    scope_map = {"GET": "billing:read"}

    @extend_schema(
        operation_id="billing_exports_usage_stream",
        parameters=[
            OpenApiParameter("fmt", str, OpenApiParameter.PATH, enum=list(FORMATS["usage"])),
            *_FILTER_PARAMETERS,
        ],
        responses=_STREAM_RESPONSES,
        description="The usage the caller may read, streamed: `usage.csv`, `usage.json`, "
        "`usage.focus.csv` (FOCUS 1.2), `usage.pdf` (a summary). More rows than "
        "BILLING_EXPORT_STREAM_MAX_ROWS: 413 export_too_large (make an export job).",
    )
    def get(self, request, fmt: str):
        return _stream(self, ExportJob.Kind.USAGE, fmt)


class LedgerStreamApi(OrganizationAPIView):
    scope_map = {"GET": "billing:read"}

    @extend_schema(
        operation_id="billing_exports_ledger_stream",
        parameters=[
            OpenApiParameter("fmt", str, OpenApiParameter.PATH, enum=list(FORMATS["ledger"])),
            OpenApiParameter("from", str, description="as for usage"),
            OpenApiParameter("to", str, description="exclusive"),
            OpenApiParameter("account", int, description="one account's id"),
            OpenApiParameter("transaction_kind", str, description="grant, usage, allocation, ..."),
        ],
        responses=_STREAM_RESPONSES,
        description="The ledger entries of the accounts the caller may read, each with its "
        "account's running balance, streamed: `ledger.csv`, `ledger.json`, `ledger.pdf`.",
    )
    def get(self, request, fmt: str):
        return _stream(self, ExportJob.Kind.LEDGER, fmt)
