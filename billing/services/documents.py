"""Invoices and credit notes: gapless numbers per organization and year, tax, and the seller's and
buyer's details frozen at issue.

Numbers read `PREFIX-YYYY-NNNN` for invoices and `PREFIX-CN-YYYY-NNNN` for credit notes, the year
being the issue date's in the organization's time zone. The number is taken under the
`DocumentSequence` row's lock in the transaction that issues the document, so a rolled-back issue
gives its number back and concurrent issues wait for each other (no gaps, no duplicates).

Tax: `tax = round_half_even(subtotal * tax_rate / 100, 0.01 USD)`, the rate being the
organization's (`BillingProfile.tax_rate`, percent, 0 by default) at issue.

Issued documents are immutable (PostgreSQL triggers, migration `billing.0002_documents`): an
invoice changes only its status (issued -> paid | void, `invoice_status_set`) and its rendered
PDF, a credit note only its PDF. The PDF is rendered by a Celery task queued after the issuing
transaction commits (`billing.tasks.document_pdf_render`); a download before it ran renders it
on the spot (`billing.pdf.document_pdf`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.audit import Actor, audit_record
from accounts.models import Organization
from portal.errors import ValidationFailed
from portal.money import CENT

from ..models import BillingProfile, CreditNote, DocumentSequence, Invoice, InvoiceLine, Order


def _default_prefix(organization: Organization) -> str:
    prefix = re.sub(r"[^A-Z0-9]", "", organization.slug.upper())[:12]
    return prefix or f"ORG{organization.pk}"


def billing_profile_of(organization: Organization) -> BillingProfile:
    """The organization's billing profile, created on first use with the prefix taken from its
    slug (`acme-labs` -> `ACMELABS`) and a tax rate of 0 %."""
    profile = BillingProfile.objects.filter(organization=organization).first()
    if profile is not None:
        return profile
    try:
        with transaction.atomic():
            return BillingProfile.objects.create(
                organization=organization, number_prefix=_default_prefix(organization)
            )
    except IntegrityError:  # created by a concurrent request
        return BillingProfile.objects.get(organization=organization)


def billing_profile_read(organization: Organization) -> BillingProfile:
    """The organization's billing profile as it is, or the one it would get (unsaved): for
    reads that must not write."""
    return BillingProfile.objects.filter(organization=organization).first() or BillingProfile(
        organization=organization, number_prefix=_default_prefix(organization)
    )


def tax_of(subtotal: Decimal, rate: Decimal) -> Decimal:
    """The tax on `subtotal` USD at `rate` percent, rounded half-even to the cent."""
    return (subtotal * rate / 100).quantize(CENT, rounding=ROUND_HALF_EVEN)


def document_number_next(*, organization: Organization, kind: str, year: int) -> int:
    """Allocate the next number of `kind` for `organization` in `year` under the sequence row's
    lock. Runs inside the issuing transaction (asserted)."""
    assert transaction.get_connection().in_atomic_block, "numbers are taken inside the issue"
    DocumentSequence.objects.get_or_create(organization=organization, kind=kind, year=year)
    sequence = DocumentSequence.objects.select_for_update().get(
        organization=organization, kind=kind, year=year
    )
    sequence.last_number += 1
    sequence.save(update_fields=["last_number"])
    return sequence.last_number


def _format_number(prefix: str, kind: str, year: int, number: int) -> str:
    middle = "-CN" if kind == DocumentSequence.Kind.CREDIT_NOTE else ""
    return f"{prefix}{middle}-{year}-{number:04d}"


def _buyer(organization: Organization) -> dict:
    return {
        "name": organization.name,
        "address": organization.billing_address,
        "tax_id": organization.tax_id,
        "email": organization.billing_email,
    }


@dataclass(frozen=True)
class Line:
    """An invoice line before issue: `quantity` units at `unit_price` USD (whole cents)."""

    description: str
    quantity: Decimal
    unit_price: Decimal

    @property
    def amount(self) -> Decimal:
        return (self.quantity * self.unit_price).quantize(CENT, rounding=ROUND_HALF_EVEN)


def _issue_year(organization: Organization, at) -> int:
    return at.astimezone(organization.zone).year


@transaction.atomic
def invoice_issue(
    *,
    organization: Organization,
    lines: list[Line],
    order: Order | None = None,
    status: str = Invoice.Status.ISSUED,
    actor: Actor,
) -> Invoice:
    """Issue a numbered invoice of `lines` (USD) for `organization`, with its tax rate and the
    seller's (settings.BILLING_SELLER) and buyer's details frozen, optionally for `order`. The
    invoice of an order is taxed at the order's rate, the one its buyer was shown and paid (a
    rate changed in the billing profile since applies to later orders only), so its total is the
    order's.

    Raises ValidationFailed for no lines or a negative line."""
    if not lines:
        raise ValidationFailed({"lines": ["An invoice has at least one line."]})
    if any(line.quantity <= 0 or line.unit_price < 0 for line in lines):
        raise ValidationFailed({"lines": ["Quantities are positive and prices not negative."]})
    profile = billing_profile_of(organization)
    now = timezone.now()
    year = _issue_year(organization, now)
    number = document_number_next(
        organization=organization, kind=DocumentSequence.Kind.INVOICE, year=year
    )
    subtotal = sum((line.amount for line in lines), Decimal(0)).quantize(CENT)
    tax_rate = order.tax_rate if order is not None else profile.tax_rate
    tax = tax_of(subtotal, tax_rate)
    invoice = Invoice.objects.create(
        organization=organization,
        number=_format_number(profile.number_prefix, DocumentSequence.Kind.INVOICE, year, number),
        status=status,
        order=order,
        currency="USD",
        subtotal=subtotal,
        tax_rate=tax_rate,
        tax=tax,
        total=subtotal + tax,
        seller=dict(settings.BILLING_SELLER),
        buyer=_buyer(organization),
        issued_at=now,
        paid_at=now if status == Invoice.Status.PAID else None,
    )
    InvoiceLine.objects.bulk_create(
        InvoiceLine(
            invoice=invoice,
            position=position,
            description=line.description[:300],
            quantity=line.quantity,
            unit_price=line.unit_price,
            amount=line.amount,
        )
        for position, line in enumerate(lines, start=1)
    )
    audit_record(
        organization=organization,
        actor=actor,
        target=invoice,
        action="invoice.issued",
        after={"number": invoice.number, "total": invoice.total, "status": invoice.status},
    )
    _render_after_commit("invoice", invoice.pk)
    return invoice


@transaction.atomic
def credit_note_issue(
    *,
    invoice: Invoice,
    total: Decimal,
    reason: str,
    provider_reference: str = "",
    actor: Actor,
) -> CreditNote:
    """Issue a numbered credit note of `total` USD (tax included, split at the invoice's rate)
    against `invoice`. Raises ValidationFailed when `total` is not positive or, with the credit
    notes already issued, exceeds the invoice's total."""
    invoice = Invoice.objects.select_for_update().get(pk=invoice.pk)
    credited = sum(invoice.credit_notes.values_list("total", flat=True), Decimal(0))
    if total <= 0 or credited + total > invoice.total:
        raise ValidationFailed(
            {"total": [f"Between 0.01 and {invoice.total - credited} USD (what is not credited)."]}
        )
    organization = invoice.organization
    profile = billing_profile_of(organization)
    now = timezone.now()
    year = _issue_year(organization, now)
    number = document_number_next(
        organization=organization, kind=DocumentSequence.Kind.CREDIT_NOTE, year=year
    )
    rate = invoice.tax_rate
    subtotal = (total * 100 / (100 + rate)).quantize(CENT, rounding=ROUND_HALF_EVEN)
    note = CreditNote.objects.create(
        organization=organization,
        number=_format_number(
            profile.number_prefix, DocumentSequence.Kind.CREDIT_NOTE, year, number
        ),
        invoice=invoice,
        reason=reason[:300],
        currency=invoice.currency,
        subtotal=subtotal,
        tax=total - subtotal,
        total=total,
        provider_reference=provider_reference,
        issued_at=now,
    )
    audit_record(
        organization=organization,
        actor=actor,
        target=note,
        action="credit_note.issued",
        after={"number": note.number, "invoice": invoice.number, "total": note.total},
    )
    _render_after_commit("credit_note", note.pk)
    return note


def _render_after_commit(kind: str, pk: int) -> None:
    """Queue the PDF's rendering once the issue has committed (none for a rolled-back issue).
    A broker that is down does not undo the issue (`robust`): the download renders it then."""
    from ..tasks import document_pdf_render

    transaction.on_commit(lambda: document_pdf_render.delay(kind, pk), robust=True)


INVOICE_STATUS_MOVES = {Invoice.Status.ISSUED: {Invoice.Status.PAID, Invoice.Status.VOID}}


@transaction.atomic
def invoice_status_set(*, invoice: Invoice, status: str, actor: Actor) -> Invoice:
    """Move an issued invoice to `paid` (setting `paid_at`) or `void`; the one change an issued
    invoice allows besides its PDF (PostgreSQL refuses any other). Setting the status it has is
    a no-op. Raises ValidationFailed for any other move (a paid or void invoice stays so;
    corrections are credit notes)."""
    invoice = Invoice.objects.select_for_update().get(pk=invoice.pk)
    if invoice.status == status:
        return invoice
    if status not in INVOICE_STATUS_MOVES.get(invoice.status, ()):
        raise ValidationFailed(
            {"status": [f"An invoice that is {invoice.status} cannot become {status}."]}
        )
    before = {"status": invoice.status}
    invoice.status = status
    fields = ["status", "pdf"]
    if status == Invoice.Status.PAID:
        invoice.paid_at = timezone.now()
        fields.append("paid_at")
    # The PDF shows the status: the old file goes and a new one is rendered after commit.
    stale, storage = invoice.pdf.name, invoice.pdf.storage
    invoice.pdf = ""
    invoice.save(update_fields=fields)
    if stale:
        transaction.on_commit(lambda: storage.delete(stale), robust=True)
    _render_after_commit("invoice", invoice.pk)
    audit_record(
        organization=invoice.organization,
        actor=actor,
        target=invoice,
        action=f"invoice.{status}",
        before=before,
        after={"number": invoice.number, "status": status},
    )
    return invoice


PREFIX_PATTERN = re.compile(r"^[A-Z0-9]{1,12}$")


def billing_profile_update(
    *, organization: Organization, actor: Actor, number_prefix=None, tax_rate=None
) -> BillingProfile:
    """Change the organization's document number prefix (1 to 12 upper-case letters and
    digits; numbers continue their year's sequence under the new prefix) and/or its tax rate
    (percent, 0 to 100, two decimals; applies to documents issued from now on). Raises
    ValidationFailed, and changes nothing then."""
    errors: dict[str, list[str]] = {}
    if number_prefix is not None and (
        not isinstance(number_prefix, str) or not PREFIX_PATTERN.match(number_prefix)
    ):
        errors["number_prefix"] = ["1 to 12 upper-case letters and digits."]
    if tax_rate is not None:
        try:
            tax_rate = Decimal(str(tax_rate))
            valid = tax_rate.is_finite() and 0 <= tax_rate <= 100
            valid = valid and tax_rate == tax_rate.quantize(CENT)
        except (ArithmeticError, ValueError):
            valid = False
        if not valid:
            errors["tax_rate"] = ["A percent between 0 and 100, at most two decimals."]
    if errors:
        raise ValidationFailed(errors)
    billing_profile_of(organization)
    with transaction.atomic():
        profile = BillingProfile.objects.select_for_update().get(organization=organization)
        before = {"number_prefix": profile.number_prefix, "tax_rate": profile.tax_rate}
        if number_prefix is not None:
            profile.number_prefix = number_prefix
        if tax_rate is not None:
            profile.tax_rate = tax_rate.quantize(CENT)
        profile.updated_at = timezone.now()
        profile.save(update_fields=["number_prefix", "tax_rate", "updated_at"])
        audit_record(
            organization=organization,
            actor=actor,
            target=profile,
            action="billing_profile.updated",
            before=before,
            after={"number_prefix": profile.number_prefix, "tax_rate": profile.tax_rate},
        )
    return profile
