"""The exports page in real Chromium: in the billing area of the navigation, a small export
downloads at once, a large one becomes an export job whose progress bar htmx refreshes until a
download link appears; a member has no such page.

Screenshots at 1280 and 390 px wide go to SCREENSHOTS (billing-exports-<width>.png)."""

from __future__ import annotations

import csv
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from accounts.roles import Role
from billing.models import ExportJob
from credits.services import Attribution, UsageInput, usage_record_many

from .conftest import SCREENSHOTS
from .test_pages import log_in

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def acme(tenant):
    tenant.grant("100")
    tenant.allocate("50")  # the member's usage is charged to their team
    member = tenant.member(Role.MEMBER, email="member@acme.test", team=tenant.team)
    key, _ = tenant.key("usage", user=member)
    now = timezone.now()
    events = [
        UsageInput(id=f"p-{i}", model=("openai/gpt-4o", "=SUM(A1)")[i % 2], cost=Decimal("0.25"),
                   prompt_tokens=100, occurred_at=now - timedelta(hours=i))
        for i in range(12)
    ]  # fmt: skip
    usage_record_many(attribution=Attribution.of_key(key), events=events)
    tenant.member_user = member
    return tenant


def shoot(page, name: str) -> None:
    """Full-page screenshots at 1280 and 390 px; the page must not scroll sideways."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(150)
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        page.screenshot(path=str(SCREENSHOTS / f"billing-{name}-{width}.png"), full_page=True)
        assert overflow <= 1, f"{name} scrolls sideways at {width} px by {overflow} px"
    page.set_viewport_size({"width": 1280, "height": 900})


def test_exports_stream_small_and_queue_large_with_a_live_progress_bar(
    page, acme, settings, tmp_path
):
    log_in(page, acme.owner.email)
    page.get_by_test_id("sections").get_by_role("link", name="Billing").click()
    page.get_by_test_id("subsections").get_by_role("link", name="Exports").click()
    expect(page).to_have_url(re.compile(r"/o/acme/billing/exports/$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Exports")

    # Small: the file downloads at once (FOCUS here).
    page.get_by_label("Format").select_option("focus.csv")
    with page.expect_download() as info:
        page.get_by_test_id("export-submit").click()
    path = tmp_path / "focus.csv"
    info.value.save_as(path)
    assert info.value.suggested_filename.endswith(".focus.csv")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and {r["ChargeCategory"] for r in rows} == {"Usage"}
    assert "'=SUM(A1)" in {r["ServiceName"] for r in rows}  # a formula is written as text

    # A bad period is refused in the form, linked to its field, nothing queued.
    page.get_by_label("From").fill("2026-03-05T10:00")
    page.get_by_label("Until").fill("2026-03-01T10:00")
    page.get_by_test_id("export-submit").click()
    expect(page.get_by_test_id("export-errors")).to_contain_text("The end must be after")
    assert not ExportJob.objects.exists()

    # Large: a job, done by the (eager) task, with its download link.
    settings.BILLING_EXPORT_STREAM_MAX_ROWS = 5
    page.goto("/o/acme/billing/exports/")
    page.get_by_label("Format").select_option("json")
    page.get_by_label("Pseudonymize members and keys").check()
    page.get_by_test_id("export-submit").click()
    expect(page.get_by_role("status").first).to_contain_text("runs in the background")
    job = ExportJob.objects.get()
    assert job.status == "done" and job.row_count == 12 and job.pseudonymize
    row = page.locator(f'[data-export="{job.public_id}"]')
    expect(row).to_contain_text("Done · 100 %")
    with page.expect_download() as info:
        row.get_by_test_id("export-download").click()
    content = open(info.value.path()).read()
    assert '"count": 12' in content and "member@acme.test" not in content

    # A job in flight: its bar follows the worker's progress (htmx polling) until it stops.
    running = ExportJob.objects.create(organization=acme.org, requested_by=acme.owner,
                                       kind="ledger", format="csv", status="running",
                                       progress=40)  # fmt: skip
    page.goto("/o/acme/billing/exports/")
    bar = page.locator(f'[data-export="{running.public_id}"]')
    expect(bar).to_contain_text("Running · 40 %")
    shoot(page, "exports")
    ExportJob.objects.filter(pk=running.pk).update(progress=70)
    expect(bar).to_contain_text("Running · 70 %", timeout=6_000)
    ExportJob.objects.filter(pk=running.pk).update(status="failed", error="The export failed.")
    expect(bar).to_contain_text("Failed", timeout=6_000)
    expect(page.get_by_test_id("export-jobs")).not_to_have_attribute("hx-get", re.compile("."))


def test_a_member_has_no_exports_page(page, acme):
    acme.member_user.set_password("member-password")
    acme.member_user.save()
    log_in(page, "member@acme.test", "member-password")
    expect(page.get_by_test_id("sections").get_by_role("link", name="Billing")).to_have_count(0)
    response = page.goto("/o/acme/billing/exports/")
    assert response.status == 404
