"""The OpenRouter credit sync (`billing.services.sync`, `/api/v1/billing/openrouter*`, the upstream
sync page) against a loopback server speaking OpenRouter's `GET /api/v1/credits` contract
(`openrouter_server.py`): its 200, 401, 403 and 500, a timeout, an unreachable server, malformed
bodies; the key stored encrypted and never returned; the drift alert once a day; bad input and
other organizations."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection as db
from django.test import Client
from django_celery_beat.models import PeriodicTask

from accounts.models import AuditEvent
from accounts.roles import Role
from billing.models import OpenRouterConnection, OpenRouterSnapshot
from billing.services.sync import (
    UpstreamError,
    credits_body_parse,
    openrouter_connection_set,
    openrouter_sync,
)
from billing.tasks import openrouter_sync_all, openrouter_sync_connection
from credits.services import Attribution, UsageInput, usage_record
from notifications.models import Notification, NotificationEvent

from ..conftest import SYSTEM
from ..notifications.conftest import Worker
from .openrouter_server import INFERENCE_KEY, MANAGEMENT_KEY, OpenRouter, free_port

pytestmark = pytest.mark.django_db

SYNC = "/api/v1/billing/openrouter/sync"
CONNECTION = "/api/v1/billing/openrouter"
SNAPSHOTS = "/api/v1/billing/openrouter/snapshots"


@pytest.fixture
def openrouter(settings):
    server = OpenRouter()
    settings.OPENROUTER_API_BASE = server.base
    settings.OPENROUTER_SYNC_TIMEOUT_SECONDS = 2.0
    yield server
    server.stop()


def connect(tenant, key=MANAGEMENT_KEY, **kwargs) -> OpenRouterConnection:
    connection, _ = openrouter_connection_set(
        organization=tenant.org, actor=SYSTEM, key=key, **kwargs
    )
    return connection


def api(tenant, role=Role.BILLING):
    """A management key of a member with `role` (billing by default: billing:read and write)."""
    user = tenant.owner if role == Role.OWNER else tenant.member(role)
    _, secret = tenant.key("management", user=user)
    return tenant.client(secret)


def spend(tenant, cost: str, event_id: str = "e1"):
    key, _ = tenant.key("usage", team=tenant.team)
    usage_record(
        attribution=Attribution.of_key(key),
        event=UsageInput(id=event_id, model="openai/gpt-4o", cost=Decimal(cost), prompt_tokens=10),
    )


# A successful sync --------------------------------------------------------------------------------


def test_a_sync_records_both_totals_and_the_drift(tenant, openrouter):
    tenant.grant("100")
    tenant.allocate("50")
    spend(tenant, "12.5")
    openrouter.total_credits = "12345678.123456789012"  # 20 digits: a float would round it
    openrouter.total_usage = "40.000000000001"
    client = api(tenant)
    connect(tenant)

    response = client.post(SYNC)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "ok" and body["error"] == "" and body["http_status"] == 200
    assert body["upstream_total_credits"] == "12345678.123456789012"
    assert body["upstream_total_usage"] == "40.000000000001"
    assert body["portal_total_credits"] == "100.000000000000"
    assert body["portal_total_usage"] == "12.500000000000"
    # drift = (12345678.123456789012 - 40.000000000001) - (100 - 12.5)
    assert Decimal(body["drift"]) == Decimal("12345550.623456789011")
    assert Decimal(body["usage_drift"]) == Decimal("27.500000000001")
    snapshot = OpenRouterSnapshot.objects.get(organization=tenant.org)
    assert snapshot.upstream_total_credits == Decimal("12345678.123456789012")
    assert snapshot.trigger == "manual"
    (request,) = openrouter.requests
    assert request["path"] == "/api/v1/credits"
    assert request["authorization"] == f"Bearer {MANAGEMENT_KEY}"
    # The sync by hand is audited; the key is in no audit row.
    event = AuditEvent.objects.filter(organization=tenant.org, action="openrouter.synced").get()
    assert event.after["status"] == "ok"


def test_the_portal_totals_are_what_its_own_get_credits_answers(tenant, openrouter):
    """One rule: a snapshot's portal totals are the portal's `GET /api/v1/credits` for the whole
    organization (credits.selectors.credit_totals)."""
    tenant.grant("75.25")
    tenant.allocate("10")
    spend(tenant, "3.125")
    connect(tenant)
    snapshot = api(tenant).post(SYNC).json()
    _, secret = tenant.key("management")  # of the whole organization (no member, no team)
    own = tenant.client(secret).get("/api/v1/credits").json()["data"]
    assert Decimal(str(own["total_credits"])) == Decimal(snapshot["portal_total_credits"])
    assert Decimal(str(own["total_usage"])) == Decimal(snapshot["portal_total_usage"])


# Failures: a snapshot with status error and a clear message, never a 500 -------------------------


def _failed(tenant, client) -> dict:
    response = client.post(SYNC)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "error"
    assert body["upstream_total_credits"] is None and body["drift"] is None
    assert body["portal_total_credits"] is not None  # the portal's side is still recorded
    return body


def test_an_invalid_key_is_401_with_openrouters_message(tenant, openrouter):
    client = api(tenant)
    connect(tenant, key="sk-or-v1-" + "9" * 64)
    body = _failed(tenant, client)
    assert body["http_status"] == 401
    assert "OpenRouter refused the key (401: User not found)" in body["error"]
    assert "Check the management key" in body["error"]


def test_an_echoed_key_never_reaches_the_message(tenant, openrouter):
    openrouter.echo_key = True
    key = "sk-or-v1-" + "8" * 64
    connect(tenant, key=key)
    body = _failed(tenant, api(tenant))
    assert body["http_status"] == 401 and "User not found for key" in body["error"]
    assert key not in body["error"] and key[9:] not in str(body)


def test_an_inference_key_is_403(tenant, openrouter):
    connect(tenant, key=INFERENCE_KEY)
    body = _failed(tenant, api(tenant))
    assert body["http_status"] == 403
    assert "does not let this key read credits (403" in body["error"]
    assert "needs a management key" in body["error"]


def test_a_500_is_an_error_snapshot_and_is_not_retried(tenant, openrouter):
    openrouter.fail_with = 500
    connect(tenant)
    body = _failed(tenant, api(tenant))
    assert body["http_status"] == 500
    assert body["error"] == (
        "OpenRouter failed (HTTP 500: Internal Server Error); the next sync tries again."
    )
    assert len(openrouter.requests) == 1  # an answer is not retried, even a 5xx


def test_a_timeout_is_an_error_snapshot(tenant, openrouter, settings):
    settings.OPENROUTER_SYNC_TIMEOUT_SECONDS = 0.5
    openrouter.delay = 2.0
    connect(tenant)
    started = time.monotonic()
    body = _failed(tenant, api(tenant))
    assert time.monotonic() - started < 1.8  # gave up at the timeout, did not wait it out
    assert body["http_status"] is None
    assert body["error"] == "OpenRouter did not answer within 0.5 s."
    assert len(openrouter.requests) == 1  # a read timeout is not retried


def test_connection_errors_are_retried(tenant, settings):
    """The server starts listening 0.25 s after the first attempt: httpx's transport retries
    (0 s, then 0.5 s later) reach it."""
    server = OpenRouter(start=False)
    settings.OPENROUTER_API_BASE, settings.OPENROUTER_SYNC_RETRIES = server.base, 2
    threading.Timer(0.25, server.start).start()
    try:
        connect(tenant)
        response = api(tenant).post(SYNC)
        assert response.json()["status"] == "ok", response.content
        assert len(server.requests) == 1
    finally:
        time.sleep(0.3)
        server.stop()


def test_an_unreachable_openrouter_is_an_error_snapshot(tenant, settings):
    settings.OPENROUTER_API_BASE = f"http://127.0.0.1:{free_port()}/api/v1"
    settings.OPENROUTER_SYNC_RETRIES = 1
    connect(tenant)
    body = _failed(tenant, api(tenant))
    assert body["http_status"] is None
    assert body["error"].startswith("OpenRouter could not be reached:")


def test_a_key_that_no_longer_decrypts_is_an_error_snapshot(tenant, openrouter, settings):
    connect(tenant)
    settings.FIELD_ENCRYPTION_KEY = ["bmV3LWtleS1mb3ItdGVzdHMtb25seS1ub3QtcmVhbCE="]  # rotated away
    body = _failed(tenant, api(tenant))
    assert (
        "cannot be decrypted" in body["error"] and "set the management key again" in body["error"]
    )
    assert openrouter.requests == []


@pytest.mark.parametrize(
    "body, why",
    [
        (b"<html>Bad gateway</html>", "is not JSON"),
        (b'{"data": null}', 'has no "data" object'),
        (b"[1, 2]", 'has no "data" object'),
        (b'{"data": {"total_credits": 10}}', 'has no number "total_usage"'),
        (b'{"data": {"total_credits": "10", "total_usage": 1}}', 'no number "total_credits"'),
        (b'{"data": {"total_credits": true, "total_usage": 1}}', 'no number "total_credits"'),
        (b'{"data": {"total_credits": NaN, "total_usage": 1}}', "is not JSON"),
        (b'{"data": {"total_credits": -1, "total_usage": 1}}', '"total_credits" is out of range'),
        (b'{"data": {"total_credits": 1e400, "total_usage": 1}}', "is out of range"),
    ],
)
def test_a_malformed_answer_is_an_error_snapshot(tenant, openrouter, body, why):
    openrouter.body = body
    connect(tenant)
    result = _failed(tenant, api(tenant))
    assert result["http_status"] == 200
    assert why in result["error"], result["error"]


def test_the_parser_reads_numbers_without_float():
    parsed = credits_body_parse(b'{"data": {"total_credits": 0.1, "total_usage": 0.2}}')
    assert parsed.total_credits + parsed.total_usage == Decimal(
        "0.3"
    )  # 0.30000000000000004 as floats
    with pytest.raises(UpstreamError):
        credits_body_parse(b'{"data": {"total_credits": Infinity, "total_usage": 0}}')


# The key: write-only, encrypted at rest ------------------------------------------------------


def test_the_key_is_stored_encrypted_and_never_returned(tenant):
    client = api(tenant)
    response = client.put(CONNECTION, {"key": MANAGEMENT_KEY, "drift_threshold": "2.5"})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["key_mask"] == "sk-or-v1-…cdef"
    assert body["drift_threshold"] == "2.500000000000" and body["enabled"] is True
    assert body["latest"] is None
    secret_part = MANAGEMENT_KEY[9:]
    for answer in (response, client.get(CONNECTION)):
        assert secret_part not in answer.content.decode()
    # Nowhere in the row as the database holds it, nor in the audit log.
    with db.cursor() as cursor:
        cursor.execute("SELECT * FROM billing_openrouterconnection")
        (row,) = cursor.fetchall()
    assert not any(secret_part in str(value) for value in row)
    audit = list(AuditEvent.objects.filter(organization=tenant.org).values("before", "after"))
    assert audit and secret_part not in str(audit)
    assert OpenRouterConnection.objects.get().key == MANAGEMENT_KEY  # Fernet gives it back
    # A change without a key keeps it; a new key replaces it.
    response = client.put(CONNECTION, {"enabled": False})
    assert response.status_code == 200 and response.json()["enabled"] is False
    assert OpenRouterConnection.objects.get().key == MANAGEMENT_KEY
    client.put(CONNECTION, {"key": INFERENCE_KEY})
    assert OpenRouterConnection.objects.get().key == INFERENCE_KEY
    assert client.delete(CONNECTION).status_code == 204
    assert not OpenRouterConnection.objects.exists()
    assert client.get(CONNECTION).status_code == 404


@pytest.mark.parametrize(
    "body, field",
    [
        ({"drift_threshold": "1"}, "key"),  # connecting needs a key
        ({"key": "short"}, "key"),
        ({"key": "sk-or-v1-has a space in it 0123456789"}, "key"),
        ({"key": 12345678901234567890123}, "key"),
        ({"key": MANAGEMENT_KEY, "drift_threshold": "-1"}, "drift_threshold"),
        ({"key": MANAGEMENT_KEY, "drift_threshold": "lots"}, "drift_threshold"),
        ({"key": MANAGEMENT_KEY, "drift_threshold": "1e30"}, "drift_threshold"),
        ({"key": MANAGEMENT_KEY, "enabled": "maybe"}, "enabled"),
        ({"key": MANAGEMENT_KEY, "secret": "x"}, "secret"),
    ],
)
def test_bad_input_is_400_and_writes_nothing(tenant, body, field):
    client = api(tenant)
    audit = AuditEvent.objects.filter(organization=tenant.org).count()
    response = client.put(CONNECTION, body, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["metadata"]["type"] == "validation_error"
    assert field in error["metadata"]["errors"], error
    assert not OpenRouterConnection.objects.exists()
    assert AuditEvent.objects.filter(organization=tenant.org).count() == audit


def test_bad_input_on_an_existing_connection_changes_nothing(tenant):
    client = api(tenant)
    connect(tenant, drift_threshold="3")
    before = OpenRouterConnection.objects.values().get()
    response = client.put(CONNECTION, {"key": "x y", "drift_threshold": "1"}, format="json")
    assert response.status_code == 400
    assert OpenRouterConnection.objects.values().get() == before


def test_sync_without_a_connection_is_404(tenant):
    response = api(tenant).post(SYNC)
    assert response.status_code == 404
    assert response.json()["error"]["metadata"]["type"] == "not_found"
    assert not OpenRouterSnapshot.objects.exists()


# The drift alert --------------------------------------------------------------------------------


def test_a_drift_above_the_threshold_alerts_once_a_day(tenant, openrouter):
    tenant.grant("100")
    billing_member = tenant.member(Role.BILLING)
    connect(tenant, drift_threshold="5")
    connection = OpenRouterConnection.objects.get()
    openrouter.total_credits, openrouter.total_usage = "100", "4"  # 96 left: drift -4
    quiet = openrouter_sync(connection=connection)
    assert quiet.drift == Decimal(-4) and not quiet.alerted
    assert not NotificationEvent.objects.filter(type="credits.sync_drift").exists()

    openrouter.total_credits, openrouter.total_usage = "100", "10"  # 90 left: drift -10
    first = openrouter_sync(connection=connection)
    second = openrouter_sync(connection=connection)
    assert first.drift == Decimal(-10) and first.alerted and not second.alerted
    (event,) = NotificationEvent.objects.filter(organization=tenant.org, type="credits.sync_drift")
    assert event.data["drift"] == "-10.0000" and event.data["threshold"] == "5.0000"
    told = Notification.objects.filter(type="credits.sync_drift")
    assert {n.recipient for n in told} == {tenant.owner, billing_member}
    assert "drift of -10.0000 credits" in told.first().body

    # Upstream's side too: more left there than in the portal.
    openrouter.total_credits, openrouter.total_usage = "130", "0"
    assert openrouter_sync(connection=connection).drift == Decimal(30)
    assert NotificationEvent.objects.filter(type="credits.sync_drift").count() == 1


def test_a_failed_sync_raises_no_drift_alert(tenant, openrouter):
    openrouter.fail_with = 500
    connect(tenant, drift_threshold="0")
    snapshot = openrouter_sync(connection=OpenRouterConnection.objects.get())
    assert snapshot.status == "error" and not snapshot.alerted
    assert not NotificationEvent.objects.exists()


# The periodic task -------------------------------------------------------------------------------


def test_the_periodic_task_syncs_every_enabled_connection(tenant, other_tenant, openrouter):
    connect(tenant)
    connect(other_tenant, enabled=False)
    assert openrouter_sync_all.delay().get() == 1  # one sync queued (run here: eager)
    snapshot = OpenRouterSnapshot.objects.get()
    assert snapshot.organization == tenant.org and snapshot.trigger == "schedule"
    # Only syncs by someone are audited.
    assert not AuditEvent.objects.filter(action="openrouter.synced").exists()
    # A sync queued for a connection since disabled or removed does nothing.
    other = OpenRouterConnection.objects.get(organization=other_tenant.org)
    assert openrouter_sync_connection.delay(other.pk).get() is None
    assert openrouter_sync_connection.delay(987654321).get() is None
    assert OpenRouterSnapshot.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_periodic_task_on_a_real_worker(tenant, openrouter):
    """`openrouter_sync_all` on a Celery worker over Redis queues the sync of each connection,
    which the worker runs against the loopback OpenRouter (its key decrypted there)."""
    connect(tenant)
    worker = Worker({"OPENROUTER_API_BASE": openrouter.base})
    worker.start()
    try:
        assert worker.run("billing.tasks.openrouter_sync_all") == 1
        deadline = time.monotonic() + 60
        while not OpenRouterSnapshot.objects.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        worker.stop()
    snapshot = OpenRouterSnapshot.objects.get()
    assert snapshot.status == "ok" and snapshot.trigger == "schedule", snapshot.error
    assert openrouter.requests[0]["authorization"] == f"Bearer {MANAGEMENT_KEY}"


def test_the_periodic_task_is_in_the_database_schedule(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["openrouter-sync"]
    assert entry["task"] == "billing.tasks.openrouter_sync_all"
    call_command("beat_schedule_sync")
    task = PeriodicTask.objects.get(name="portal: openrouter-sync")
    assert task.task == "billing.tasks.openrouter_sync_all" and task.enabled
    assert task.interval.every == 3600 and task.interval.period == "seconds"  # hourly by default


# Permissions and tenancy ---------------------------------------------------------------------


def test_reading_needs_billing_read_and_changing_billing_write(tenant, openrouter):
    connect(tenant)
    admin, viewer = api(tenant, Role.ADMIN), api(tenant, Role.VIEWER)
    assert admin.get(CONNECTION).status_code == 200
    assert admin.get(SNAPSHOTS).status_code == 200
    assert admin.post(SYNC).status_code == 403
    assert admin.put(CONNECTION, {"enabled": False}).status_code == 403
    assert viewer.get(CONNECTION).status_code == 403
    assert not OpenRouterSnapshot.objects.exists()
    assert OpenRouterConnection.objects.get().enabled


def test_another_organizations_connection_is_404(tenant, other_tenant, openrouter):
    connect(tenant)
    api(tenant).post(SYNC)
    other = api(other_tenant, Role.OWNER)
    assert other.get(CONNECTION).status_code == 404
    assert other.post(SYNC).status_code == 404
    assert other.delete(CONNECTION).status_code == 404
    assert other.get(SNAPSHOTS).json()["results"] == []
    assert OpenRouterConnection.objects.filter(organization=tenant.org).exists()
    assert OpenRouterSnapshot.objects.filter(organization=tenant.org).count() == 1


def test_snapshots_are_listed_newest_first(tenant, openrouter):
    connect(tenant)
    client = api(tenant)
    client.post(SYNC)
    openrouter.fail_with = 500
    client.post(SYNC)
    rows = client.get(SNAPSHOTS).json()["results"]
    assert [r["status"] for r in rows] == ["error", "ok"]
    assert rows[1]["usage_drift"] == "40.250000000000"  # 40.25 upstream, nothing used here
    latest = client.get(CONNECTION).json()["latest"]
    assert latest["status"] == "error" and latest["id"] == rows[0]["id"]


# The page ----------------------------------------------------------------------------------------


def _page_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_page_shows_a_failed_sync_clearly(tenant, openrouter):
    connect(tenant, key=INFERENCE_KEY)
    billing_member = tenant.member(Role.BILLING)
    client = _page_client(billing_member)
    page = f"/o/{tenant.org.slug}/billing/openrouter/"
    response = client.post(page + "sync/")
    assert response.status_code == 302 and response.url == page
    response = client.get(page)
    text = response.content.decode()
    assert response.status_code == 200
    assert "The sync failed: OpenRouter does not let this key read credits (403" in text
    assert 'data-testid="sync-error"' in text and "HTTP 403" in text
    assert INFERENCE_KEY[9:] not in text and "sk-or-v1-…3210" in text


def test_the_page_form_connects_and_keeps_the_key_write_only(tenant, openrouter):
    client = _page_client(tenant.owner)
    form = f"/o/{tenant.org.slug}/billing/openrouter/connection/"
    bad = client.post(form, {"key": "", "drift_threshold": "2", "enabled": "on"})
    assert bad.status_code == 200 and "This field is required" in bad.content.decode()
    assert not OpenRouterConnection.objects.exists()
    response = client.post(form, {"key": MANAGEMENT_KEY, "drift_threshold": "2", "enabled": "on"})
    assert response.status_code == 302
    connection = OpenRouterConnection.objects.get()
    assert connection.key == MANAGEMENT_KEY and connection.drift_threshold == 2
    again = client.get(form).content.decode()
    assert MANAGEMENT_KEY[9:] not in again and "sk-or-v1-…cdef" in again
    # Saving without a key keeps it.
    client.post(form, {"key": "", "drift_threshold": "3"})
    connection.refresh_from_db()
    assert connection.key == MANAGEMENT_KEY and not connection.enabled
    assert connection.drift_threshold == 3


def test_who_sees_the_page_and_who_may_sync(tenant, openrouter):
    connect(tenant)
    page = f"/o/{tenant.org.slug}/billing/openrouter/"
    admin = _page_client(tenant.member(Role.ADMIN))
    text = admin.get(page).content.decode()
    assert "Upstream sync" in text and "Sync now" not in text
    assert admin.post(page + "sync/").status_code == 404
    assert _page_client(tenant.member(Role.VIEWER)).get(page).status_code == 404
    assert _page_client(tenant.member(Role.MEMBER)).get(page).status_code == 404
    assert not OpenRouterSnapshot.objects.exists()
    owner = _page_client(tenant.owner)
    # the billing area's second row links it
    assert (
        'href="/o/acme/billing/openrouter/"'
        in owner.get("/o/acme/billing/orders/").content.decode()
    )
    owner.post(page + "sync/")
    assert OpenRouterSnapshot.objects.get().status == "ok"
    disconnect = owner.get(page + "disconnect/")
    assert disconnect.status_code == 200 and "Disconnect OpenRouter?" in disconnect.content.decode()
    assert owner.post(page + "disconnect/").status_code == 302
    assert not OpenRouterConnection.objects.exists()
    assert OpenRouterSnapshot.objects.count() == 1  # the history stays
