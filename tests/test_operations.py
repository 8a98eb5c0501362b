"""What operators get (docs/operations.md): health endpoints, Prometheus metrics behind a token,
request ids and JSON log lines without secrets, no-store and the Content-Security-Policy on
responses. The backup and restore drill is in test_backup.py; pages under the CSP in Chromium
in pages/test_csp.py."""

from __future__ import annotations

import io
import json
import logging
import os
from contextlib import contextmanager
from decimal import Decimal

import environ
import pytest
import redis
from django.db import connection
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from credits.tasks import ledger_verify
from notifications.models import OutboxMessage
from notifications.services import notify, webhook_endpoint_create
from notifications.tasks import outbox_deliver
from portal.logs import JsonFormatter, redact

from .conftest import SYSTEM
from .notifications.conftest import Receiver

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-for-tests"
REDIS = os.environ.get("TEST_CACHE_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def funded(tenant, prices):
    tenant.grant("10")
    key, secret = tenant.key("usage", user=tenant.owner)
    return tenant, key, secret, tenant.client(secret)


def scrape(client, settings) -> dict[tuple, float]:
    """{(sample name, sorted label items): value} of GET /metrics."""
    settings.METRICS_TOKEN = TOKEN
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.content.decode())
        for s in family.samples
    }


@contextmanager
def log_lines(logger_name: str):
    """The JSON lines (parsed) that `logger_name` writes meanwhile, through the portal's
    formatter; the raw text is `lines.raw`."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    class Lines(list):
        raw = ""

    lines = Lines()
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        lines.raw = stream.getvalue()
        lines.extend(json.loads(line) for line in lines.raw.splitlines())


# Health -----------------------------------------------------------------------------------------


def test_healthz_answers_without_login_or_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert "no-store" in response["Cache-Control"]


def test_readyz_checks_the_database_the_cache_and_the_migrations(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "cache": "ok", "migrations": "ok"},
    }


def test_readyz_is_503_when_redis_is_down(client):
    dead = environ.Env.cache_url_config("redis://127.0.0.1:9/1")  # nothing listens on port 9
    with override_settings(CACHES={"default": dead}):
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok" and body["checks"]["migrations"] == "ok"
    assert body["checks"]["cache"].startswith("error: ")
    assert "127.0.0.1" not in json.dumps(body)  # no connection details


def test_readyz_is_503_while_a_migration_is_pending(client):
    with connection.cursor() as cursor:  # as if the last migration of `credits` were new
        cursor.execute(
            "DELETE FROM django_migrations WHERE id = (SELECT max(id) FROM django_migrations "
            "WHERE app = 'credits')"
        )
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["migrations"] == "pending: 1"


def test_health_endpoints_are_not_logged_nor_redirected_to_https(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    with log_lines("portal.access") as lines, log_lines("django.request") as errors:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        with override_settings(
            CACHES={"default": environ.Env.cache_url_config("redis://127.0.0.1:9/1")}
        ):
            assert client.get("/readyz").status_code == 503
        assert client.get("/login/").status_code == 301  # the rest is redirected
        assert client.get("/login/", secure=True).status_code == 200  # and logged
    assert [line["route"] for line in lines] == ["login/"]
    assert errors == []


def test_health_endpoints_are_never_throttled(client, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "invitations": "1/hour",
            "keys": "1/hour",
        },
    }
    assert all(client.get("/readyz").status_code == 200 for _ in range(5))


# Metrics ----------------------------------------------------------------------------------------


def test_metrics_are_off_without_a_token_and_need_it_when_on(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    settings.METRICS_TOKEN = TOKEN
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 401
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200 and b"portal_http_requests_total" in response.content


def test_metrics_count_usage_refusals_credits_holds_and_requests(
    funded, client, settings, django_capture_on_commit_callbacks
):
    tenant, _key, _secret, api = funded
    before = scrape(client, settings)
    event = {"model": "gpt-4o", "prompt_tokens": 1000, "completion_tokens": 100}
    with django_capture_on_commit_callbacks(execute=True):
        assert (
            api.post("/api/v1/credits/usage", {"id": "m1", **event, "cost": "1.5"}).status_code
            == 201
        )
        assert (
            api.post("/api/v1/credits/usage", {"id": "m1", **event, "cost": "1.5"}).status_code
            == 200
        )
        assert (
            api.post("/api/v1/credits/usage", {"id": "m2", **event, "cost": "99"}).status_code
            == 402
        )
        assert (
            api.post(
                "/api/v1/credits/usage", {"id": "m3", **event, "prompt_tokens": -1}
            ).status_code
            == 400
        )
        batch = [{"id": "b1", **event, "cost": "0.5"}, {"id": "b2", **event, "model": "no-such"}]
        assert api.post("/api/v1/credits/usage", {"events": batch}).status_code == 207
        hold = api.post("/api/v1/credits/authorizations", {"id": "h1", "amount": "2"})
        assert hold.status_code == 201, hold.json()
    after = scrape(client, settings)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert delta("portal_usage_events_recorded_total") == 2  # m1 and b1; the retry is not new
    assert delta("portal_credits_spent_total") == pytest.approx(2.0)
    assert delta("portal_usage_events_refused_total", reason="insufficient_credits") == 1
    assert delta("portal_usage_events_refused_total", reason="validation_error") == 2
    assert after[("portal_holds_open", ())] == 1
    assert Decimal(str(after[("portal_holds_open_credits", ())])) == Decimal("2")
    route = (("method", "POST"), ("route", "api/v1/credits/usage"), ("status", "201"))
    assert (
        after[("portal_http_requests_total", route)]
        - before.get(("portal_http_requests_total", route), 0)
        == 1
    )
    latency = (("method", "POST"), ("route", "api/v1/credits/usage"))
    assert after[("portal_http_request_duration_seconds_count", latency)] >= 5


def test_metrics_show_the_last_ledger_verification(client, settings, tenant):
    tenant.grant("1")
    assert ledger_verify() == 0  # the hourly task
    samples = scrape(client, settings)
    assert samples[("portal_ledger_verify_mismatches", ())] == 0
    assert samples[("portal_ledger_verify_timestamp_seconds", ())] > 0


def test_metrics_count_webhook_deliveries_by_outcome(client, settings, tenant):
    settings.PORTAL_BASE_URL = "https://portal.example.test"
    settings.WEBHOOK_RETRY_DELAYS = [5]
    receiver = Receiver()
    try:
        receiver.statuses = [500, 500]
        webhook_endpoint_create(
            organization=tenant.org, url=receiver.url, events=["balance.low"], actor=SYSTEM
        )
        notify(organization=tenant.org, type="balance.low", data={"available": "1"})
        message = OutboxMessage.objects.get(channel="webhook")
        before = scrape(client, settings)
        assert outbox_deliver(message.pk) == "pending"
        OutboxMessage.objects.filter(pk=message.pk).update(next_attempt_at=message.created_at)
        assert outbox_deliver(message.pk) == "dead"
    finally:
        receiver.server.shutdown()
    after = scrape(client, settings)
    for outcome, n in (("retrying", 1), ("dead", 1), ("delivered", 0)):
        key = ("portal_outbox_deliveries_total", (("channel", "webhook"), ("outcome", outcome)))
        assert after[key] - before[key] == n, outcome


def test_metrics_show_the_celery_queue_depth(client, settings):
    settings.CELERY_BROKER_URL = REDIS
    settings.CELERY_TASK_DEFAULT_QUEUE = queue = f"ops-test-{os.getpid()}"
    broker = redis.Redis.from_url(REDIS)
    try:
        broker.rpush(queue, "m1", "m2")
        broker.rpush(queue + "\x06\x163", "m3")  # a priority-3 message (kombu's own list)
        samples = scrape(client, settings)
    finally:
        broker.delete(queue, queue + "\x06\x163")
    assert samples[("portal_celery_queue_depth", (("queue", queue),))] == 3
    assert samples[("portal_celery_broker_up", ())] == 1
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:9/0"  # down: said, and the scrape answers
    assert scrape(client, settings)[("portal_celery_broker_up", ())] == 0


# Request ids and logs ---------------------------------------------------------------------------


def test_a_log_line_names_request_organization_and_key_prefix_never_the_key(funded):
    tenant, key, secret, api = funded
    with log_lines("portal.access") as lines:
        response = api.get("/api/v1/credits/balance", HTTP_X_REQUEST_ID="req-42.a:b")
    assert response.status_code == 200 and response["X-Request-ID"] == "req-42.a:b"
    (line,) = lines
    assert line["request_id"] == "req-42.a:b"
    assert line["organization"] == "acme"
    assert line["key_prefix"].startswith(key.label.split("...")[0])
    assert (line["method"], line["route"], line["status"]) == ("GET", "api/v1/credits/balance", 200)
    assert line["level"] == "INFO" and isinstance(line["duration_ms"], float)
    assert secret not in lines.raw and secret[12:] not in lines.raw


def test_a_page_logs_its_organization_and_a_request_id_is_made_when_none_is_sane(client, tenant):
    client.force_login(tenant.owner)
    with log_lines("portal.access") as lines:
        response = client.get("/o/acme/", HTTP_X_REQUEST_ID="bad id\twith spaces")
    assert response.status_code == 200
    generated = response["X-Request-ID"]
    assert len(generated) == 32 and generated.isalnum()
    assert lines[0]["request_id"] == generated and lines[0]["organization"] == "acme"
    assert "key_prefix" not in lines[0]
    too_long = client.get("/healthz", HTTP_X_REQUEST_ID="a" * 65)["X-Request-ID"]
    assert too_long != "a" * 65


def test_under_asgi_the_request_id_no_store_and_access_line_hold(settings):
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    with log_lines("portal.access") as lines:
        response = async_to_sync(AsyncClient().get)("/login/", headers={"X-Request-ID": "asgi-1"})
    assert response.status_code == 200 and response["X-Request-ID"] == "asgi-1"
    assert "no-store" in response["Cache-Control"]  # the login view's own never_cache
    assert [(line["request_id"], line["route"]) for line in lines] == [("asgi-1", "login/")]


def test_tokens_in_paths_and_messages_never_reach_the_log(client, funded):
    _tenant, _key, secret, _api = funded
    token = "Zq8XcBq3tokenOfAnInvitation"
    with log_lines("portal.access") as access, log_lines("django.request") as errors:
        client.get(f"/invitations/{token}/")
        client.get("/reset/MQ/set-password-token-123/")
        logging.getLogger("django.request").warning("upstream said: Bearer %s", secret)
    assert access and errors
    everything = access.raw + errors.raw
    for leaked in (token, "set-password-token-123", secret, secret[12:]):
        assert leaked not in everything
    assert access[0]["path"] == "/invitations/[redacted]/"
    assert redact(f"key {secret} /invitations/{token}/x") == (
        f"key {secret[:12]}… /invitations/[redacted]/x"
    )


# Response headers -------------------------------------------------------------------------------


def test_responses_with_secrets_are_no_store(funded, client):
    tenant, _key, _secret, _usage_api = funded
    _management, secret = tenant.key("management")
    api = tenant.client(secret)
    created = api.post("/api/v1/keys", {"name": "CI"})
    assert created.status_code == 201 and created.json()["key"].startswith("sk-cp-v1-")
    invitation = api.post("/api/v1/invitations", {"email": "new@acme.test", "role": "member"})
    assert invitation.status_code == 201, invitation.json()
    webhook = api.post(
        "/api/v1/webhooks", {"url": "https://hooks.example.test/in", "events": ["balance.low"]}
    )
    assert webhook.status_code == 201, webhook.json()
    client.force_login(tenant.owner)
    page = client.get("/o/acme/keys/new/")
    for response in (created, invitation, webhook, page, api.get("/api/v1/credits/balance")):
        assert response["Cache-Control"] == "no-store", response
    static = client.get("/static/portal/portal.css")
    assert static.status_code == 200 and "no-store" not in static.get("Cache-Control", "")


def test_every_response_carries_the_content_security_policy(client, funded):
    _tenant, _key, _secret, api = funded
    for response in (client.get("/login/"), api.get("/api/v1/credits/balance")):
        policy = response["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["default-src"] == "'self'" and directives["script-src"] == "'self'"
        assert directives["style-src"] == "'self'" and directives["frame-ancestors"] == "'none'"
        assert "unsafe" not in policy


# Dependency audit -------------------------------------------------------------------------------


def test_the_audit_fails_on_fixable_vulnerabilities_only(tmp_path, capsys):
    from portal.auditcheck import main

    pip = {"dependencies": [
        {"name": "django", "version": "4.2.0",
         "vulns": [{"id": "GHSA-1", "fix_versions": ["4.2.1"]}]},
        {"name": "x", "version": "1", "vulns": [{"id": "PYSEC-2", "fix_versions": []}]},
        {"name": "y", "version": "2", "vulns": []},
    ]}  # fmt: skip
    npm = {
        "vulnerabilities": {"chart.js": {"severity": "high", "range": "<4", "fixAvailable": True}}
    }
    clean_npm = {
        "vulnerabilities": {"zod": {"severity": "low", "range": "*", "fixAvailable": False}}
    }
    refused = {"message": "405 Method Not Allowed - POST .../advisories/bulk", "error": {}}

    def run(pip_report, npm_report) -> int:
        (tmp_path / "pip.json").write_text(json.dumps(pip_report))
        (tmp_path / "npm.json").write_text(json.dumps(npm_report))
        return main(["auditcheck", str(tmp_path / "pip.json"), str(tmp_path / "npm.json")])

    assert run(pip, npm) == 1
    assert "django==4.2.0: GHSA-1 (fixed in 4.2.1)" in capsys.readouterr().err
    assert run({"dependencies": pip["dependencies"][1:]}, clean_npm) == 0
    assert "no fix yet: x==1: PYSEC-2" in capsys.readouterr().out
    assert run({"dependencies": []}, npm) == 1
    assert run({"dependencies": []}, refused) == 2  # unreachable: fails, never passes
    assert "405 Method Not Allowed" in capsys.readouterr().err


# Error reports ----------------------------------------------------------------------------------

SENTRY_SCRIPT = """
import sys
import django
django.setup()
import sentry_sdk
from django.conf import settings
active = sentry_sdk.get_client().is_active()
print("active" if active else "inactive")
if active:
    try:
        raise RuntimeError("upstream refused key " + sys.argv[1] + " with Bearer " + sys.argv[1])
    except RuntimeError:
        sentry_sdk.capture_exception()
    sentry_sdk.flush(timeout=10)
