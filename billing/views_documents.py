"""Pages of the billing documents under `/o/<org>/billing/`: invoices and credit notes (list,
download the PDF), statements (list, generate a month, download), and the billing settings
(number prefix, tax rate). Reading needs `billing:read` (owners, admins, billing members);
generating a statement and changing the settings need `billing:write`, as over the API
(`billing.apis_documents`), through the same selectors and services."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from accounts.forms import form_errors
from accounts.pages import actor, organization_page
from portal.errors import ApplicationError, NotFound

from . import selectors_documents as selectors
from .apis_documents import pdf_response
from .services.documents import billing_profile_read, billing_profile_update
from .services.statements import month_name, previous_month, statement_generate

PAGE_ROWS = 100


def _zone(request) -> ZoneInfo:
    return ZoneInfo(request.organization.time_zone or "UTC")


def _found(call):
    try:
        return call()
    except NotFound:
        raise Http404("No such document") from None


@require_GET
@organization_page(scope="billing:read")
def documents(request):
    org = request.organization
    zone = _zone(request)
    invoices = list(selectors.invoices_of(org).order_by("-issued_at", "-id")[:PAGE_ROWS])
    notes = list(selectors.credit_notes_of(org).order_by("-issued_at", "-id")[:PAGE_ROWS])
    for document in (*invoices, *notes):
        document.local_issued_at = document.issued_at.astimezone(zone)
    return render(
        request,
        "billing/documents.html",
        {
            "invoices": invoices,
            "credit_notes": notes,
            "time_zone": zone.key,
            "may_write": request.principal.has("billing:write"),
            "limit": PAGE_ROWS,
        },
    )


@require_GET
@organization_page(scope="billing:read")
def invoice_pdf(request, number: str):
    invoice = _found(
        lambda: selectors.invoice_get(organization=request.organization, number=number)
    )
    return pdf_response(invoice)


@require_GET
@organization_page(scope="billing:read")
def credit_note_pdf(request, number: str):
    note = _found(
        lambda: selectors.credit_note_get(organization=request.organization, number=number)
    )
    return pdf_response(note)


class StatementForm(forms.Form):
    month = forms.CharField(
        label="Month",
        help_text="A month that has ended in the organization's time zone.",
        widget=forms.DateInput(attrs={"type": "month"}),
    )

    def clean_month(self) -> tuple[int, int]:
        value = self.cleaned_data["month"].strip()
        try:
            parsed = date.fromisoformat(f"{value}-01")
        except ValueError:
            raise forms.ValidationError("A month as YYYY-MM.") from None
        return parsed.year, parsed.month


@require_http_methods(["GET", "POST"])
@organization_page(scope="billing:read")
def statements(request):
    org = request.organization
    principal = request.principal
    back = reverse("billing-statements", kwargs={"org": org.slug})
    may_write = principal.has("billing:write")
    year, month = previous_month(org)
    form = StatementForm(initial={"month": f"{year}-{month:02d}"}) if may_write else None
    if request.method == "POST":
        if not may_write:
            raise PermissionDenied("billing:write")
        form = StatementForm(request.POST)
        if form.is_valid():
            year, month = form.cleaned_data["month"]
            try:
                statement, created = statement_generate(
                    organization=org, year=year, month=month, actor=actor(request)
                )
            except ApplicationError as exc:
                form_errors(form, exc)
            else:
                label = month_name(statement.year, statement.month)
                messages.success(
                    request,
                    f"Statement of {label} generated."
                    if created
                    else f"The statement of {label} was generated before.",
                )
                return redirect(back)
    zone = _zone(request)
    rows = list(selectors.statements_of(org).order_by("-year", "-month")[:PAGE_ROWS])
    for statement in rows:
        statement.label = month_name(statement.year, statement.month)
        statement.local_generated_at = statement.generated_at.astimezone(zone)
        statement.inflow = statement.purchases + statement.grants
        statement.other = statement.expiry + statement.adjustments
    return render(
        request,
        "billing/statements.html",
        {"statements": rows, "form": form, "time_zone": zone.key},
        status=400 if form is not None and form.errors else 200,
    )


@require_GET
@organization_page(scope="billing:read")
def statement_pdf(request, id):
    statement = _found(lambda: selectors.statement_get(organization=request.organization, id=id))
    return pdf_response(statement)


class BillingSettingsForm(forms.Form):
    number_prefix = forms.CharField(
        label="Document number prefix",
        max_length=12,
        help_text="1 to 12 upper-case letters and digits: invoices read PREFIX-YYYY-NNNN.",
    )
    tax_rate = forms.DecimalField(
        label="Tax rate (%)",
        min_value=0,
        max_value=100,
        decimal_places=2,
        help_text="Applied to invoices issued from now on (0 to 100).",
    )


@require_http_methods(["GET", "POST"])
@organization_page(scope="billing:read")
def billing_settings(request):
    org = request.organization
    may_write = request.principal.has("billing:write")
    profile = billing_profile_read(org)
    form = BillingSettingsForm(
        initial={"number_prefix": profile.number_prefix, "tax_rate": profile.tax_rate}
    )
    if request.method == "POST":
        if not may_write:
            raise PermissionDenied("billing:write")
        form = BillingSettingsForm(request.POST)
        if form.is_valid():
            try:
                billing_profile_update(organization=org, actor=actor(request), **form.cleaned_data)
            except ApplicationError as exc:
                form_errors(form, exc)
            else:
                messages.success(request, "Billing settings saved.")
                return redirect(reverse("billing-settings", kwargs={"org": org.slug}))
    if not may_write:
        for field in form.fields.values():
            field.disabled = True
    return render(
        request,
        "billing/settings.html",
        {"form": form, "may_write": may_write},
        status=400 if form.errors else 200,
    )
