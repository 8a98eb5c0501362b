"""`/api/v1/billing/invoices`, `/credit-notes`, `/statements` and `/profile`: the organization's
documents and its billing settings. Reading needs `billing:read`; generating a statement and
changing the settings need `billing:write`. Invoices and credit notes are addressed by their
number (`ACME-2026-0001`), statements by their public id; another organization's answers 404.
Amounts are decimal strings: USD at whole cents on invoices and credit notes, credits on
statements. `.../pdf` answers the document as `application/pdf` (rendered on the spot when the
Celery task has not stored it yet)."""

from __future__ import annotations

import json

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import renderers, serializers, status
from rest_framework.response import Response

from portal.api import OrganizationAPIView, OrganizationListAPIView, StrictSerializer

from . import selectors_documents as selectors
from .models import CreditNote, Invoice, Statement
from .pdf import document_filename, document_pdf
from .services.documents import billing_profile_read, billing_profile_update
from .services.statements import statement_generate


def _usd(**kwargs):
    return serializers.DecimalField(max_digits=14, decimal_places=2, **kwargs)


def _credits(**kwargs):
    return serializers.DecimalField(max_digits=28, decimal_places=12, **kwargs)


class PartyOutput(serializers.Serializer):
    name = serializers.CharField()
    address = serializers.CharField(allow_blank=True)
    tax_id = serializers.CharField(allow_blank=True)
    email = serializers.CharField(allow_blank=True)


class InvoiceOutput(serializers.Serializer):
    number = serializers.CharField(help_text="PREFIX-YYYY-NNNN, gapless per organization and year.")
    status = serializers.ChoiceField(choices=Invoice.Status.choices)
    issued_at = serializers.DateTimeField()
    paid_at = serializers.DateTimeField(allow_null=True)
    subtotal = _usd()
    tax_rate = serializers.DecimalField(max_digits=5, decimal_places=2, help_text="Percent.")
    tax = _usd()
    total = _usd()
    currency = serializers.CharField()
    order = serializers.UUIDField(
        source="order.public_id", allow_null=True, help_text="The order's public id, if any."
    )


class InvoiceLineOutput(serializers.Serializer):
    position = serializers.IntegerField()
    description = serializers.CharField()
    quantity = serializers.DecimalField(max_digits=20, decimal_places=4)
    unit_price = _usd()
    amount = _usd(help_text="quantity x unit_price, before tax.")


class InvoiceDetailOutput(InvoiceOutput):
    seller = PartyOutput()
    buyer = PartyOutput()
    lines = InvoiceLineOutput(many=True)
    credit_notes = serializers.ListField(
        child=serializers.CharField(),
        source="credit_note_numbers",
        help_text="The numbers of the credit notes against it.",
    )


class CreditNoteOutput(serializers.Serializer):
    number = serializers.CharField(help_text="PREFIX-CN-YYYY-NNNN.")
    invoice = serializers.CharField(source="invoice.number", help_text="The invoice's number.")
    reason = serializers.CharField()
    issued_at = serializers.DateTimeField()
    subtotal = _usd()
    tax = _usd()
    total = _usd(help_text="Credited, tax included.")
    currency = serializers.CharField()
    provider_reference = serializers.CharField(allow_blank=True)


class StatementOutput(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    year = serializers.IntegerField()
    month = serializers.IntegerField()
    time_zone = serializers.CharField()
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField(help_text="Exclusive.")
    opening_balance = _credits()
    purchases = _credits()
    grants = _credits()
    usage = _credits(help_text="Negative.")
    expiry = _credits(help_text="Negative.")
    adjustments = _credits()
    closing_balance = _credits()
    generated_at = serializers.DateTimeField()


class StatementDetailOutput(StatementOutput):
    breakdown = serializers.DictField(
        help_text="by_team, by_model, by_operation: [{key, spent}]; accounts: "
        "[{account, kind, opening, closing}] (credits as strings)."
    )


class StatementInput(StrictSerializer):
    year = serializers.IntegerField(min_value=2000, max_value=9999)
    month = serializers.IntegerField(min_value=1, max_value=12)


class ProfileOutput(serializers.Serializer):
    number_prefix = serializers.CharField()
    tax_rate = serializers.DecimalField(max_digits=5, decimal_places=2, help_text="Percent.")
    buyer = PartyOutput(
        help_text="From the organization's settings (billing e-mail, address, tax id)."
    )


class ProfileInput(StrictSerializer):
    number_prefix = serializers.CharField(
        required=False, allow_blank=True, max_length=40, help_text="1-12 of A-Z and 0-9."
    )
    tax_rate = serializers.CharField(
        required=False, max_length=20, help_text="Percent, 0 to 100, a decimal string."
    )

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError(
                {"non_field_errors": ["Give number_prefix, tax_rate or both."]}
            )
        return attrs


class PdfRenderer(renderers.BaseRenderer):
    """`application/pdf` for clients that ask for it; errors stay in the JSON error format."""

    media_type = "application/pdf"
    format = "pdf"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, bytes):
            return data
        response = (renderer_context or {}).get("response")
        if response is not None:  # an error: said in JSON, as everywhere
            response["Content-Type"] = "application/json"
        return json.dumps(data).encode()


