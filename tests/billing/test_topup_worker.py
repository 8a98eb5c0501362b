"""Automatic top-up on a real Celery worker: the beat's sweep (`billing.tasks.topup_sweep`)
charges the saved card through the loopback Stripe from the worker process."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.models import Order, TopUp
from credits.models import LedgerAccount
from tests.test_celery_worker import worker  # noqa: F401  (the fixture)

from .stripe_topup_server import StripeServer
from .test_topup import rule, save_card


@pytest.fixture
def stripe_env(settings, monkeypatch):
    """The loopback Stripe, for this process (settings) and the worker's (its environment)."""
    with StripeServer() as server:
        for name, value in (
            ("STRIPE_SECRET_KEY", "sk_test_loopback"),
            ("STRIPE_API_BASE", server.base),
            ("PAYMENT_PROVIDER_RETRIES", "0"),
        ):
            monkeypatch.setenv(name, value)
            setattr(settings, name, int(value) if value.isdigit() else value)
        yield server


@pytest.mark.django_db(transaction=True)
def test_the_sweep_charges_on_a_real_worker(tenant, stripe_env, worker):  # noqa: F811
    save_card(tenant, stripe_env)
    tenant.grant("40")
    rule(tenant)
    assert worker("billing.tasks.topup_sweep") == 1
    assert len(stripe_env.charges) == 1
    topup = TopUp.objects.get()
    assert topup.state == TopUp.State.SUCCEEDED and topup.order.status == Order.Status.PAID
    assert LedgerAccount.objects.get(organization=tenant.org, kind="pool").balance == Decimal(60)
    assert worker("billing.tasks.topup_sweep") == 0  # 60: above the threshold of 50
    assert len(stripe_env.charges) == 1
