"""The notifications API: webhooks (secret once, 400 in the one error format with nothing
written), notifications (own, mark read), preferences; and the pages (bell, secret once)."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import AuditEvent
from notifications.models import Notification, WebhookEndpoint
from notifications.services import notify

pytestmark = pytest.mark.django_db

URL = "https://hooks.example.test/in"


@pytest.fixture
def api(tenant):
    _, secret = tenant.key("management", user=tenant.owner)
    return tenant.client(secret)


def test_create_answers_the_secret_once_and_lists_without_it(api, tenant):
    response = api.post("/api/v1/webhooks", {"url": URL, "events": ["balance.low"]}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["secret"].startswith("whsec_") and body["url"] == URL
    assert body["events"] == ["balance.low"] and body["id"]
    listed = api.get("/api/v1/webhooks").json()["data"]
    assert [w["id"] for w in listed] == [body["id"]] and "secret" not in listed[0]
    assert "secret" not in api.get(f"/api/v1/webhooks/{body['id']}").json()
    rotated = api.post(f"/api/v1/webhooks/{body['id']}/rotate-secret").json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != body["secret"]
    assert WebhookEndpoint.objects.get().secret == rotated["secret"]
    assert AuditEvent.objects.filter(action__startswith="webhook.").count() == 2


@pytest.mark.parametrize(
    "body, field",
    [
        ({"url": "ftp://hooks.example.test/in", "events": ["balance.low"]}, "url"),
        ({"url": "http://169.254.169.254/", "events": ["balance.low"]}, "url"),
        ({"url": "http://10.0.0.5/hook", "events": ["balance.low"]}, "url"),
        ({"url": "http://127.0.0.1:9/hook", "events": ["balance.low"]}, "url"),
        ({"url": "https://portal.example.test/x", "events": ["balance.low"]}, "url"),
        ({"url": URL, "events": ["budget.nope"]}, "events"),
        ({"url": URL, "events": []}, "events"),
        ({"url": URL}, "events"),
        ({"url": URL, "events": ["balance.low"], "secret": "mine"}, "secret"),
    ],
)
def test_bad_input_is_400_and_writes_nothing(api, settings, body, field):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    settings.PORTAL_BASE_URL = "https://portal.example.test"
    response = api.post("/api/v1/webhooks", body, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == 400 and error["metadata"]["type"] == "validation_error"
    assert any(k.startswith(field) for k in error["metadata"]["errors"]), error
    assert not WebhookEndpoint.objects.exists()


def test_patch_refuses_a_private_url(api, settings):
    created = api.post("/api/v1/webhooks", {"url": URL, "events": ["balance.low"]}, format="json")
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    webhook = created.json()["id"]
    response = api.patch(f"/api/v1/webhooks/{webhook}", {"url": "http://[::1]/x"}, format="json")
    assert response.status_code == 400
    assert WebhookEndpoint.objects.get().url == URL


def test_test_event_and_deliveries_and_resend(api, tenant):
    webhook = api.post(
        "/api/v1/webhooks", {"url": URL, "events": ["balance.low"]}, format="json"
    ).json()["id"]
    sent = api.post(f"/api/v1/webhooks/{webhook}/test")
    assert sent.status_code == 202 and sent.json()["type"] == "webhook.test"
    deliveries = api.get(f"/api/v1/webhooks/{webhook}/deliveries").json()["data"]
    assert [d["message_id"] for d in deliveries] == [sent.json()["message_id"]]
    again = api.post(f"/api/v1/webhooks/{webhook}/deliveries/{deliveries[0]['message_id']}/resend")
    assert again.status_code == 202 and again.json()["status"] == "pending"
    missing = api.post(f"/api/v1/webhooks/{webhook}/deliveries/msg_nope/resend")
    assert missing.status_code == 404
    assert api.delete(f"/api/v1/webhooks/{webhook}").status_code == 204
    assert api.get(f"/api/v1/webhooks/{webhook}").status_code == 404


def test_notifications_list_read_and_read_all(api, tenant):
    data = {"budget": "team-research", "threshold": 90, "window_start": "2025-06-01T00:00:00Z"}
    notify(organization=tenant.org, type="budget.threshold_crossed", data=data)
    notify(organization=tenant.org, type="balance.low", data={"available": "1"})
    rows = api.get("/api/v1/notifications").json()["results"]
    assert [r["type"] for r in rows] == ["balance.low", "budget.threshold_crossed"]
    crossed = rows[1]
    assert (crossed["budget"], crossed["threshold"], crossed["window_start"]) == (
        "team-research", 90, "2025-06-01T00:00:00Z",
    )  # fmt: skip
    assert rows[0]["budget"] is None and rows[0]["created_at"]
    read = api.post(f"/api/v1/notifications/{crossed['id']}/read")
    assert read.status_code == 200 and read.json()["read_at"]
    assert len(api.get("/api/v1/notifications", {"unread": "true"}).json()["results"]) == 1
    assert api.post("/api/v1/notifications/read-all").json() == {"marked": 1}
    assert not Notification.objects.filter(read_at__isnull=True).exists()
    assert api.post("/api/v1/notifications/not-a-uuid/read").status_code == 404


def test_preferences_get_and_put(api, tenant):
    prefs = api.get("/api/v1/notification-preferences").json()
    assert prefs["preferences"]["balance.low"] == {"in_app": True, "email": True, "sms": False}
    response = api.put(
        "/api/v1/notification-preferences",
        {"phone": "+14155550123", "preferences": {"balance.low": {"sms": True, "email": False}}},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["preferences"]["balance.low"] == {
        "in_app": True, "email": False, "sms": True,
    }  # fmt: skip
    bad = api.put(
        "/api/v1/notification-preferences", {"preferences": {"nope": {"sms": True}}}, format="json"
    )
    assert bad.status_code == 400
    bad_phone = api.put("/api/v1/notification-preferences", {"phone": "12"}, format="json")
    assert bad_phone.status_code == 400
    notify(organization=tenant.org, type="balance.low", data={"available": "1"})
    from notifications.models import OutboxMessage

    assert list(OutboxMessage.objects.values_list("channel", "target")) == [("sms", "+14155550123")]


def test_pages_bell_and_secret_once(tenant):
    page = Client()
    page.force_login(tenant.owner)
    notify(organization=tenant.org, type="balance.low", data={"available": "1"})
    bell = page.get("/o/acme/notifications/bell/")
    assert b'data-testid="unread-count">1<' in bell.content
    dashboard = page.get("/o/acme/notifications/")
    assert dashboard.status_code == 200 and b"bell-widget" in dashboard.content
    assert dashboard.content.count(b"<h1") == 1
    created = page.post(
        "/o/acme/webhooks/new/", {"url": URL, "events": ["balance.low"], "description": ""}
    )
    assert created.status_code == 302
    shown = page.get(created.url)
    secret = WebhookEndpoint.objects.get().secret
    assert secret.encode() in shown.content
    assert secret.encode() not in page.get(created.url).content  # once
    refused = page.post(
        "/o/acme/webhooks/new/", {"url": "ftp://x.test/", "events": ["balance.low"]}
    )
    assert refused.status_code == 200 and b"errorlist" in refused.content
    assert WebhookEndpoint.objects.count() == 1