def pdf_response(document) -> HttpResponse:
    response = HttpResponse(document_pdf(document), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{document_filename(document)}"'
    response["Cache-Control"] = "private, no-store"
    return response


PDF_RESPONSE = {(200, "application/pdf"): OpenApiResponse(OpenApiTypes.BINARY, description="PDF")}


class PdfApi(OrganizationAPIView):
    scope_map = {"GET": "billing:read"}
    renderer_classes = [renderers.JSONRenderer, PdfRenderer]


# Invoices --------------------------------------------------------------------------------------


class InvoiceListApi(OrganizationListAPIView):
    scope_map = {"GET": "billing:read"}
    model = Invoice

    def selector(self, organization):
        return selectors.invoices_of(organization)

    @extend_schema(operation_id="billing_invoices_list", responses={200: InvoiceOutput(many=True)})
    def get(self, request):
        return self.list_response(InvoiceOutput)


class InvoiceDetailApi(OrganizationAPIView):
    scope_map = {"GET": "billing:read"}

    @extend_schema(operation_id="billing_invoices_get", responses={200: InvoiceDetailOutput})
    def get(self, request, number):
        invoice = selectors.invoice_get(organization=self.organization, number=number)
        invoice.credit_note_numbers = list(
            invoice.credit_notes.order_by("id").values_list("number", flat=True)
        )
        return Response(InvoiceDetailOutput(invoice).data)


class InvoicePdfApi(PdfApi):
    @extend_schema(operation_id="billing_invoices_pdf", responses=PDF_RESPONSE)
    def get(self, request, number):
        return pdf_response(selectors.invoice_get(organization=self.organization, number=number))


# Credit notes ----------------------------------------------------------------------------------


class CreditNoteListApi(OrganizationListAPIView):
    scope_map = {"GET": "billing:read"}
    model = CreditNote

    def selector(self, organization):
        return selectors.credit_notes_of(organization)

    @extend_schema(
        operation_id="billing_credit_notes_list", responses={200: CreditNoteOutput(many=True)}
    )
    def get(self, request):
        return self.list_response(CreditNoteOutput)


class CreditNoteDetailApi(OrganizationAPIView):
    scope_map = {"GET": "billing:read"}

    @extend_schema(operation_id="billing_credit_notes_get", responses={200: CreditNoteOutput})
    def get(self, request, number):
        note = selectors.credit_note_get(organization=self.organization, number=number)
        return Response(CreditNoteOutput(note).data)


class CreditNotePdfApi(PdfApi):
    @extend_schema(operation_id="billing_credit_notes_pdf", responses=PDF_RESPONSE)
    def get(self, request, number):
        note = selectors.credit_note_get(organization=self.organization, number=number)
        return pdf_response(note)


# Statements ------------------------------------------------------------------------------------


class StatementListApi(OrganizationListAPIView):
    scope_map = {"GET": "billing:read", "POST": "billing:write"}
    model = Statement

    def selector(self, organization):
        return selectors.statements_of(organization)

    @extend_schema(
        operation_id="billing_statements_list", responses={200: StatementOutput(many=True)}
    )
    def get(self, request):
        return self.list_response(StatementOutput)

    @extend_schema(
        operation_id="billing_statements_generate",
        request=StatementInput,
        responses={
            201: StatementDetailOutput,
            200: OpenApiResponse(StatementDetailOutput, description="Generated before"),
        },
        description="Generate the statement of a month that has ended in the organization's "
        "time zone (or answer the one generated before: a past month never changes).",
    )
    def post(self, request):
        data = self.parse(StatementInput)
        statement, created = statement_generate(
            organization=self.organization, year=data["year"], month=data["month"], actor=self.actor
        )
        return Response(
            StatementDetailOutput(statement).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class StatementDetailApi(OrganizationAPIView):
    scope_map = {"GET": "billing:read"}

    @extend_schema(operation_id="billing_statements_get", responses={200: StatementDetailOutput})
    def get(self, request, id):
        statement = selectors.statement_get(organization=self.organization, id=id)
        return Response(StatementDetailOutput(statement).data)


class StatementPdfApi(PdfApi):
    @extend_schema(operation_id="billing_statements_pdf", responses=PDF_RESPONSE)
    def get(self, request, id):
        return pdf_response(selectors.statement_get(organization=self.organization, id=id))


# Billing settings ------------------------------------------------------------------------------


def _profile_data(organization) -> dict:
    profile = billing_profile_read(organization)
    return ProfileOutput(
        {
            "number_prefix": profile.number_prefix,
            "tax_rate": profile.tax_rate,
            "buyer": {
                "name": organization.name,
                "address": organization.billing_address,
                "tax_id": organization.tax_id,
                "email": organization.billing_email,
            },
        }
    ).data


class ProfileApi(OrganizationAPIView):
    scope_map = {"GET": "billing:read", "PATCH": "billing:write"}

    @extend_schema(operation_id="billing_profile_get", responses={200: ProfileOutput})
    def get(self, request):
        return Response(_profile_data(self.organization))

    @extend_schema(
        operation_id="billing_profile_update",
        request=ProfileInput,
        responses={200: ProfileOutput},
        description="The number prefix of documents issued from now on (the year's sequence "
        "continues) and the tax rate (percent) applied to them. The buyer's details are the "
        "organization's settings (PATCH /api/v1/organization).",
    )
    def patch(self, request):
        data = self.parse(ProfileInput)
        billing_profile_update(organization=self.organization, actor=self.actor, **data)
        return Response(_profile_data(self.organization))
