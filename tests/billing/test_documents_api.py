"""The documents over the API and the pages: lists and details in the organization only, PDFs
as `application/pdf`, statements generated on demand, the billing settings; bad input is a 400
that writes nothing; 20 concurrent issues get 20 gapless numbers."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from pypdf import PdfReader

from accounts.models import AuditEvent
from billing.models import BillingProfile, CreditNote, DocumentSequence, Invoice, Statement
from billing.services.documents import Line, credit_note_issue, invoice_issue
from billing.services.orders import order_create, order_settle
from tests.conftest import SYSTEM

D = Decimal


def _issue(tenant, amount="10") -> Invoice:
    return invoice_issue(
        organization=tenant.org,
        lines=[Line(description="AI credits", quantity=D(amount), unit_price=D("1.00"))],
        actor=SYSTEM,
    )


def pdf_text(content: bytes) -> str:
    return "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(content)).pages)


@pytest.fixture
def api(tenant):
    _, secret = tenant.key("management")
    return tenant.client(secret)


@pytest.mark.django_db
def test_invoices_list_detail_and_pdf(tenant, api):
    order, _ = order_create(organization=tenant.org, amount="25.00", provider="manual",
                            actor=SYSTEM)  # fmt: skip
    order_settle(order=order, amount_paid=D("25.00"), currency="USD", actor=SYSTEM)
    invoice = Invoice.objects.get(order=order)
    note = credit_note_issue(invoice=invoice, total=D("5.00"), reason="Refund", actor=SYSTEM)

    rows = api.get("/api/v1/billing/invoices").json()["results"]
    assert rows == [{
        "number": invoice.number, "status": "paid", "issued_at": rows[0]["issued_at"],
        "paid_at": rows[0]["paid_at"], "subtotal": "25.00", "tax_rate": "0.00", "tax": "0.00",
        "total": "25.00", "currency": "USD", "order": str(order.public_id),
    }]  # fmt: skip
    detail = api.get(f"/api/v1/billing/invoices/{invoice.number}").json()
    assert detail["lines"] == [
        {"position": 1, "description": "AI credits · Bank transfer (manual)",
         "quantity": "25.0000", "unit_price": "1.00", "amount": "25.00"}
    ]  # fmt: skip
    assert detail["buyer"]["name"] == tenant.org.name and detail["credit_notes"] == [note.number]

    response = api.get(f"/api/v1/billing/invoices/{invoice.number}/pdf")
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == f'attachment; filename="{invoice.number}.pdf"'
    assert invoice.number in pdf_text(response.content)
    # A client that asks for PDF only gets it too.
    asked = api.get(f"/api/v1/billing/invoices/{invoice.number}/pdf", HTTP_ACCEPT="application/pdf")
    assert asked.status_code == 200 and asked.content.startswith(b"%PDF-")

    notes = api.get("/api/v1/billing/credit-notes").json()["results"]
    assert [(n["number"], n["invoice"], n["total"]) for n in notes] == [
        (note.number, invoice.number, "5.00")
    ]
    assert api.get(f"/api/v1/billing/credit-notes/{note.number}").json()["reason"] == "Refund"
    response = api.get(f"/api/v1/billing/credit-notes/{note.number}/pdf")
    assert response["Content-Type"] == "application/pdf" and note.number in pdf_text(
        response.content
    )


@pytest.mark.django_db
def test_another_organizations_documents_are_404(tenant, other_tenant, api):
    theirs = _issue(other_tenant)
    their_note = credit_note_issue(invoice=theirs, total=D(1), reason="x", actor=SYSTEM)
    _issue(tenant)
    for path in (
        f"/api/v1/billing/invoices/{theirs.number}",
        f"/api/v1/billing/invoices/{theirs.number}/pdf",
        f"/api/v1/billing/credit-notes/{their_note.number}",
        f"/api/v1/billing/credit-notes/{their_note.number}/pdf",
        "/api/v1/billing/invoices/NOPE-2026-0001",
        "/api/v1/billing/statements/not-a-uuid",
        "/api/v1/billing/statements/00000000-0000-4000-8000-000000000000/pdf",
    ):
        response = api.get(path, HTTP_ACCEPT="application/pdf" if path.endswith("pdf") else "*/*")
        assert response.status_code == 404, path
        assert response.json()["error"]["metadata"]["type"] == "not_found"
    assert [r["number"] for r in api.get("/api/v1/billing/invoices").json()["results"]] == [
        f"ACME-{theirs.issued_at.year}-0001"
    ]


@pytest.mark.django_db
def test_statements_generated_on_demand(tenant, api):
    tenant.org.created_at = tenant.org.created_at.replace(year=2024)
    tenant.org.save()
    response = api.post("/api/v1/billing/statements", {"year": 2025, "month": 3}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["year"], body["month"], D(body["opening_balance"])) == (2025, 3, 0)
    again = api.post("/api/v1/billing/statements", {"year": 2025, "month": 3}, format="json")
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    assert [s["id"] for s in api.get("/api/v1/billing/statements").json()["results"]] == [
        body["id"]
    ]
    assert api.get(f"/api/v1/billing/statements/{body['id']}").json()["breakdown"]["by_team"] == []
    pdf = api.get(f"/api/v1/billing/statements/{body['id']}/pdf")
    assert pdf["Content-Type"] == "application/pdf" and "March 2025" in pdf_text(pdf.content)


BAD_STATEMENTS = [
    {},
    {"year": 2025},
    {"year": 2025, "month": 13},
    {"year": 2025, "month": "March"},
    {"year": 2999, "month": 1},
    {"year": 2023, "month": 12},  # before the organization existed
    {"year": 2025, "month": 1, "extra": 1},
    [],
]
BAD_PROFILES = [
    {"tax_rate": "-1"},
    {"tax_rate": "101"},
    {"tax_rate": "1.234"},
    {"tax_rate": "abc"},
    {"number_prefix": "lower"},
    {"number_prefix": "TOO-LONG-PREFIX"},
    {"number_prefix": ""},
    {"unknown": 1},
    {"tax_rate": 5, "number_prefix": "x y"},
    {},
]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path, method, body",
    [("/api/v1/billing/statements", "post", b) for b in BAD_STATEMENTS]
    + [("/api/v1/billing/profile", "patch", b) for b in BAD_PROFILES]
    + [("/api/v1/billing/statements", "post", "not json")],
)
def test_bad_input_is_400_and_writes_nothing(tenant, api, path, method, body):
    tenant.org.created_at = tenant.org.created_at.replace(year=2024)
    tenant.org.save()
    before = (AuditEvent.objects.count(), Statement.objects.count(),
              list(BillingProfile.objects.values()))  # fmt: skip
    if isinstance(body, str):
        response = getattr(api, method)(path, body, content_type="application/json")
    else:
        response = getattr(api, method)(path, body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["metadata"]["type"] in ("validation_error", "parse_error")
    after = (AuditEvent.objects.count(), Statement.objects.count(),
             list(BillingProfile.objects.values()))  # fmt: skip
    assert after == before


@pytest.mark.django_db
def test_profile_read_and_change(tenant, api):
    tenant.org.billing_email = "ap@acme.test"
    tenant.org.save()
    assert api.get("/api/v1/billing/profile").json() == {
        "number_prefix": "ACME", "tax_rate": "0.00",
        "buyer": {"name": "Acme", "address": "", "tax_id": "", "email": "ap@acme.test"},
    }  # fmt: skip
    assert not BillingProfile.objects.exists()  # reading writes nothing
    response = api.patch("/api/v1/billing/profile", {"tax_rate": "19.5", "number_prefix": "AC1"},
                         format="json")  # fmt: skip
    assert response.status_code == 200
    assert (response.json()["tax_rate"], response.json()["number_prefix"]) == ("19.50", "AC1")
    invoice = _issue(tenant, amount="10")
    assert invoice.number.startswith("AC1-") and invoice.tax == D("1.95")


@pytest.mark.django_db
def test_pages_list_download_generate_and_settings(tenant):
    tenant.org.created_at = tenant.org.created_at.replace(year=2024)
    tenant.org.save()
    invoice = _issue(tenant)
    note = credit_note_issue(invoice=invoice, total=D(2), reason="Goodwill", actor=SYSTEM)
    billing = tenant.member("billing", email="billing@acme.test")
    client = Client()
    client.force_login(billing)
    base = f"/o/{tenant.org.slug}/billing"
    page = client.get(f"{base}/invoices/").content.decode()
    assert invoice.number in page and note.number in page and "Goodwill" in page
    assert 'href="/o/acme/billing/invoices/"' in page  # the navigation
    pdf = client.get(f"{base}/invoices/{invoice.number}/pdf/")
    assert pdf["Content-Type"] == "application/pdf" and invoice.number in pdf_text(pdf.content)
    pdf = client.get(f"{base}/credit-notes/{note.number}/pdf/")
    assert note.number in pdf_text(pdf.content)

    response = client.post(f"{base}/statements/", {"month": "2025-02"})
    assert response.status_code == 302
    statement = Statement.objects.get(organization=tenant.org)
    assert (statement.year, statement.month) == (2025, 2)
    page = client.get(f"{base}/statements/").content.decode()
    assert "February 2025" in page and "generated" in page
    assert "February 2025" in pdf_text(
        client.get(f"{base}/statements/{statement.public_id}/pdf/").content
    )
    bad = client.post(f"{base}/statements/", {"month": "2999-01"})
    assert bad.status_code == 400 and "has not ended" in bad.content.decode()
    assert Statement.objects.count() == 1

    assert (
        client.post(f"{base}/settings/", {"number_prefix": "ACX", "tax_rate": "7"}).status_code
        == 302
    )
    assert BillingProfile.objects.get(organization=tenant.org).tax_rate == D("7.00")
    bad = client.post(f"{base}/settings/", {"number_prefix": "acx", "tax_rate": "7"})
    assert bad.status_code == 400 and "upper-case" in bad.content.decode()


# 20 concurrent issues, real PostgreSQL -------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("many_connections")
def test_20_concurrent_invoice_issues_get_20_distinct_gapless_numbers(tenant):
    count = 20
    barrier = threading.Barrier(count)

    def issue(i: int) -> str:
        try:
            barrier.wait(timeout=30)
            invoice = invoice_issue(
                organization=tenant.org,
                lines=[Line(description=f"Credits {i}", quantity=D(i + 1), unit_price=D(1))],
                actor=SYSTEM,
            )
            return invoice.number
        except Exception as exc:  # reported, never swallowed
            return f"{type(exc).__name__}: {exc}"
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        numbers = list(pool.map(issue, range(count)))
    year = Invoice.objects.first().issued_at.year
    assert sorted(numbers) == [f"ACME-{year}-{n:04d}" for n in range(1, count + 1)], numbers
    assert DocumentSequence.objects.get(organization=tenant.org, kind="invoice").last_number == 20
    assert Invoice.objects.filter(organization=tenant.org).count() == 20
    # Every PDF was rendered after its commit (tasks run eagerly here) and names its invoice.
    for invoice in Invoice.objects.filter(organization=tenant.org):
        assert invoice.pdf, invoice.number
        with invoice.pdf.storage.open(invoice.pdf.name, "rb") as f:
            assert invoice.number in pdf_text(f.read())
    assert CreditNote.objects.count() == 0
