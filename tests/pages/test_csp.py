"""The pages work under the Content-Security-Policy (portal.settings, active whatever DEBUG is):
Chromium reports every violation as a `securitypolicyviolation` event, collected here on the
pages that run scripts (htmx, Chart.js, Swagger UI) and on Django admin; none may occur. The
collector is shown to catch an inline script and an inline style."""

from __future__ import annotations

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from credits.services import Attribution, UsageInput, usage_record

from ..factories import UserFactory
from .test_pages import log_in

pytestmark = pytest.mark.django_db(transaction=True)

COLLECT = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.__csp.push(`${location.pathname}: ${e.violatedDirective} ${e.blockedURI}`));
"""


def violations(page, path: str) -> list[str]:
    response = page.goto(path)
    assert response is not None and response.status == 200, (path, response and response.status)
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_load_state("networkidle")
    return page.evaluate("window.__csp")


def test_pages_raise_no_csp_violation(page, tenant, prices):
    tenant.grant("10")
    key, _ = tenant.key("usage", user=tenant.owner)
    usage_record(
        attribution=Attribution.of_key(key),
        event=UsageInput(id="e1", model="gpt-4o", cost="0.5", prompt_tokens=10),
    )
    page.context.add_init_script(COLLECT)
    found = violations(page, "/login/")
    log_in(page, tenant.owner.email)
    for name in ("dashboard", "usage", "ledger", "keys", "key-create", "billing-openrouter"):
        found += violations(page, reverse(name, kwargs={"org": "acme"}))
    dashboard = reverse("dashboard", kwargs={"org": "acme"})
    page.goto(dashboard)
    expect(page.get_by_test_id("balance-widget")).not_to_contain_text("…")  # htmx swapped it
    found += page.evaluate("window.__csp")
    found += violations(page, reverse("api:swagger"))
    expect(page.locator("#swagger-ui .info")).to_be_visible()  # its start-up script ran
    found += page.evaluate("window.__csp")
    assert found == [], "\n".join(found)


def test_django_admin_raises_no_csp_violation(page):
    UserFactory(email="operator@portal.test", is_staff=True, is_superuser=True)
    page.context.add_init_script(COLLECT)
    log_in(page, "operator@portal.test")  # the portal's login opens the admin too
    found = []
    for path in ("/admin/", "/admin/accounts/organization/", "/admin/accounts/user/add/"):
        found += violations(page, path)
    assert found == [], "\n".join(found)


def test_the_collector_catches_inline_script_and_style(page):
    page.context.add_init_script(COLLECT)
    assert violations(page, "/login/") == []
    page.evaluate(
        """() => {
        const script = document.createElement("script");
        script.textContent = "window.__ran = true";
        document.body.appendChild(script);
        document.body.insertAdjacentHTML("beforeend", '<p style="color: red">x</p>');
    }"""
    )
    page.wait_for_function("window.__csp.length >= 2")
    found = page.evaluate("window.__csp")
    assert any("script-src" in v for v in found) and any("style-src" in v for v in found)
    assert page.evaluate("window.__ran") is None  # the inline script did not run
    page.js_errors.clear()  # the refusals were logged to the console on purpose
