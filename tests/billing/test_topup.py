"""Automatic top-up against a loopback server speaking Stripe's contract
(`tests/billing/stripe_topup_server.py`): the card saved through a setup Checkout Session,
off-session charges started by debits that cross the threshold, exactly as many charges as the
rule and its monthly cap allow (20 threads of concurrent debits on PostgreSQL), declines that
back off and tell `topup.failed` once, the approval flow, a provider that does not answer."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.models import Invoice, Order, TopUp, TopUpRule
from billing.services import topup as services
from billing.services.documents import billing_profile_of
from billing.services.topup import RuleInput
from credits.models import LedgerAccount
from credits.services.usage import Attribution, UsageInput, usage_record
from notifications.models import NotificationEvent
from portal.errors import InsufficientCredits, ValidationFailed
from portal.process_cache import evict_all_now
from tests.conftest import SYSTEM

from .stripe_topup_server import StripeServer


@pytest.fixture
def stripe_server(settings):
    with StripeServer() as server:
        settings.STRIPE_SECRET_KEY = "sk_test_loopback"
        settings.STRIPE_API_BASE = server.base
        settings.PAYMENT_PROVIDER_RETRIES = 0
        settings.PAYMENT_PROVIDER_TIMEOUT_SECONDS = 5
        yield server


def save_card(tenant, server) -> str:
    """The member's way: a setup Checkout Session, completed on Stripe, then the return."""
    session_id, url = services.topup_card_checkout(
        organization=tenant.org,
        success_url="https://portal.test/o/acme/billing/topup/?session_id={CHECKOUT_SESSION_ID}",
        cancel_url="https://portal.test/o/acme/billing/topup/",
        actor=SYSTEM,
    )
    assert url.endswith(session_id)
    server.state.complete(session_id)
    return services.topup_card_save(organization=tenant.org, session_id=session_id, actor=SYSTEM)


def rule(tenant, **fields) -> TopUpRule:
    values = {"enabled": True, "threshold": "50", "monthly_cap": "100", "amount": "20"} | fields
    return services.topup_rule_set(organization=tenant.org, data=RuleInput(**values), actor=SYSTEM)


def debit(tenant, event_id: str, cost: str):
    return usage_record(
        attribution=Attribution(organization=tenant.org),
        event=UsageInput(id=event_id, model="any/model", cost=Decimal(cost)),
    )


def pool(tenant) -> LedgerAccount:
    return LedgerAccount.objects.get(organization=tenant.org, kind="pool")


def told(tenant, type: str) -> int:
    return NotificationEvent.objects.filter(organization=tenant.org, type=type).count()


# The card -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_card_is_saved_through_a_setup_checkout_session(tenant, stripe_server):
    tenant.org.billing_email = "billing@acme.test"
    tenant.org.save()
    session_id, url = services.topup_card_checkout(
        organization=tenant.org,
        success_url="https://portal.test/back?session_id={CHECKOUT_SESSION_ID}",
        cancel_url="https://portal.test/back",
        actor=SYSTEM,
    )
    created = [r for r in stripe_server.state.requests if r[1] == "/v1/checkout/sessions"]
    assert created[0][2]["mode"] == "setup"
    assert created[0][2]["success_url"].endswith("session_id={CHECKOUT_SESSION_ID}")
    assert stripe_server.state.customers[0]["email"] == "billing@acme.test"
    profile = billing_profile_of(tenant.org)
    assert profile.stripe_customer_id == "cus_0001" and not profile.stripe_payment_method_id

    with pytest.raises(ValidationFailed):  # not completed on Stripe yet
        services.topup_card_save(organization=tenant.org, session_id=session_id, actor=SYSTEM)
    stripe_server.state.complete(session_id, "pm_card_mastercard")
    assert services.topup_card_save(
        organization=tenant.org, session_id=session_id, actor=SYSTEM
    ) == ("pm_card_mastercard")
    profile.refresh_from_db()
    assert profile.stripe_payment_method_id == "pm_card_mastercard"
    retrieved = [r for r in stripe_server.state.requests if r[0] == "GET"]
    assert retrieved[-1][2].get("expand[0]") == "setup_intent"
    # A second setup reuses the customer.
    services.topup_card_checkout(
        organization=tenant.org, success_url="https://p.test/", cancel_url="https://p.test/",
        actor=SYSTEM,
    )  # fmt: skip
    assert len(stripe_server.state.customers) == 1


