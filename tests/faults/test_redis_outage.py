"""Redis stopped and started again: the portal's shared cache (throttles, login lockouts) and the
Celery broker are a redis-server of the test's own (tests/faults/conftest.py), which the test
stops in the middle.

While it is down: usage is still recorded and charged (the ledger needs PostgreSQL only; a budget
alert's messages wait in the outbox, their queueing after the commit fails and is logged); the
write throttles and the password reset e-mails' limit, which only count, let writes through; a
login, whose lockout counter guards the accounts, is refused with 503 rather than let through
uncounted. Once Redis is back, the outbox sweep on a real Celery worker delivers the waiting
webhook, once; and the other work queued while it was down (an invitation's e-mail, an export, a
PDF) is done by the beat sweeps."""

from __future__ import annotations

import time
from decimal import Decimal

import environ
import pytest
from axes.handlers.proxy import AxesProxyHandler
from django.conf import settings
from django.core import mail
from django.test import Client, override_settings

from accounts.models import Invitation
from billing.models import ExportJob, Invoice
from billing.services.documents import Line, invoice_issue
from credits.models import Alert, UsageEvent
from credits.services.budgets import budget_create
from credits.verify import ledger_verify
from notifications.models import OutboxMessage
from notifications.services import webhook_endpoint_create
from portal.celery import app
from tests.conftest import SYSTEM
from tests.notifications.conftest import Receiver, Worker, portal_elsewhere  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)

USAGE = "/api/v1/credits/usage"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture
def on_test_redis(redis_server):
    """The cache (db 1) and the Celery broker (db 0) on the test's redis-server, as production
    has them on one Redis; the app's producer pool made anew for that broker."""
    cache = environ.Env.cache_url_config(redis_server.url(1) + "?key_prefix=faults")
    saved = {k: app.conf[k] for k in ("broker_url", "result_backend", "task_always_eager")}

    def fresh_pools():  # as Celery does after a fork
        app._after_fork()

    app.conf.update(broker_url=redis_server.url(0), result_backend=None, task_always_eager=False)
    fresh_pools()
    with override_settings(CACHES={"default": cache}):
        AxesProxyHandler.get_implementation(force=True)  # it holds the cache it was made with
        try:
            yield redis_server
        finally:
            app.conf.update(saved)
            fresh_pools()
    AxesProxyHandler.get_implementation(force=True)


def login(password: str = "correct-horse-battery"):
    return Client().post("/login/", {"username": "owner@acme.test", "password": password})


def test_usage_is_recorded_while_redis_is_down_and_the_outbox_delivers_after(
    tenant, prices, receiver, on_test_redis
):
    redis_server = on_test_redis
    tenant.grant("10")
    budget_create(
        organization=tenant.org, scope="organization", period="monthly", limit="1", actor=SYSTEM
    )
    endpoint, secret = webhook_endpoint_create(
        organization=tenant.org, url=receiver.url, events=["budget.threshold_crossed"], actor=SYSTEM
    )
    receiver.secret = secret
    _, usage_secret = tenant.key("usage")
    api = tenant.client(usage_secret)
    management = tenant.client(tenant.key("management")[1])
    assert api.post(USAGE, {"id": "before", "model": "gpt-4o", "cost": "0.1"}).status_code == 201
    assert login().status_code == 302

    redis_server.stop()
    started = time.monotonic()
    # 0.1 + 0.7 crosses 75 % of the 1-credit budget: an alert, and a webhook in the outbox.
    during = api.post(USAGE, {"id": "during", "model": "gpt-4o", "cost": "0.7"})
    assert during.status_code == 201, during.content
    retry = api.post(USAGE, {"id": "during", "model": "gpt-4o", "cost": "0.7"})
    assert retry.status_code == 200 and retry.json() == during.json()
    assert Decimal(during.json()["cost"]) == Decimal("0.7")
    assert UsageEvent.objects.filter(organization=tenant.org).count() == 2
    assert Alert.objects.filter(budget__organization=tenant.org, threshold=75).exists()
    message = OutboxMessage.objects.get(organization=tenant.org, channel="webhook")
    assert message.status == "pending" and message.attempts == 0
    # A throttled write (API keys: 60 an hour per organization) only counts: let through.
    created = management.post("/api/v1/keys", {"name": "during the outage", "kind": "usage"})
    assert created.status_code == 201, created.content
    # So does the limit of password reset e-mails: the e-mail goes.
    sent = len(mail.outbox)
    reset = Client().post("/password-reset/", {"email": "owner@acme.test"})
    assert reset.status_code == 302 and reset["Location"] == "/password-reset/done/"
    assert [m.to for m in mail.outbox[sent:]] == [["owner@acme.test"]]
    # A login's lockout counter cannot be read: refused, not let through uncounted.
    refused = login()
    assert refused.status_code == 503 and "_auth_user_id" not in refused.client.session
    assert int(refused["Retry-After"]) > 0
    assert time.monotonic() - started < 30  # no call waits long for the missing Redis
    assert receiver.requests == []

    redis_server.start()  # empty, on the same port
    assert login().status_code == 302
    worker = Worker({"CELERY_BROKER_URL": redis_server.url(0), "CELERY_RESULT_BACKEND": ""})
    worker.start()
    try:
        deadline = time.monotonic() + 40
        while message.status != "delivered" and time.monotonic() < deadline:
            worker.send("notifications.tasks.outbox_sweep")
            time.sleep(1)
            message.refresh_from_db()
    finally:
        worker.stop()
    assert message.status == "delivered", (message.status, message.last_error)
    assert [r["headers"]["webhook-id"] for r in receiver.accepted()] == [message.message_id]
    assert receiver.accepted()[0]["verified"] is True
    assert ledger_verify() == []


