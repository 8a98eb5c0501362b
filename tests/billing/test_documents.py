"""Invoices and credit notes: immutable once issued (PostgreSQL refuses the change), their PDFs
rendered by WeasyPrint after commit and read back with pypdf, a download before the task ran
rendered on the spot, and sample pages rendered to PNG (`pdftoppm`) in test-output/ to look at."""

from __future__ import annotations

import io
import subprocess
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.utils import InternalError
from pypdf import PdfReader

from billing.models import CreditNote, Invoice, InvoiceLine
from billing.pdf import document_pdf, html_to_pdf, pdf_render
from billing.services.documents import (
    Line,
    billing_profile_update,
    credit_note_issue,
    invoice_issue,
    invoice_status_set,
)
from portal.errors import ValidationFailed
from tests.conftest import SYSTEM

pytestmark = pytest.mark.django_db

OUTPUT = Path(__file__).resolve().parents[2] / "test-output" / "documents"
PDFTOPPM = "/usr/bin/pdftoppm"  # Debian's poppler-utils (.ci/run installs it)
REFUSED = (IntegrityError, InternalError)


def pdf_text(content: bytes) -> list[str]:
    """The text of each page."""
    assert content.startswith(b"%PDF-"), content[:20]
    return [page.extract_text() for page in PdfReader(io.BytesIO(content)).pages]


def _buyer(tenant) -> None:
    org = tenant.org
    org.billing_email = "accounts@acme.test"
    org.billing_address = "Acme AI GmbH\nHauptstrasse 1\n10115 Berlin\nGermany"
    org.tax_id = "DE123456789"
    org.save()


def _invoice(tenant, lines=None, **kwargs) -> Invoice:
    lines = lines or [
        Line(description="AI credits (Card)", quantity=Decimal("100"), unit_price=Decimal("1.00")),
        Line(description="Onboarding", quantity=Decimal("2"), unit_price=Decimal("12.50")),
    ]
    return invoice_issue(organization=tenant.org, lines=lines, actor=SYSTEM, **kwargs)


# Immutability, enforced by PostgreSQL -----------------------------------------------------------


def test_postgresql_refuses_to_change_an_issued_invoice_or_its_lines(tenant):
    invoice = _invoice(tenant)
    line = invoice.lines.first()
    refusals = {
        "total": lambda: Invoice.objects.filter(pk=invoice.pk).update(total=Decimal("1.00")),
        "number": lambda: Invoice.objects.filter(pk=invoice.pk).update(number="ACME-X"),
        "buyer": lambda: Invoice.objects.filter(pk=invoice.pk).update(buyer={"name": "Other"}),
        "issued_at": lambda: Invoice.objects.filter(pk=invoice.pk).update(issued_at=None),
        "line amount": lambda: InvoiceLine.objects.filter(pk=line.pk).update(amount=1),
        "line delete": lambda: InvoiceLine.objects.filter(pk=line.pk).delete(),
        "invoice delete": lambda: connection.cursor().execute(
            "DELETE FROM billing_invoice WHERE id = %s", [invoice.pk]
        ),
        "raw total": lambda: connection.cursor().execute(
            "UPDATE billing_invoice SET total = 0 WHERE id = %s", [invoice.pk]
        ),
    }
    for name, change in refusals.items():
        with pytest.raises(REFUSED, match="immutable|refused"), transaction.atomic():
            change()
            pytest.fail(f"{name}: changed")
    # A line added to the issued invoice later: refused when its transaction commits (the
    # lines no longer add up to the subtotal, checked by a deferred constraint trigger).
    with pytest.raises(REFUSED, match="lines sum to"), transaction.atomic():
        InvoiceLine.objects.create(invoice=invoice, position=9, description="Extra",
                                   quantity=1, unit_price=5, amount=5)  # fmt: skip
        connection.cursor().execute("SET CONSTRAINTS ALL IMMEDIATE")
    invoice.refresh_from_db()
    assert invoice.total == Decimal("125.00") and invoice.lines.count() == 2


def test_only_the_status_moves_issued_to_paid_or_void_and_the_pdf_is_set(tenant):
    invoice = _invoice(tenant)
    paid = invoice_status_set(invoice=invoice, status=Invoice.Status.PAID, actor=SYSTEM)
    assert paid.status == "paid" and paid.paid_at is not None
    with pytest.raises(ValidationFailed):
        invoice_status_set(invoice=invoice, status=Invoice.Status.VOID, actor=SYSTEM)
    with pytest.raises(REFUSED, match="status paid -> issued"), transaction.atomic():
        Invoice.objects.filter(pk=invoice.pk).update(status="issued")
    other = _invoice(tenant)
    assert invoice_status_set(invoice=other, status="void", actor=SYSTEM).status == "void"
    Invoice.objects.filter(pk=other.pk).update(pdf="billing/invoices/x.pdf")  # allowed


