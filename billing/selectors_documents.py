"""Reads of invoices, credit notes and statements, scoped to one organization (another
organization's number or id is NotFound, as one that exists nowhere)."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from accounts.models import Organization
from portal.errors import NotFound

from .models import CreditNote, Invoice, Statement


def invoices_of(organization: Organization) -> QuerySet[Invoice]:
    return Invoice.objects.filter(organization=organization).select_related("order", "organization")


def credit_notes_of(organization: Organization) -> QuerySet[CreditNote]:
    return CreditNote.objects.filter(organization=organization).select_related(
        "invoice", "organization"
    )


def statements_of(organization: Organization) -> QuerySet[Statement]:
    return Statement.objects.filter(organization=organization).select_related("organization")


def invoice_get(*, organization: Organization, number: str) -> Invoice:
    """The organization's invoice numbered `number`, with its lines. Raises NotFound."""
    invoice = invoices_of(organization).prefetch_related("lines").filter(number=number).first()
    if invoice is None:
        raise NotFound(f"No invoice '{number}'.")
    return invoice


def credit_note_get(*, organization: Organization, number: str) -> CreditNote:
    note = credit_notes_of(organization).filter(number=number).first()
    if note is None:
        raise NotFound(f"No credit note '{number}'.")
    return note


def statement_get(*, organization: Organization, id) -> Statement:
    try:
        public_id = uuid.UUID(str(id))
    except ValueError:
        raise NotFound(f"No statement '{id}'.") from None
    statement = statements_of(organization).filter(public_id=public_id).first()
    if statement is None:
        raise NotFound(f"No statement '{id}'.")
    return statement