"""


def test_sentry_reports_only_when_configured_and_never_a_key(tmp_path):
    import gzip
    import subprocess
    import sys
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import brotli

    received: list[bytes] = []

    class Sentry(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["content-length"]))
            encoding = self.headers.get("content-encoding", "")
            body = gzip.decompress(body) if encoding == "gzip" else body
            received.append(brotli.decompress(body) if encoding == "br" else body)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sentry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret = "sk-cp-v1-" + "3fa9" * 16
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base = {**os.environ, "SECRET_KEY": "x", "PYTHONPATH": root,
            "DJANGO_SETTINGS_MODULE": "portal.settings"}  # fmt: skip
    base.pop("SENTRY_DSN", None)
    try:
        off = subprocess.run([sys.executable, "-c", SENTRY_SCRIPT, secret], env=base,
                             cwd=root, capture_output=True, text=True)  # fmt: skip
        dsn = f"http://public@127.0.0.1:{server.server_address[1]}/1"
        on = subprocess.run([sys.executable, "-c", SENTRY_SCRIPT, secret],
                            env={**base, "SENTRY_DSN": dsn}, cwd=root,
                            capture_output=True, text=True)  # fmt: skip
    finally:
        server.shutdown()
    assert off.stdout.strip() == "inactive", off.stderr
    assert on.stdout.strip() == "active", on.stderr
    assert received, "no event reached the loopback Sentry"
    sent = b"".join(received).decode()
    assert "upstream refused key sk-cp-v1-3fa" in sent and "RuntimeError" in sent
    assert secret not in sent and secret[12:] not in sent
