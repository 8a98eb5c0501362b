"""Operators' views of the ledger, prices and usage. Ledger rows, holds, lots and usage events
are written only by services, prices by `prices_load`: read-only here (see `portal.admin`)."""

from django.contrib import admin

from portal.admin import ReadOnlyAdmin, ReadOnlyInline

from .models import (
    CreditLot,
    Hold,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    ModelPrice,
    UsageEvent,
)


@admin.register(LedgerAccount)
class LedgerAccountAdmin(ReadOnlyAdmin):
    list_display = ["id", "organization", "kind", "team", "balance", "held", "may_overdraw"]
    list_filter = ["kind", "organization"]


class EntryInline(ReadOnlyInline):
    model = LedgerEntry
    fields = ["account", "amount", "lot", "created_at"]


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdmin):
    list_display = ["id", "organization", "kind", "idempotency_key", "memo", "created_at"]
    list_filter = ["kind", "organization"]
    search_fields = ["idempotency_key", "memo"]
    inlines = [EntryInline]


@admin.register(CreditLot)
class CreditLotAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "organization",
        "account",
        "source",
        "original_amount",
        "remaining",
        "priority",
        "expires_at",
        "created_at",
    ]
    list_filter = ["source", "organization"]


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "organization",
        "account",
        "amount",
        "captured_amount",
        "status",
        "expires_at",
        "created_at",
    ]
    list_filter = ["status", "organization"]
    search_fields = ["idempotency_key"]


@admin.register(ModelPrice)
class ModelPriceAdmin(ReadOnlyAdmin):
    list_display = [
        "model",
        "provider",
        "mode",
        "effective_from",
        "input_per_token",
        "output_per_token",
        "cache_read_per_token",
    ]
    list_filter = ["provider", "mode"]
    search_fields = ["model"]


@admin.register(UsageEvent)
class UsageEventAdmin(ReadOnlyAdmin):
    list_display = [
        "event_id",
        "organization",
        "team",
        "model",
        "operation",
        "prompt_tokens",
        "completion_tokens",
        "cost",
        "occurred_at",
    ]
    list_filter = ["operation", "cost_source", "organization"]
    search_fields = ["event_id", "model", "conversation_id"]
    date_hierarchy = "occurred_at"
