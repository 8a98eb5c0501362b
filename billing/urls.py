"""URLs of billing: `api_patterns` (under `/api/v1/`, included by `portal.urls`) and
`urlpatterns`, the pages under `/o/<org-slug>/` (`billing/...`).

Each feature keeps its entries in its own block."""

from django.urls import path

from . import (
    apis_documents,
    apis_exports,
    apis_orders,
    apis_sync,
    apis_topup,
    views_documents,
    views_exports,
    views_orders,
    views_sync,
    views_topup,
)

api_patterns = [
    # Purchases (orders, providers' webhooks)
    path("credits/purchase", apis_orders.PurchaseApi.as_view(), name="credits-purchase"),
    path("billing/orders", apis_orders.OrderListApi.as_view(), name="billing-orders"),
    path("billing/orders/<uuid:id>", apis_orders.OrderDetailApi.as_view(), name="billing-order"),
    path(
        "billing/webhooks/stripe",
        apis_orders.StripeWebhookApi.as_view(),
        name="billing-webhook-stripe",
    ),
    path(
        "billing/webhooks/coinbase",
        apis_orders.CoinbaseWebhookApi.as_view(),
        name="billing-webhook-coinbase",
    ),
    # The OpenRouter credit sync
    path(
        "billing/openrouter", apis_sync.OpenRouterConnectionApi.as_view(), name="billing-openrouter"
    ),
    path(
        "billing/openrouter/sync",
        apis_sync.OpenRouterSyncApi.as_view(),
        name="billing-openrouter-sync",
    ),
    path(
        "billing/openrouter/snapshots",
        apis_sync.OpenRouterSnapshotListApi.as_view(),
        name="billing-openrouter-snapshots",
    ),
    # Billing documents (billing.apis_documents): invoices, credit notes, statements, settings.
    path("billing/invoices", apis_documents.InvoiceListApi.as_view(), name="billing-invoices"),
    path(
        "billing/invoices/<str:number>",
        apis_documents.InvoiceDetailApi.as_view(),
        name="billing-invoice",
    ),
    path(
        "billing/invoices/<str:number>/pdf",
        apis_documents.InvoicePdfApi.as_view(),
        name="billing-invoice-pdf",
    ),
    path(
        "billing/credit-notes",
        apis_documents.CreditNoteListApi.as_view(),
        name="billing-credit-notes",
    ),
    path(
        "billing/credit-notes/<str:number>",
        apis_documents.CreditNoteDetailApi.as_view(),
        name="billing-credit-note",
    ),
    path(
        "billing/credit-notes/<str:number>/pdf",
        apis_documents.CreditNotePdfApi.as_view(),
        name="billing-credit-note-pdf",
    ),
    path(
        "billing/statements", apis_documents.StatementListApi.as_view(), name="billing-statements"
    ),
    path(
        "billing/statements/<str:id>",
        apis_documents.StatementDetailApi.as_view(),
        name="billing-statement",
    ),
    path(
        "billing/statements/<str:id>/pdf",
        apis_documents.StatementPdfApi.as_view(),
        name="billing-statement-pdf",
    ),
    path("billing/profile", apis_documents.ProfileApi.as_view(), name="billing-profile"),
    # (end of billing documents)
    # Billing: exports (billing/apis_exports.py)
    path("billing/exports", apis_exports.ExportListApi.as_view(), name="billing-exports"),
    path(
        "billing/exports/usage.<str:fmt>",
        apis_exports.UsageStreamApi.as_view(),
        name="billing-exports-usage",
    ),
    path(
        "billing/exports/ledger.<str:fmt>",
        apis_exports.LedgerStreamApi.as_view(),
        name="billing-exports-ledger",
    ),
    path(
        "billing/exports/<uuid:id>", apis_exports.ExportDetailApi.as_view(), name="billing-export"
    ),
    path(
        "billing/exports/<uuid:id>/download",
        apis_exports.ExportDownloadApi.as_view(),
        name="billing-export-download",
    ),
    # (end of billing exports)
    # Automatic top-up (billing)
    path("billing/topup", apis_topup.TopUpRuleApi.as_view(), name="billing-topup"),
    path(
        "billing/topup/payment-method",
        apis_topup.TopUpPaymentMethodApi.as_view(),
        name="billing-topup-payment-method",
    ),
    path(
        "billing/topup/attempts",
        apis_topup.TopUpAttemptListApi.as_view(),
        name="billing-topup-attempts",
    ),
]

urlpatterns = [
    # Purchases
    path("billing/buy/", views_orders.buy, name="billing-buy"),
    path("billing/orders/", views_orders.orders, name="billing-orders"),
    path("billing/orders/<uuid:id>/", views_orders.order, name="billing-order"),
    path(
        "billing/orders/<uuid:id>/confirm/",
        views_orders.order_confirm,
        name="billing-order-confirm",
    ),
    # The OpenRouter credit sync (upstream sync)
    path("billing/openrouter/", views_sync.openrouter_page, name="billing-openrouter"),
    path(
        "billing/openrouter/connection/",
        views_sync.openrouter_connection,
        name="billing-openrouter-connection",
    ),
    path(
        "billing/openrouter/sync/", views_sync.openrouter_sync_now, name="billing-openrouter-sync"
    ),
    path(
        "billing/openrouter/disconnect/",
        views_sync.openrouter_disconnect,
        name="billing-openrouter-disconnect",
    ),
    # Documents (billing.views_documents): invoices, credit notes, statements, settings.
    path("billing/invoices/", views_documents.documents, name="billing-documents"),
    path(
        "billing/invoices/<str:number>/pdf/",
        views_documents.invoice_pdf,
        name="billing-invoice-pdf-page",
    ),
    path(
        "billing/credit-notes/<str:number>/pdf/",
        views_documents.credit_note_pdf,
        name="billing-credit-note-pdf-page",
    ),
    path("billing/statements/", views_documents.statements, name="billing-statements"),
    path(
        "billing/statements/<uuid:id>/pdf/",
        views_documents.statement_pdf,
        name="billing-statement-pdf-page",
    ),
    path("billing/settings/", views_documents.billing_settings, name="billing-settings"),
    # (end of documents)
    # Exports (billing/views_exports.py)
    path("billing/exports/", views_exports.exports, name="billing-exports"),
    path("billing/exports/jobs/", views_exports.export_jobs, name="billing-export-jobs"),
    path(
        "billing/exports/<uuid:id>/download/",
        views_exports.export_download,
        name="billing-export-download",
    ),
    # (end of exports)
    # Automatic top-up
    path("billing/topup/", views_topup.topup, name="billing-topup"),
    path("billing/topup/card/", views_topup.topup_card, name="billing-topup-card"),
    path(
        "billing/topup/<uuid:id>/approve/", views_topup.topup_approve, name="billing-topup-approve"
    ),
    path("billing/topup/<uuid:id>/reject/", views_topup.topup_reject, name="billing-topup-reject"),
]