@pytest.mark.django_db
def test_another_organizations_session_is_refused(tenant, other_tenant, stripe_server):
    session_id, _ = services.topup_card_checkout(
        organization=other_tenant.org, success_url="https://p.test/", cancel_url="https://p.test/",
        actor=SYSTEM,
    )  # fmt: skip
    stripe_server.state.complete(session_id)
    services.topup_card_checkout(
        organization=tenant.org, success_url="https://p.test/", cancel_url="https://p.test/",
        actor=SYSTEM,
    )  # fmt: skip
    with pytest.raises(ValidationFailed):
        services.topup_card_save(organization=tenant.org, session_id=session_id, actor=SYSTEM)
    assert not billing_profile_of(tenant.org).stripe_payment_method_id


# The rule -------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fields",
    [
        {"threshold": "0"},
        {"threshold": "-5"},
        {"threshold": "abc"},
        {"threshold": "10.001"},
        {"monthly_cap": "0"},
        {"amount": None},  # neither amount nor target
        {"target_balance": "200"},  # both
        {"amount": "4.99"},  # below BILLING_PURCHASE_MIN
        {"amount": "10000.01"},  # above BILLING_PURCHASE_MAX
        {"amount": None, "target_balance": "50"},  # not above the threshold
        {"monthly_cap": "10"},  # below one top-up
    ],
)
def test_bad_rules_are_refused_and_write_nothing(tenant, stripe_server, fields):
    save_card(tenant, stripe_server)
    with pytest.raises(ValidationFailed):
        rule(tenant, **fields)
    assert not TopUpRule.objects.exists()


@pytest.mark.django_db
def test_enabling_needs_a_saved_card(tenant):
    with pytest.raises(ValidationFailed) as caught:
        rule(tenant)
    assert "enabled" in caught.value.metadata["errors"]
    assert rule(tenant, enabled=False).enabled is False


@pytest.mark.django_db
def test_the_database_refuses_two_top_ups_in_flight(tenant, stripe_server):
    save_card(tenant, stripe_server)
    rule(tenant)
    tenant.grant("10")
    started = services.topup_start(organization_id=tenant.org.pk)
    assert started is not None and started.state == TopUp.State.CHARGING
    assert services.topup_start(organization_id=tenant.org.pk) is None  # one in flight
    other = Order.objects.create(
        organization=tenant.org, amount=20, total=20, provider="stripe", purpose="topup",
        idempotency_key="x", request_hash="x",
    )  # fmt: skip
    with pytest.raises(IntegrityError), transaction.atomic():
        TopUp.objects.create(
            organization=tenant.org, order=other, state=TopUp.State.AWAITING_APPROVAL,
            available_before=0,
        )  # fmt: skip


# Debits start top-ups -------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_debit_below_the_threshold_charges_once_and_grants(
    tenant, stripe_server, django_capture_on_commit_callbacks
):
    save_card(tenant, stripe_server)
    profile = billing_profile_of(tenant.org)
    profile.tax_rate = Decimal("10")
    profile.save()
    tenant.grant("60")
    rule(tenant)
    with django_capture_on_commit_callbacks(execute=True):
        debit(tenant, "e1", "5")  # 55: above the threshold
    assert stripe_server.charges == []
    with django_capture_on_commit_callbacks(execute=True):
        debit(tenant, "e2", "10")  # 45: below
    [charge] = stripe_server.charges
    topup = TopUp.objects.get()
    order = topup.order
    assert topup.state == TopUp.State.SUCCEEDED and order.status == Order.Status.PAID
    assert (order.purpose, order.provider, order.amount, order.total) == (
        "topup", "stripe", Decimal("20.00"), Decimal("22.00"),
    )  # fmt: skip
    assert charge["amount"] == 2200 and charge["currency"] == "usd"
    assert charge["customer"] == profile.stripe_customer_id
    assert charge["payment_method"] == "pm_card_visa"
    assert charge["metadata"] == {"order_id": str(order.public_id), "purpose": "topup"}
    sent = [r for r in stripe_server.state.requests if r[1] == "/v1/payment_intents"][0][2]
    assert (sent["off_session"], sent["confirm"]) == ("true", "true")
    assert pool(tenant).balance == Decimal("65")
    assert order.provider_reference == charge["id"] == topup.payment_intent
    assert Invoice.objects.get(order=order).status == Invoice.Status.PAID
    assert told(tenant, "topup.succeeded") == 1
    # A resend of the same charge (the sweep, the idempotency key) is Stripe's replay, not a
    # second charge, and changes nothing here.
    services.topup_charge(topup_id=topup.pk)
    assert len(stripe_server.charges) == 1 and pool(tenant).balance == Decimal("65")