def test_work_queued_while_redis_is_down_is_done_once_it_is_back(tenant, tmp_path, on_test_redis):
    """An invitation, an export job and an invoice made while Redis is down answer as usual (the
    queueing after commit fails and is logged: `robust`); their e-mail, file and PDF are made
    by the beat sweeps once Redis is back (here the sweeps are sent to a real worker, with
    SWEEP_AFTER_SECONDS=0 so that it need not wait a minute)."""
    redis_server = on_test_redis
    management = tenant.client(tenant.key("management")[1])

    redis_server.stop()
    started = time.monotonic()
    invited = management.post(
        "/api/v1/invitations", {"email": "new@example.test", "role": "member"}
    )
    assert invited.status_code == 201, invited.content
    export = management.post("/api/v1/billing/exports", {"kind": "usage", "format": "csv"})
    assert export.status_code == 201, export.content
    line = Line(description="AI credits", quantity=Decimal("5"), unit_price=Decimal("1.00"))
    invoice = invoice_issue(organization=tenant.org, lines=[line], actor=SYSTEM)
    assert time.monotonic() - started < 30  # no call waits long for the missing Redis
    invitation = Invitation.objects.get(email="new@example.test")
    job = ExportJob.objects.get(public_id=export.json()["id"])
    assert invitation.email_wanted_at is not None and invitation.emailed_at is None
    assert job.status == "queued" and not Invoice.objects.get(pk=invoice.pk).pdf

    redis_server.start()
    mail = tmp_path / "mail"
    worker = Worker({
        "CELERY_BROKER_URL": redis_server.url(0), "CELERY_RESULT_BACKEND": "",
        "SWEEP_AFTER_SECONDS": "0", "EMAIL_URL": f"filemail:///{mail}",  # environ drops a /
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
    })  # fmt: skip
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for sweep in ("accounts.tasks.invitations_sweep", "billing.tasks.exports_sweep",
                          "billing.tasks.documents_sweep"):  # fmt: skip
                worker.send(sweep)
            time.sleep(2)
            invitation.refresh_from_db()
            job.refresh_from_db()
            if (
                invitation.emailed_at
                and job.status == "done"
                and Invoice.objects.get(pk=invoice.pk).pdf
            ):
                break
    finally:
        worker.stop()
    assert invitation.emailed_at is not None and invitation.email_wanted_at is None
    sent = [p.read_text() for p in mail.iterdir()]
    assert len(sent) == 1 and "new@example.test" in sent[0]  # once, whatever the sweeps sent
    assert job.status == "done" and job.row_count == 0
    assert Invoice.objects.get(pk=invoice.pk).pdf.read().startswith(b"%PDF-")
