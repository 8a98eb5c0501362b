"""`/api/v1/billing/topup` (the rule, the card, the attempts) and the top-up page: who may read
and change, bad input answering 400 with nothing written, the setup Checkout round trip through
the page, and approval on the page."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client

from accounts.models import AuditEvent
from accounts.roles import Role
from billing.models import Order, TopUp, TopUpRule
from billing.services import topup as services
from billing.services.documents import billing_profile_of

from .stripe_topup_server import StripeServer
from .test_topup import rule, save_card

pytestmark = pytest.mark.django_db

RULE = {"enabled": True, "threshold": "50.00", "amount": "20.00", "monthly_cap": "100.00"}


@pytest.fixture
def stripe_server(settings):
    with StripeServer() as server:
        settings.STRIPE_SECRET_KEY = "sk_test_loopback"
        settings.STRIPE_API_BASE = server.base
        settings.PAYMENT_PROVIDER_RETRIES = 0
        settings.PORTAL_BASE_URL = "https://portal.test"
        yield server


def page(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_rule_over_the_api(tenant, stripe_server):
    _, secret = tenant.key("management")
    api = tenant.client(secret)
    empty = api.get("/api/v1/billing/topup").json()
    assert empty["enabled"] is False and empty["threshold"] is None and not empty["card_saved"]

    started = api.post("/api/v1/billing/topup/payment-method", {}, format="json")
    assert started.status_code == 201, started.content
    body = started.json()
    assert body["checkout_url"].endswith(body["session_id"])
    session = stripe_server.state.sessions[body["session_id"]]
    assert session["success_url"] == (
        "https://portal.test/o/acme/billing/topup/?session_id={CHECKOUT_SESSION_ID}"
    )
    stripe_server.state.complete(body["session_id"])
    saved = api.post(
        "/api/v1/billing/topup/payment-method", {"session_id": body["session_id"]}, format="json"
    )
    assert saved.status_code == 200 and saved.json() == {"payment_method": "pm_card_visa"}

    response = api.put("/api/v1/billing/topup", RULE, format="json")
    assert response.status_code == 200, response.content
    data = response.json()
    assert (data["enabled"], data["threshold"], data["amount"], data["target_balance"]) == (
        True, "50.00", "20.00", None,
    )  # fmt: skip
    assert data["card_saved"] and data["month_charged"] == "0.00"
    assert AuditEvent.objects.filter(action="topup.rule_set").count() == 1
    switched = api.put(
        "/api/v1/billing/topup",
        {**RULE, "amount": None, "target_balance": "500", "requires_approval": True},
        format="json",
    ).json()
    assert switched["amount"] is None and switched["target_balance"] == "500.00"
    assert switched["requires_approval"] is True
    assert TopUpRule.objects.count() == 1


@pytest.mark.parametrize(
    "body",
    [
        {**RULE, "threshold": "0"},
        {**RULE, "threshold": "ten"},
        {**RULE, "threshold": 50.5},
        {**RULE, "amount": "1"},
        {**RULE, "amount": "20.001"},
        {**RULE, "target_balance": "100"},
        {**RULE, "amount": None},
        {**RULE, "monthly_cap": "-1"},
        {**RULE, "extra": 1},
        {k: v for k, v in RULE.items() if k != "monthly_cap"},
        {**RULE, "enabled": "maybe"},
        [],
    ],
)
def test_bad_input_is_400_and_writes_nothing(tenant, stripe_server, body):
    save_card(tenant, stripe_server)
    _, secret = tenant.key("management")
    audit = AuditEvent.objects.count()
    response = tenant.client(secret).put("/api/v1/billing/topup", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["metadata"]["type"] == "validation_error"
    assert not TopUpRule.objects.exists() and AuditEvent.objects.count() == audit


def test_enabling_without_a_card_is_400(tenant):
    _, secret = tenant.key("management")
    response = tenant.client(secret).put("/api/v1/billing/topup", RULE, format="json")
    assert response.status_code == 400
    assert "enabled" in response.json()["error"]["metadata"]["errors"]
    assert not TopUpRule.objects.exists()


def test_a_bad_session_is_400(tenant, stripe_server):
    _, secret = tenant.key("management")
    api = tenant.client(secret)
    for session_id in ("nope", "cs_test_9999"):
        response = api.post(
            "/api/v1/billing/topup/payment-method", {"session_id": session_id}, format="json"
        )
        assert response.status_code == 400, response.content
    assert not billing_profile_of(tenant.org).stripe_payment_method_id


def test_stripe_down_is_503_and_leaves_nothing(tenant, settings):
    settings.STRIPE_SECRET_KEY = "sk_test_x"
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # nothing listens
    settings.PAYMENT_PROVIDER_RETRIES = 0
    _, secret = tenant.key("management")
    response = tenant.client(secret).post("/api/v1/billing/topup/payment-method", {}, format="json")
    assert response.status_code == 503
    assert response.json()["error"]["metadata"]["type"] == "provider_unavailable"
    assert not billing_profile_of(tenant.org).stripe_customer_id


def test_the_attempts_list(tenant, other_tenant, stripe_server):
    save_card(tenant, stripe_server)
    rule(tenant)
    services.topup_sweep()
    _, secret = tenant.key("management")
    rows = tenant.client(secret).get("/api/v1/billing/topup/attempts").json()["results"]
    order = Order.objects.get(organization=tenant.org)
    assert [(r["id"], r["state"], r["amount"], r["order_status"]) for r in rows] == [
        (str(order.public_id), "succeeded", "20.00", "paid")
    ]
    _, other = other_tenant.key("management")
    assert other_tenant.client(other).get("/api/v1/billing/topup/attempts").json()["results"] == []


def test_who_reads_and_who_changes(tenant):
    admin = tenant.member(Role.ADMIN)
    billing = tenant.member(Role.BILLING)
    viewer = tenant.member(Role.VIEWER)
    assert page(admin).get("/o/acme/billing/topup/").status_code == 200
    assert page(viewer).get("/o/acme/billing/topup/").status_code == 404
    assert b"Save the rule" not in page(admin).get("/o/acme/billing/topup/").content
    assert b"Save the rule" in page(billing).get("/o/acme/billing/topup/").content
    form = {"threshold": "50", "mode": "amount", "amount": "20", "monthly_cap": "100"}
    response = page(admin).post("/o/acme/billing/topup/", form)
    assert response.status_code == 302 and not TopUpRule.objects.exists()
    response = page(billing).post("/o/acme/billing/topup/", form)
    assert response.status_code == 302 and TopUpRule.objects.get().amount == Decimal("20")


def test_the_page_form_shows_errors_and_writes_nothing(tenant):
    form = {"threshold": "50", "mode": "target", "amount": "20", "monthly_cap": "100"}
    response = page(tenant.owner).post("/o/acme/billing/topup/", form)
    assert response.status_code == 400 and b"Required for this choice" in response.content
    form = {"threshold": "50", "mode": "target", "target_balance": "40", "monthly_cap": "100"}
    response = page(tenant.owner).post("/o/acme/billing/topup/", form)
    assert response.status_code == 400 and b"Must be above the threshold" in response.content
    assert not TopUpRule.objects.exists()


def test_saving_a_card_through_the_page(tenant, stripe_server):
    client = page(tenant.owner)
    response = client.post("/o/acme/billing/topup/card/")
    assert response.status_code == 302
    session_id = response["Location"].rsplit("/", 1)[1]
    assert response["Location"] == f"https://checkout.stripe.test/c/setup/{session_id}"
    stripe_server.state.complete(session_id)
    back = client.get(f"/o/acme/billing/topup/?session_id={session_id}")
    assert back.status_code == 302 and back["Location"] == "/o/acme/billing/topup/"
    assert billing_profile_of(tenant.org).stripe_payment_method_id == "pm_card_visa"
    assert b"Card saved" in client.get("/o/acme/billing/topup/").content


def test_approving_and_rejecting_on_the_page(
    tenant, stripe_server, django_capture_on_commit_callbacks
):
    save_card(tenant, stripe_server)
    tenant.grant("45")  # one top-up of 20 lifts the pool above the threshold of 50
    rule(tenant, requires_approval=True)
    services.topup_sweep()
    waiting = TopUp.objects.get()
    admin = tenant.member(Role.ADMIN)
    billing = tenant.member(Role.BILLING)
    url = f"/o/acme/billing/topup/{waiting.order.public_id}"
    shown = page(billing).get("/o/acme/billing/topup/").content.decode()
    assert "Awaiting approval" in shown and f"{url}/approve/" in shown
    assert f"{url}/approve/" not in page(admin).get("/o/acme/billing/topup/").content.decode()
    page(admin).post(f"{url}/approve/")  # billing:read only: refused with a message
    assert TopUp.objects.get().state == TopUp.State.AWAITING_APPROVAL
    assert page(admin).get(f"{url}/reject/").status_code == 404
    assert page(billing).get(f"{url}/reject/").status_code == 200  # the confirmation
    with django_capture_on_commit_callbacks(execute=True):
        response = page(billing).post(f"{url}/approve/")
    assert response.status_code == 302
    assert TopUp.objects.get().state == TopUp.State.SUCCEEDED
    assert len(stripe_server.charges) == 1
    # Approving again is refused with a message; rejecting a charged top-up too.
    page(billing).post(f"{url}/approve/")
    page(billing).post(f"{url}/reject/")
    assert TopUp.objects.get().state == TopUp.State.SUCCEEDED and len(stripe_server.charges) == 1


def test_rejecting_on_the_page(tenant, stripe_server):
    save_card(tenant, stripe_server)
    rule(tenant, requires_approval=True)
    services.topup_sweep()
    waiting = TopUp.objects.get()
    response = page(tenant.owner).post(f"/o/acme/billing/topup/{waiting.order.public_id}/reject/")
    assert response.status_code == 302
    assert TopUp.objects.get().state == TopUp.State.REJECTED and stripe_server.charges == []


def test_the_navigation_links_the_page_for_billing_readers(tenant):
    billing = tenant.member(Role.BILLING)
    member = tenant.member(Role.MEMBER)
    # the Billing section for billing readers; its second row links the page
    assert b'href="/o/acme/billing/orders/"' in page(billing).get("/o/acme/").content
    assert b'href="/o/acme/billing/topup/"' in page(billing).get("/o/acme/billing/orders/").content
    assert b'href="/o/acme/billing/orders/"' not in page(member).get("/o/acme/").content