@pytest.mark.django_db
def test_a_target_balance_tops_up_the_whole_shortfall_within_the_cap(
    tenant, stripe_server, django_capture_on_commit_callbacks
):
    save_card(tenant, stripe_server)
    tenant.grant("100")
    rule(tenant, amount=None, target_balance="200", monthly_cap="250")
    with django_capture_on_commit_callbacks(execute=True):
        debit(tenant, "e1", "60.004")  # 39.996 available: the shortfall is 160.004
    assert [c["amount"] for c in stripe_server.charges] == [16001]  # rounded up to the cent
    assert pool(tenant).balance == Decimal("200.006")
    with django_capture_on_commit_callbacks(execute=True):
        debit(tenant, "e2", "190")  # 10.006: the shortfall 189.994, 89.99 left in the cap
    assert [c["amount"] for c in stripe_server.charges] == [16001, 8999]
    assert services.month_charged(tenant.org, timezone.now()) == Decimal("250.00")
    with django_capture_on_commit_callbacks(execute=True):
        debit(tenant, "e3", "50")  # below again, the cap is used up
    assert len(stripe_server.charges) == 2


@pytest.mark.django_db
def test_no_rule_costs_the_debit_no_statement(tenant, django_capture_on_commit_callbacks):
    """The hook reads the cached threshold: after the first look (one query, cached "no rule"),
    a debit's after-commit work runs no SQL at all."""
    tenant.grant("100")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        debit(tenant, "e1", "1")
    with CaptureQueriesContext(connection) as first:
        for callback in callbacks:
            callback()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        debit(tenant, "e2", "1")
    with CaptureQueriesContext(connection) as later:
        for callback in callbacks:
            callback()
    assert len(first) == 1 and len(later) == 0
    assert cache.get(f"topup:rule:{tenant.org.pk}") == ""


@pytest.mark.django_db
def test_the_threshold_is_kept_in_the_process_for_a_second(
    tenant, stripe_server, django_capture_on_commit_callbacks
):
    """After one look, a debit's hook reads the threshold from the process, not from Redis
    (the shared key, gone, stays gone), until a second has passed or the rule is saved."""
    save_card(tenant, stripe_server)
    tenant.grant("100")
    rule(tenant)  # threshold 50: the debits below stay above it
    rule_key = f"topup:rule:{tenant.org.pk}"

    def debit_and_hook(event_id) -> int:
        """The statements of the debit's after-commit hook."""
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            debit(tenant, event_id, "1")
        with CaptureQueriesContext(connection) as statements:
            for callback in callbacks:
                callback()
        return len(statements)

    debit_and_hook("e1")
    cached = cache.get(rule_key)
    assert Decimal(cached) == 50
    cache.delete(rule_key)
    assert debit_and_hook("e2") == 0
    assert cache.get(rule_key) is None
    evict_all_now()  # as a second later
    debit_and_hook("e3")
    assert cache.get(rule_key) == cached


# Declines -------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("code", ["card_declined", "authentication_required"])
def test_a_decline_backs_off_and_tells_once(
    tenant, stripe_server, django_capture_on_commit_callbacks, settings, code
):
    settings.TOPUP_BACKOFF_SECONDS = 3600
    settings.TOPUP_BACKOFF_MAX_SECONDS = 3 * 3600
    save_card(tenant, stripe_server)
    tenant.grant("100")
    rule(tenant)
    stripe_server.state.decline = code
    for i in range(5):  # many debits below the threshold after the decline
        with django_capture_on_commit_callbacks(execute=True):
            debit(tenant, f"e{i}", "12")
    assert len(stripe_server.charges) == 1
    topup = TopUp.objects.get()
    assert topup.state == TopUp.State.FAILED and topup.order.status == Order.Status.FAILED
    expected = "insufficient_funds" if code == "card_declined" else code
    assert topup.failure_code == expected and topup.failure_message == "Your card was declined."
    assert told(tenant, "topup.failed") == 1
    event = NotificationEvent.objects.get(type="topup.failed")
    assert event.data["order"] == str(topup.order.public_id) and event.data["next_attempt_at"]
    stored = TopUpRule.objects.get()
    assert stored.failures == 1
    wait = stored.next_attempt_at - topup.updated_at
    assert timedelta(minutes=59) < wait <= timedelta(hours=1)
    assert pool(tenant).balance == Decimal("40")

    # After the back-off, the sweep tries again: a second decline doubles it, a third is capped.
    later = stored.next_attempt_at + timedelta(seconds=1)
    assert services.topup_sweep(now=later) == 1
    stored.refresh_from_db()
    assert stored.failures == 2 and len(stripe_server.charges) == 2
    assert (
        timedelta(hours=1, minutes=59)
        < stored.next_attempt_at - timezone.now()
        <= timedelta(hours=2)
    )
    services.topup_sweep(now=stored.next_attempt_at + timedelta(seconds=1))
    stored.refresh_from_db()
    assert stored.failures == 3
    assert stored.next_attempt_at - timezone.now() <= timedelta(hours=3)
    assert told(tenant, "topup.failed") == 3
    # The card works again: the next attempt succeeds and the back-off is reset.
    stripe_server.state.decline = None
    services.topup_sweep(now=stored.next_attempt_at + timedelta(seconds=1))
    stored.refresh_from_db()
    assert (stored.failures, stored.next_attempt_at) == (0, None)
    assert pool(tenant).balance == Decimal("60")
    assert TopUp.objects.filter(state=TopUp.State.FAILED).count() == 3
    # Failed orders do not count against the cap.
    assert services.month_charged(tenant.org, timezone.now()) == Decimal("20.00")


