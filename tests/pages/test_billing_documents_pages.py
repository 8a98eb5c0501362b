"""The billing document pages in real Chromium against the live server, as a billing member:
invoices and credit notes with their PDFs, generating a statement and downloading it, the
billing settings. Screenshots at 1280 and 390 px go to SCREENSHOTS
(credits-billing-<page>-<width>.png, by the credits pages' `shoot`)."""

from __future__ import annotations

import io
import re
from decimal import Decimal

import pytest
from playwright.sync_api import expect
from pypdf import PdfReader

from billing.models import Statement
from billing.services.documents import (
    Line,
    billing_profile_update,
    credit_note_issue,
    invoice_issue,
)
from billing.services.statements import month_name, previous_month

from ..conftest import SYSTEM
from .test_credits_pages import shoot
from .test_pages import log_in

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def documents(tenant):
    org = tenant.org
    org.created_at = org.created_at.replace(year=org.created_at.year - 1)
    org.billing_address = "Acme AI GmbH\nHauptstrasse 1\n10115 Berlin"
    org.save()
    tenant.grant("300")
    billing_profile_update(organization=org, tax_rate="19", actor=SYSTEM)
    invoices = [
        invoice_issue(
            organization=org,
            lines=[Line(description="AI credits", quantity=Decimal(q), unit_price=Decimal(1))],
            actor=SYSTEM,
        )
        for q in ("100", "250.50", "1000")
    ]
    credit_note_issue(invoice=invoices[0], total=Decimal("19.04"),
                      reason="Refund of unused credits", actor=SYSTEM)  # fmt: skip
    tenant.billing_user = tenant.member("billing", email="billing@acme.test")
    tenant.invoices = invoices
    return tenant


def download(page, link) -> bytes:
    with page.expect_download() as info:
        link.click()
    path = info.value.path()
    with open(path, "rb") as f:
        return f.read()


def test_invoices_statements_and_settings_as_a_billing_member(page, documents):
    log_in(page, documents.billing_user.email)
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Billing").click()
    nav = page.get_by_role("navigation", name="Billing")
    nav.get_by_role("link", name="Invoices").click()
    expect(page.get_by_role("heading", name="Invoices and credit notes", level=1)).to_be_visible()
    expect(page.get_by_test_id("invoices-table").locator("tbody tr")).to_have_count(3)
    expect(page.get_by_test_id("credit-notes-table")).to_contain_text("Refund of unused credits")
    shoot(page, "billing-invoices")
    number = documents.invoices[1].number
    content = download(page, page.get_by_role("link", name=f"PDF of invoice {number}"))
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(content)).pages)
    assert number in text and "298.10 USD" in text  # 250.50 + 19 % tax

    nav.get_by_role("link", name="Statements").click()
    expect(page.get_by_role("heading", name="Statements", level=1)).to_be_visible()
    year, month = previous_month(documents.org)
    page.get_by_role("textbox", name=re.compile("^Month")).fill(f"{year}-{month:02d}")
    page.get_by_role("button", name="Generate").click()
    label = month_name(year, month)
    expect(page.get_by_text(f"Statement of {label} generated.")).to_be_visible()
    expect(page.get_by_test_id("statements-table")).to_contain_text(label)
    shoot(page, "billing-statements")
    statement = Statement.objects.get(organization=documents.org)
    content = download(page, page.get_by_role("link", name=f"PDF of the statement of {label}"))
    assert label in "".join(p.extract_text() for p in PdfReader(io.BytesIO(content)).pages)
    assert statement.pdf  # stored by the after-commit task (eager here) or the download

    page.goto("/o/acme/billing/settings/")
    page.get_by_label("Tax rate (%)").fill("7.5")
    page.get_by_label("Document number prefix").fill("ACMEAI")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Billing settings saved.")).to_be_visible()
    page.get_by_label("Document number prefix").fill("acme ai")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".errorlist")).to_contain_text("upper-case letters and digits")
    shoot(page, "billing-settings")
