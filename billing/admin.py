"""Operators' views of orders, provider events and documents. Orders are settled and documents
issued only by services (`billing.services`): read-only here (see `portal.admin`)."""

from django.contrib import admin

from portal.admin import ReadOnlyAdmin, ReadOnlyInline

from .models import (
    BillingProfile,
    CreditNote,
    DocumentSequence,
    Invoice,
    InvoiceLine,
    Order,
    ProviderEvent,
)


@admin.register(BillingProfile)
class BillingProfileAdmin(ReadOnlyAdmin):
    list_display = ["organization", "number_prefix", "tax_rate", "stripe_customer_id"]


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = [
        "public_id",
        "organization",
        "purpose",
        "provider",
        "amount",
        "total",
        "status",
        "created_at",
        "paid_at",
    ]
    list_filter = ["status", "provider", "purpose", "organization"]
    search_fields = ["public_id", "provider_reference", "idempotency_key"]


@admin.register(ProviderEvent)
class ProviderEventAdmin(ReadOnlyAdmin):
    list_display = ["provider", "event_id", "type", "order", "outcome", "detail", "received_at"]
    list_filter = ["provider", "outcome", "type"]
    search_fields = ["event_id"]


@admin.register(DocumentSequence)
class DocumentSequenceAdmin(ReadOnlyAdmin):
    list_display = ["organization", "kind", "year", "last_number"]
    list_filter = ["kind", "year"]


class InvoiceLineInline(ReadOnlyInline):
    model = InvoiceLine
    fields = ["position", "description", "quantity", "unit_price", "amount"]


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyAdmin):
    list_display = ["number", "organization", "status", "subtotal", "tax", "total", "issued_at"]
    list_filter = ["status", "organization"]
    search_fields = ["number", "public_id"]
    inlines = [InvoiceLineInline]


@admin.register(CreditNote)
class CreditNoteAdmin(ReadOnlyAdmin):
    list_display = ["number", "organization", "invoice", "total", "reason", "issued_at"]
    list_filter = ["organization"]
    search_fields = ["number", "public_id"]