def test_a_status_change_renders_the_pdf_again(tenant, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        invoice = _invoice(tenant)
    invoice.refresh_from_db()
    assert "ISSUED" in "".join(pdf_text(document_pdf(invoice)))
    with django_capture_on_commit_callbacks(execute=True):
        invoice_status_set(invoice=invoice, status="void", actor=SYSTEM)
    invoice.refresh_from_db()
    assert invoice.pdf  # stored again, after commit
    with invoice.pdf.storage.open(invoice.pdf.name, "rb") as f:
        text = "".join(pdf_text(f.read()))
    assert "This invoice is void." in text and "ISSUED" not in text and invoice.number in text


def test_postgresql_refuses_to_change_a_credit_note(tenant):
    invoice = _invoice(tenant)
    note = credit_note_issue(invoice=invoice, total=Decimal("25.00"), reason="Refund",
                             actor=SYSTEM)  # fmt: skip
    for change in (
        lambda: CreditNote.objects.filter(pk=note.pk).update(total=Decimal("1.00")),
        lambda: CreditNote.objects.filter(pk=note.pk).update(reason="Other"),
        lambda: CreditNote.objects.filter(pk=note.pk).delete(),
    ):
        with pytest.raises(REFUSED, match="immutable"), transaction.atomic():
            change()
    CreditNote.objects.filter(pk=note.pk).update(pdf="billing/credit-notes/x.pdf")  # allowed


# The billing profile ---------------------------------------------------------------------------


def test_profile_changes_apply_to_documents_issued_afterwards(tenant):
    first = _invoice(tenant)
    billing_profile_update(organization=tenant.org, number_prefix="ACMEAI", tax_rate="19",
                           actor=SYSTEM)  # fmt: skip
    second = _invoice(tenant)
    year = second.issued_at.year
    assert first.number == f"ACME-{year}-0001" and first.tax == 0
    assert second.number == f"ACMEAI-{year}-0002"  # the year's sequence continues
    assert (second.tax_rate, second.tax, second.total) == (
        Decimal("19.00"), Decimal("23.75"), Decimal("148.75"),
    )  # fmt: skip


@pytest.mark.parametrize(
    "fields",
    [
        {"number_prefix": "acme"},
        {"number_prefix": ""},
        {"number_prefix": "A-B"},
        {"number_prefix": "ABCDEFGHIJKLM"},
        {"tax_rate": "-1"},
        {"tax_rate": "100.01"},
        {"tax_rate": "7.125"},
        {"tax_rate": "NaN"},
        {"tax_rate": "ten"},
        {"number_prefix": "OK", "tax_rate": "101"},
    ],
)
def test_bad_profile_changes_are_refused_and_change_nothing(tenant, fields):
    billing_profile_update(organization=tenant.org, number_prefix="ACME", tax_rate="5",
                           actor=SYSTEM)  # fmt: skip
    with pytest.raises(ValidationFailed):
        billing_profile_update(organization=tenant.org, actor=SYSTEM, **fields)
    profile = tenant.org.billing_profile
    profile.refresh_from_db()
    assert (profile.number_prefix, profile.tax_rate) == ("ACME", Decimal("5.00"))


# PDFs ------------------------------------------------------------------------------------------


def test_the_invoice_pdf_holds_number_parties_lines_totals_and_page_numbers(tenant, settings):
    settings.BILLING_SELLER = {"name": "Credit Portal Ltd", "address": "1 Main St\nDublin",
                               "tax_id": "IE9999999X", "email": "billing@portal.test"}  # fmt: skip
    _buyer(tenant)
    billing_profile_update(organization=tenant.org, tax_rate="20", actor=SYSTEM)
    invoice = _invoice(tenant)
    pages = pdf_text(pdf_render(invoice))
    text = "\n".join(pages)
    assert len(pages) == 1
    for expected in (
        invoice.number, "Credit Portal Ltd", "IE9999999X", "Acme", "Hauptstrasse 1",
        "DE123456789", "accounts@acme.test", "AI credits (Card)", "Onboarding", "12.50",
        "25.00", "Subtotal", "125.00", "Tax (20 %)", "25.00", "Total", "150.00 USD",
        "Page 1 of 1",
    ):  # fmt: skip
        assert expected in text, f"{expected!r} not in the PDF:\n{text}"


def test_a_long_invoice_runs_over_pages_numbered_n_of_m(tenant):
    lines = [
        Line(description=f"Usage line {i:03d}", quantity=Decimal(i), unit_price=Decimal("0.10"))
        for i in range(1, 71)
    ]
    invoice = _invoice(tenant, lines=lines)
    pages = pdf_text(pdf_render(invoice))
    count = len(pages)
    assert count >= 2
    for number, text in enumerate(pages, start=1):
        assert f"Page {number} of {count}" in text
    assert "Usage line 001" in pages[0] and "Usage line 070" in pages[-1]
    assert f"Total {invoice.total} USD".replace(" ", "") in pages[-1].replace(" ", "")
    assert invoice.total == Decimal("248.50")


def test_the_pdf_is_rendered_after_commit_and_stored(tenant, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        invoice = _invoice(tenant)
    assert len(callbacks) == 1
    invoice.refresh_from_db()
    assert invoice.number in invoice.pdf.name and invoice.pdf.name.endswith(".pdf")
    with invoice.pdf.storage.open(invoice.pdf.name, "rb") as f:
        assert invoice.number in "".join(pdf_text(f.read()))


def test_a_download_before_the_task_ran_renders_the_pdf_on_the_spot(tenant):
    invoice = _invoice(tenant)  # no commit in this test: the task never ran
    assert not invoice.pdf
    content = document_pdf(invoice)
    assert invoice.number in "".join(pdf_text(content))
    invoice.refresh_from_db()
    assert invoice.pdf  # stored: the next download reads it
    assert document_pdf(invoice) == content
    # A stored file that went missing is rendered again, never answered empty.
    invoice.pdf.storage.delete(invoice.pdf.name)
    assert invoice.number in "".join(pdf_text(document_pdf(invoice)))


def test_the_credit_note_pdf(tenant):
    _buyer(tenant)
    billing_profile_update(organization=tenant.org, tax_rate="20", actor=SYSTEM)
    invoice = _invoice(tenant)
    note = credit_note_issue(invoice=invoice, total=Decimal("30.00"),
                             reason="Refund of unused credits", provider_reference="re_123",
                             actor=SYSTEM)  # fmt: skip
    text = "\n".join(pdf_text(document_pdf(note)))
    for expected in (note.number, invoice.number, "Refund of unused credits", "25.00", "5.00",
                     "30.00 USD", "re_123", "Hauptstrasse 1", "Page 1 of 1"):  # fmt: skip
        assert expected in text, f"{expected!r} not in the PDF:\n{text}"


def test_rendering_fetches_nothing():
    """An image or stylesheet on a server (here a loopback one) is never requested."""
    requests = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            requests.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        content = html_to_pdf(
            f'<link rel="stylesheet" href="{base}/style.css"><p>Hello</p>'
            f'<img src="{base}/logo.png" alt="">'
        )
    finally:
        server.shutdown()
    assert "Hello" in "".join(pdf_text(content))
    assert requests == []


# Sample pages to look at -----------------------------------------------------------------------


def render_png(name: str, content: bytes) -> list[Path]:
    """Write `content` to test-output/documents/<name>.pdf and its pages as PNG at 60 dpi."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for old in OUTPUT.glob(f"{name}-*.png"):
        old.unlink()
    pdf = OUTPUT / f"{name}.pdf"
    pdf.write_bytes(content)
    subprocess.run([PDFTOPPM, "-r", "60", "-png", str(pdf), str(OUTPUT / name)], check=True)
    return sorted(OUTPUT.glob(f"{name}-*.png"))


def test_sample_documents_render_to_png(tenant, settings):
    """A sample invoice (two pages) and credit note as PDF and PNG in test-output/documents/,
    to look at (the statement's: test_statements)."""
    settings.BILLING_SELLER = {"name": "Credit Portal Ltd", "tax_id": "IE9999999X",
                               "address": "1 Main Street\nDublin 2\nIreland",
                               "email": "billing@portal.test"}  # fmt: skip
    _buyer(tenant)
    billing_profile_update(organization=tenant.org, tax_rate="19", actor=SYSTEM)
    lines = [Line(description="AI credits · Card (Stripe)", quantity=Decimal("500"),
                  unit_price=Decimal("1.00"))]  # fmt: skip
    lines += [
        Line(description=f"Support hours, week {i}", quantity=Decimal("1.5"),
             unit_price=Decimal("80.00"))
        for i in range(1, 40)
    ]  # fmt: skip
    invoice = _invoice(tenant, lines=lines)
    note = credit_note_issue(invoice=invoice, total=Decimal("119.00"),
                             reason="Refund of unused credits", actor=SYSTEM)  # fmt: skip
    assert len(render_png("invoice", document_pdf(invoice))) == 2
    assert len(render_png("credit-note", document_pdf(note))) == 1


def test_long_names_and_addresses_without_spaces_wrap_and_leave_the_rest_whole(tenant, settings):
    """A buyer's e-mail, address or name with no space to break at wraps inside its column: the
    seller's column beside it and the dates above keep their width."""
    org = tenant.org
    org.name = "Acme" + "X" * 90
    org.billing_email = "accounts-payable-of-the-acme-corporation-worldwide@" + "d" * 60 + ".test"
    org.billing_address = "https://acme.test/" + "a" * 120
    org.save()
    text = pdf_text(pdf_render(_invoice(tenant)))[0]
    seller = settings.BILLING_SELLER["name"]
    assert seller in text.splitlines(), text  # one line of its own, not cut into words
    issued = next(line for line in text.splitlines() if line.startswith("Issue date"))
    assert len(issued.split()) == 5, issued  # "Issue date 2 December 2026" on one line
