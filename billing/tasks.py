"""Celery tasks of billing (thin: each calls a service)."""

from celery import shared_task

# Documents: invoices, credit notes, statements ---------------------------------------------------


@shared_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def document_pdf_render(kind: str, pk: int) -> bool:
    """Render and store the PDF of an issued document (`kind`: invoice, credit_note, statement),
    queued after its issue commits. True when this run stored it (a download may have been
    first). Storage errors (OSError) retry with back-off."""
    from .models import CreditNote, Invoice, Statement
    from .pdf import document_pdf_store

    model = {"invoice": Invoice, "credit_note": CreditNote, "statement": Statement}[kind]
    document = model.objects.select_related("organization").filter(pk=pk).first()
    return document is not None and document_pdf_store(document)


@shared_task
def statements_generate_due() -> int:
    """Hourly: the statement of the month that has just ended in each organization's time zone
    (`billing.services.statements.statements_generate_due`)."""
    from .services.statements import statements_generate_due as generate

    return generate()


# (end of the documents block)