@pytest.mark.django_db
def test_a_provider_that_does_not_answer_is_resent_with_the_same_key(
    tenant, stripe_server, django_capture_on_commit_callbacks, settings
):
    settings.TOPUP_CHARGE_RETRY_SECONDS = 300
    save_card(tenant, stripe_server)
    tenant.grant("40")
    rule(tenant)
    stripe_server.state.down = True
    with django_capture_on_commit_callbacks(execute=True):
        debit(tenant, "e1", "1")
    topup = TopUp.objects.get()
    assert topup.state == TopUp.State.CHARGING and topup.attempts == 1
    assert topup.order.status == Order.Status.PENDING and stripe_server.charges == []
    assert told(tenant, "topup.failed") == 0
    # Debits meanwhile start nothing (one in flight); the sweep before retry_at sends nothing.
    with django_capture_on_commit_callbacks(execute=True):
        debit(tenant, "e2", "1")
    assert services.topup_sweep(now=timezone.now()) == 0
    assert TopUp.objects.count() == 1
    stripe_server.state.down = False
    assert services.topup_sweep(now=topup.retry_at + timedelta(seconds=1)) == 1
    topup.refresh_from_db()
    assert topup.state == TopUp.State.SUCCEEDED and topup.attempts == 2
    keys = {
        r[2]["metadata[order_id]"]
        for r in stripe_server.state.requests
        if r[1] == "/v1/payment_intents"
    }
    assert keys == {str(topup.order.public_id)} and len(stripe_server.charges) == 1
    assert pool(tenant).balance == Decimal("58")


@pytest.mark.django_db
def test_a_provider_down_for_too_long_fails_the_top_up(
    tenant, stripe_server, django_capture_on_commit_callbacks, settings
):
    settings.TOPUP_CHARGE_GIVE_UP_SECONDS = 0
    save_card(tenant, stripe_server)
    rule(tenant)
    stripe_server.state.down = True
    services.topup_sweep()
    topup = TopUp.objects.get()
    assert topup.state == TopUp.State.FAILED and topup.failure_code == "provider_unavailable"
    assert topup.order.status == Order.Status.FAILED and told(tenant, "topup.failed") == 1


# Approval -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_top_up_waits_for_approval_then_charges(
    tenant, stripe_server, django_capture_on_commit_callbacks
):
    save_card(tenant, stripe_server)
    tenant.grant("60")
    rule(tenant, requires_approval=True)
    for i in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            debit(tenant, f"e{i}", "10")
    topup = TopUp.objects.get()
    assert topup.state == TopUp.State.AWAITING_APPROVAL and stripe_server.charges == []
    assert topup.order.status == Order.Status.PENDING
    assert told(tenant, "topup.approval_required") == 1
    billing = tenant.member("billing")
    with django_capture_on_commit_callbacks(execute=True):
        services.topup_approve(topup=topup, actor=services.Actor(user=billing))
    topup.refresh_from_db()
    assert topup.state == TopUp.State.SUCCEEDED and topup.decided_by == billing
    assert len(stripe_server.charges) == 1 and pool(tenant).balance == Decimal("50")
    with pytest.raises(services.TopUpNotAwaiting):
        services.topup_approve(topup=topup, actor=SYSTEM)


