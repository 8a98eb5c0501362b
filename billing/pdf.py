"""Invoices, credit notes and statements as PDF: rendered in-process by WeasyPrint from the
templates `templates/billing/invoice.html`, `credit_note.html` and `statement.html` (A4, page
numbers from CSS `@page` counters), and stored through Django's storage API (the default storage:
files under MEDIA_ROOT, or S3 and the like through django-storages; see the README).

Nothing is fetched while rendering: the templates hold their CSS, fonts come from the system's
fontconfig (Debian's fonts-dejavu), and the URL fetcher allows `data:` URLs only.

A document's `pdf` is rendered once, by the Celery task queued when it is issued
(`billing.tasks.document_pdf_render`); a download asked before the task ran renders it on the
spot (`document_pdf`), so no one ever gets an empty PDF.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from zoneinfo import ZoneInfo

from django.core.files.base import ContentFile
from django.db import models
from django.template.loader import render_to_string
from django.utils import timezone

from .models import CreditNote, Invoice, Statement

log = logging.getLogger("billing.pdf")

Document = Invoice | CreditNote | Statement

TEMPLATES = {
    Invoice: "billing/invoice.html",
    CreditNote: "billing/credit_note.html",
    Statement: "billing/statement.html",
}


def _zone(document: Document) -> ZoneInfo:
    name = getattr(document, "time_zone", "") or document.organization.time_zone or "UTC"
    return ZoneInfo(name)


def document_filename(document: Document) -> str:
    """`ACME-2026-0001.pdf`, `ACME-CN-2026-0001.pdf`, `statement-2026-11.pdf`."""
    if isinstance(document, Statement):
        return f"statement-{document.year}-{document.month:02d}.pdf"
    return f"{document.number}.pdf"


def _context(document: Document) -> dict:
    zone = _zone(document)
    context = {
        "document": document,
        "organization": document.organization,
        "time_zone": zone.key,
        "generated_at": timezone.now().astimezone(zone),
    }
    if isinstance(document, Invoice):
        context |= {
            "invoice": document,
            "lines": list(document.lines.all()),
            "seller": document.seller,
            "buyer": document.buyer,
            "issued_at": document.issued_at.astimezone(zone),
            "paid_at": document.paid_at and document.paid_at.astimezone(zone),
        }
    elif isinstance(document, CreditNote):
        context |= {
            "note": document,
            "invoice": document.invoice,
            "seller": document.invoice.seller,
            "buyer": document.invoice.buyer,
            "issued_at": document.issued_at.astimezone(zone),
            "invoice_issued_at": document.invoice.issued_at.astimezone(zone),
        }
    else:
        from .services.statements import statement_rows

        context |= {
            "statement": document,
            "period_start": document.period_start.astimezone(zone),
            "period_last_day": document.period_end.astimezone(zone) - timedelta(days=1),
            "rows": statement_rows(document),
            "breakdowns": [
                (title, key, document.breakdown.get(key, []))
                for title, key in (
                    ("team", "by_team"),
                    ("model", "by_model"),
                    ("operation", "by_operation"),
                )
            ],
            "generated_at": document.generated_at.astimezone(zone),
        }
    return context


def html_to_pdf(html: str) -> bytes:
    """WeasyPrint's PDF of `html`, fetching nothing: only `data:` URLs are read (an `http:`,
    `https:` or `file:` reference is left out)."""
    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    fetcher = URLFetcher(allowed_protocols={"data"})
    return HTML(string=html, url_fetcher=fetcher, base_url=".").write_pdf()


def pdf_render(document: Document) -> bytes:
    """The PDF of `document` (bytes), rendered now from its template. Fetches nothing."""
    return html_to_pdf(render_to_string(TEMPLATES[type(document)], _context(document)))


def document_pdf_store(document: Document) -> bool:
    """Render `document`'s PDF and store it (the default storage), unless it is stored already.
    True when this call stored it. Concurrent calls store one file: the row is set only where
    `pdf` is still empty, and a loser deletes its own file."""
    if document.pdf:
        return False
    content = pdf_render(document)
    model: type[models.Model] = type(document)
    field = document.pdf
    name = field.storage.save(
        field.field.generate_filename(document, document_filename(document)), ContentFile(content)
    )
    stored = model.objects.filter(pk=document.pk, pdf="").update(pdf=name)
    if not stored:
        field.storage.delete(name)
        document.refresh_from_db(fields=["pdf"])
        return False
    document.pdf.name = name
    return True


def document_pdf(document: Document) -> bytes:
    """The stored PDF of `document`; rendered and stored now when the task has not run yet (or
    the file is missing from the storage)."""
    storage = document.pdf.storage
    if document.pdf:
        try:
            with storage.open(document.pdf.name, "rb") as f:
                return f.read()
        except FileNotFoundError:
            log.warning("%s: stored PDF %s is missing; rendering again", document, document.pdf)
            type(document).objects.filter(pk=document.pk).update(pdf="")
            document.pdf.name = ""
    document_pdf_store(document)
    with storage.open(document.pdf.name, "rb") as f:
        return f.read()
