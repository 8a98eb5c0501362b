"""Pages of the billing app under `/o/<org-slug>/` (included by `portal.urls`)."""

from django.urls import path

from . import views_documents

urlpatterns = [
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
]