@pytest.mark.django_db
def test_a_rejected_top_up_charges_nothing_and_rests(
    tenant, stripe_server, django_capture_on_commit_callbacks
):
    save_card(tenant, stripe_server)
    rule(tenant, requires_approval=True)
    services.topup_sweep()
    topup = TopUp.objects.get()
    services.topup_reject(topup=topup, actor=SYSTEM)
    topup.refresh_from_db()
    assert topup.state == TopUp.State.REJECTED and topup.order.status == Order.Status.FAILED
    assert TopUpRule.objects.get().next_attempt_at > timezone.now()
    services.topup_sweep()
    assert TopUp.objects.count() == 1 and stripe_server.charges == []


# Concurrency ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_debits_charge_exactly_what_the_rule_allows(tenant, stripe_server):
    """20 threads debit 1 credit at a time from a pool of 100 (threshold 50, top-ups of 20, a
    cap of 100 USD a month: five top-ups). Each top-up lifts the pool above the threshold and
    the debits take it below again, many times over; every debit's commit asks for a top-up.
    Exactly five charges are made, never two at once, and the cap holds."""
    save_card(tenant, stripe_server)
    tenant.grant("100")
    rule(tenant)
    in_flight_max = [0]
    stop = threading.Event()
    errors: list[BaseException] = []
    counter = iter(range(100000))
    lock = threading.Lock()

    def worker() -> None:
        try:
            while not stop.is_set():
                with lock:
                    n = next(counter)
                try:
                    debit(tenant, f"c{n}", "1")
                except InsufficientCredits:
                    pass
                flying = TopUp.objects.filter(state__in=TopUp.IN_FLIGHT).count()
                in_flight_max[0] = max(in_flight_max[0], flying)
                paid = Order.objects.filter(purpose="topup", status="paid").count()
                if paid >= 5 and pool(tenant).available < 40:
                    stop.set()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            stop.set()
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    stop.wait(timeout=120)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    # And once more after the cap: a debit below the threshold charges nothing.
    debit(tenant, "after-cap", "1")
    services.topup_sweep()

    assert len(stripe_server.charges) == 5
    assert in_flight_max[0] <= 1
    orders = Order.objects.filter(organization=tenant.org, purpose="topup")
    assert orders.count() == 5 and {o.status for o in orders} == {"paid"}
    assert sum(o.total for o in orders) == Decimal("100.00")
    assert services.month_charged(tenant.org, timezone.now()) <= Decimal("100")
    assert TopUp.objects.filter(state=TopUp.State.SUCCEEDED).count() == 5
    assert told(tenant, "topup.succeeded") == 5
    spent = sum(e.cost for e in tenant.org.usage.all())
    assert pool(tenant).balance == Decimal("200") - spent


@pytest.mark.django_db
def test_a_top_up_that_leaves_the_pool_below_the_threshold_starts_the_next(
    tenant, stripe_server, django_capture_on_commit_callbacks
):
    """The grant of a top-up is itself a change of the pool: still below the threshold, the
    next top-up starts from its commit (no debit needed), until the pool is above it."""
    save_card(tenant, stripe_server)
    tenant.grant("5")
    rule(tenant)
    with django_capture_on_commit_callbacks(execute=True):
        services.topup_sweep()
    assert [c["amount"] for c in stripe_server.charges] == [2000, 2000, 2000]
    assert pool(tenant).balance == Decimal("65")


@pytest.mark.django_db
def test_the_cap_counts_the_calendar_month_of_the_organizations_time_zone(tenant):
    from datetime import datetime

    tenant.org.time_zone = "Europe/Berlin"
    tenant.org.save()
    order = Order.objects.create(
        organization=tenant.org, amount=20, total=20, provider="stripe", purpose="topup",
        idempotency_key="x", request_hash="x",
    )  # fmt: skip
    # 23:30 UTC on 31 October is 00:30 on 1 November in Berlin: November's.
    Order.objects.filter(pk=order.pk).update(
        created_at=datetime.fromisoformat("2026-10-31T23:30:00+00:00")
    )
    november = datetime.fromisoformat("2026-11-15T12:00:00+00:00")
    october = datetime.fromisoformat("2026-10-31T22:00:00+00:00")  # 23:00 in Berlin
    assert services.month_charged(tenant.org, november) == Decimal("20")
    assert services.month_charged(tenant.org, october) == Decimal("0")
