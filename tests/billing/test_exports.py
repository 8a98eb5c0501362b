"""Exports of usage and ledger history (billing.exports): the contents of each format for known
events, pseudonyms, who may export what, streaming in constant memory, export jobs, bad input."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from pypdf import PdfReader
from rest_framework.test import APIClient

from accounts.models import AuditEvent, Organization
from accounts.roles import Role
from accounts.services import apikey_create, team_member_set
from billing.exports import FOCUS_COLUMNS
from billing.models import ExportJob, PseudonymSecret
from credits.models import LedgerAccount
from credits.services import Attribution, UsageInput, usage_record, usage_record_many
from credits.services.ledger import ledger_reverse
from notifications.crypto import decrypt
from tests.conftest import SYSTEM, make_tenant

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)
INJECTION = '=HYPERLINK("http://evil.test","x")'


def spend(key, event_id, cost, *, at=T0, **fields):
    fields.setdefault("model", "openai/gpt-4o")
    fields.setdefault("prompt_tokens", 1200)
    fields.setdefault("completion_tokens", 300)
    return usage_record(
        attribution=Attribution.of_key(key),
        event=UsageInput(id=event_id, cost=Decimal(cost), occurred_at=at, **fields),
    )


class Acme:
    """Acme in Berlin time: 100 credits, 40 with Research; Alice (member, a usage key of her own
    on Research), Bob (billing role); a team key; three known events."""

    def __init__(self, tenant):
        self.t = tenant
        self.org = tenant.org
        Organization.objects.filter(pk=self.org.pk).update(time_zone="Europe/Berlin")
        self.org.refresh_from_db()
        tenant.grant("100")
        tenant.allocate("40")
        self.alice = tenant.member(Role.MEMBER, email="alice@acme.test")
        self.bob = tenant.member(Role.BILLING, email="bob@acme.test")
        self.alice_key, _ = apikey_create(
            organization=self.org,
            name="alice-laptop",
            kind="usage",
            team=tenant.team,
            user=self.alice,
            actor=SYSTEM,
        )
        self.team_key, _ = apikey_create(
            organization=self.org, name="research-ci", kind="usage", team=tenant.team, actor=SYSTEM
        )
        spend(
            self.alice_key,
            "ev-1",
            "0.0125",
            conversation_id="conv-1",
            cached_tokens=200,
            reasoning_tokens=100,
        )
        spend(
            self.team_key,
            "ev-2",
            "0.5",
            at=T0 + timedelta(hours=13, minutes=30),
            model="anthropic/claude-sonnet-4",
            operation="embedding",
            prompt_tokens=5000,
            completion_tokens=0,
            conversation_id=INJECTION,
        )
        spend(self.team_key, "ev-later", "1", at=T0 + timedelta(days=20))
        self.owner_client = self.client_for()

    def client_for(self, **key_terms) -> APIClient:
        """A management key of the whole organization (default), or bound as `key_terms` say."""
        _, secret = apikey_create(
            organization=self.org, name="exporter", kind="management", actor=SYSTEM, **key_terms
        )
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        return client


@pytest.fixture
def acme(tenant) -> Acme:
    return Acme(tenant)


def body(response) -> str:
    content = b"".join(response.streaming_content) if response.streaming else response.content
    return content.decode()


def rows_of(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(body(response))))


MARCH = {"from": "2026-03-01", "to": "2026-03-03"}


def test_usage_csv_has_the_known_events_in_utc_with_decimal_costs(acme):
    response = acme.owner_client.get("/api/v1/billing/exports/usage.csv", MARCH)
    assert response.status_code == 200, body(response)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="usage-acme-')
    rows = rows_of(response)
    assert [r["event_id"] for r in rows] == ["ev-1", "ev-2"]  # oldest first, ev-later outside
    first, second = rows
    assert first == {
        "occurred_at": "2026-03-01T10:00:00Z",
        "event_id": "ev-1",
        "model": "openai/gpt-4o",
        "operation": "chat",
        "prompt_tokens": "1200",
        "completion_tokens": "300",
        "cached_tokens": "200",
        "reasoning_tokens": "100",
        "images": "0",
        "cost": "0.012500000000",
        "cost_source": "reported",
        "reversed": "false",
        "team": "research",
        "key": "alice-laptop",
        "member": "alice@acme.test",
        "conversation_id": "conv-1",
    }
    assert second["occurred_at"] == "2026-03-01T23:30:00Z"
    assert second["cost"] == "0.500000000000" and second["member"] == ""
    # Client text that a spreadsheet would run is written as text.
    assert second["conversation_id"] == "'" + INJECTION


def test_period_bounds_are_read_in_the_organizations_time_zone(acme):
    # 2026-03-02 00:00 in Berlin is 2026-03-01 23:00 UTC: ev-2 (23:30 UTC) is on the 2nd there.
    response = acme.owner_client.get(
        "/api/v1/billing/exports/usage.csv", {"from": "2026-03-02", "to": "2026-03-03"}
    )
    assert [r["event_id"] for r in rows_of(response)] == ["ev-2"]
    response = acme.owner_client.get(
        "/api/v1/billing/exports/usage.csv",
        {"from": "2026-03-01T00:00:00Z", "to": "2026-03-01T23:00:00+00:00"},
    )
    assert [r["event_id"] for r in rows_of(response)] == ["ev-1"]


def test_usage_json_streams_decimal_strings_and_filters(acme):
    response = acme.owner_client.get(
        "/api/v1/billing/exports/usage.json", {**MARCH, "operation": "embedding"}
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    data = json.loads(body(response))
    assert data["kind"] == "usage" and data["organization"] == "acme"
    assert data["time_zone"] == "Europe/Berlin" and data["count"] == 1
    assert data["filters"] == {
        "start": "2026-02-28T23:00:00Z",
        "end": "2026-03-02T23:00:00Z",
        "operation": "embedding",
    }
    (event,) = data["data"]
    assert event["cost"] == "0.500000000000" and isinstance(event["cost"], str)
    assert event["prompt_tokens"] == 5000 and event["reversed"] is False
    assert event["conversation_id"] == INJECTION  # JSON needs no spreadsheet escape


def test_focus_csv_follows_focus_1_2(acme):
    response = acme.owner_client.get("/api/v1/billing/exports/usage.focus.csv", MARCH)
    assert response.status_code == 200, body(response)
    reader = csv.DictReader(io.StringIO(body(response)))
    assert tuple(reader.fieldnames) == FOCUS_COLUMNS
    first, second = list(reader)
    assert first["BilledCost"] == first["EffectiveCost"] == first["ListCost"] == "0.012500000000"
    assert first["ContractedCost"] == "0.012500000000"
    assert first["BillingCurrency"] == "USD" and first["ChargeCategory"] == "Usage"
    assert first["ChargeFrequency"] == "Usage-Based" and first["PricingCategory"] == "Standard"
    assert first["ChargePeriodStart"] == "2026-03-01T10:00:00Z"
    assert first["ChargePeriodEnd"] == "2026-03-01T11:00:00Z"
    # The billing period is the calendar month in Berlin, in UTC.
    assert first["BillingPeriodStart"] == "2026-02-28T23:00:00Z"
    assert first["BillingPeriodEnd"] == "2026-03-31T22:00:00Z"
    assert first["ServiceName"] == "openai/gpt-4o" and first["ProviderName"] == "openai"
    assert first["ServiceCategory"] == "AI and Machine Learning"
    assert first["ResourceId"] == acme.alice_key.hash and first["ResourceName"] == "alice-laptop"
    assert first["ConsumedQuantity"] == "1500" and first["ConsumedUnit"] == "Tokens"
    assert first["SubAccountId"] == "research" and first["BillingAccountId"] == "acme"
    assert json.loads(first["Tags"]) == {
        "member": "alice@acme.test",
        "operation": "chat",
        "team": "research",
    }
    assert first["x_EventId"] == "ev-1" and first["x_OccurredAt"] == "2026-03-01T10:00:00Z"
    assert second["ServiceName"] == "anthropic/claude-sonnet-4"
    assert second["ConsumedQuantity"] == "5000" and second["x_Operation"] == "embedding"
    assert second["x_ConversationId"] == "'" + INJECTION


def test_focus_leaves_out_reversed_usage_which_csv_marks(acme):
    event = acme.org.usage.get(event_id="ev-2")
    ledger_reverse(txn=event.transaction, memo="refund", actor=SYSTEM)
    focus = rows_of(acme.owner_client.get("/api/v1/billing/exports/usage.focus.csv", MARCH))
    assert [r["x_EventId"] for r in focus] == ["ev-1"]
    plain = rows_of(acme.owner_client.get("/api/v1/billing/exports/usage.csv", MARCH))
    assert [(r["event_id"], r["reversed"]) for r in plain] == [("ev-1", "false"), ("ev-2", "true")]


def _expected_pseudonym(org, user) -> str:
    secret = bytes.fromhex(decrypt(PseudonymSecret.objects.get(organization=org).secret_encrypted))
    return "member-" + hmac.new(secret, str(user.pk).encode(), hashlib.sha256).hexdigest()[:12]


def test_pseudonyms_are_stable_secret_at_rest_and_differ_between_organizations(acme):
    query = {**MARCH, "pseudonymize": "true"}
    first = rows_of(acme.owner_client.get("/api/v1/billing/exports/usage.csv", query))
    again = json.loads(body(acme.owner_client.get("/api/v1/billing/exports/usage.json", query)))
    alice = _expected_pseudonym(acme.org, acme.alice)
    assert first[0]["member"] == alice == again["data"][0]["member"]
    assert re.fullmatch(r"member-[0-9a-f]{12}", alice)
    assert first[0]["key"].startswith("key-") and first[0]["key"] == again["data"][0]["key"]
    assert "alice" not in body(acme.owner_client.get("/api/v1/billing/exports/usage.csv", query))
    stored = PseudonymSecret.objects.get(organization=acme.org)
    assert len(decrypt(stored.secret_encrypted)) == 64
    assert decrypt(stored.secret_encrypted) not in stored.secret_encrypted  # encrypted at rest
    assert (
        AuditEvent.objects.filter(
            organization=acme.org, action="billing.pseudonym_secret_created"
        ).count()
        == 1
    )

    # Alice in a second organization: another secret, another pseudonym.
    globex = make_tenant("globex")
    from accounts.models import Membership

    Membership.objects.create(organization=globex.org, user=acme.alice, role=Role.MEMBER)
    team_member_set(team=globex.team, user=acme.alice, actor=SYSTEM)  # charged to her team
    globex.grant("10")
    globex.allocate("5")
    key, _ = apikey_create(
        organization=globex.org, name="k", kind="usage", user=acme.alice, actor=SYSTEM
    )
    spend(key, "g-1", "0.1")
    _, secret = globex.key("management")
    rows = rows_of(globex.client(secret).get("/api/v1/billing/exports/usage.csv", query))
    assert rows[0]["member"] == _expected_pseudonym(globex.org, acme.alice) != alice
    focus = rows_of(acme.owner_client.get("/api/v1/billing/exports/usage.focus.csv", query))
    assert focus[0]["x_Member"] == alice and focus[0]["ResourceId"] == first[0]["key"]


def test_a_member_bound_key_exports_only_its_members_rows(acme):
    # Bob (billing) has a management key bound to himself; Alice's usage is not his.
    bob_key = acme.client_for(user=acme.bob)
    response = bob_key.get("/api/v1/billing/exports/usage.csv", MARCH)
    assert response.status_code == 200 and rows_of(response) == []
    _, secret = apikey_create(
        organization=acme.org, name="bob-usage", kind="usage", user=acme.bob, actor=SYSTEM
    )
    bob_usage = APIClient()
    bob_usage.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    # A usage key never holds billing:read.
    assert bob_usage.get("/api/v1/billing/exports/usage.csv").status_code == 403
    own = Attribution.of_key(
        apikey_create(
            organization=acme.org, name="bob-own", kind="usage", user=acme.bob, actor=SYSTEM
        )[0]
    )
    usage_record(
        attribution=own,
        event=UsageInput(id="ev-bob", model="openai/gpt-4o", cost=Decimal("0.2"), occurred_at=T0),
    )
    assert [
        r["event_id"] for r in rows_of(bob_key.get("/api/v1/billing/exports/usage.csv", MARCH))
    ] == ["ev-bob"]
    response = bob_key.post(
        "/api/v1/billing/exports",
        {"kind": "usage", "format": "json", "filters": MARCH},
        format="json",
    )
    assert response.status_code == 201
    job = ExportJob.objects.get(public_id=response.json()["id"])
    assert job.api_key is not None and job.api_key.user == acme.bob


def test_who_may_export(acme):
    member = APIClient()
    member.force_login(acme.alice)
    member.credentials(HTTP_X_ORGANIZATION="acme")
    assert member.get("/api/v1/billing/exports/usage.csv").status_code == 403
    billing = APIClient()
    billing.force_login(acme.bob)
    billing.credentials(HTTP_X_ORGANIZATION="acme")
    assert billing.get("/api/v1/billing/exports/usage.csv", MARCH).status_code == 200
    assert billing.get("/api/v1/billing/exports/ledger.csv").status_code == 200
    # A team-bound management key holds no billing scope (organization-only).
    team_key = acme.client_for(team=acme.t.team)
    assert team_key.get("/api/v1/billing/exports/usage.csv").status_code == 403
    # A management key without credits:read exports usage but not the ledger.
    narrow = acme.client_for(scopes=["billing:read", "usage:read"])
    assert narrow.get("/api/v1/billing/exports/usage.csv").status_code == 200
    response = narrow.get("/api/v1/billing/exports/ledger.csv")
    assert response.status_code == 403 and "credits:read" in response.json()["error"]["message"]


def test_streamed_export_reads_through_a_server_side_cursor(acme, settings):
    """The rows are fetched in chunks through a cursor while the response is consumed; the
    statements sent do not grow with the rows."""
    settings.BILLING_EXPORT_CHUNK_ROWS = 10
    events = [
        UsageInput(
            id=f"bulk-{i}",
            model="openai/gpt-4o",
            cost=Decimal("0.01"),
            occurred_at=T0 + timedelta(minutes=i),
        )
        for i in range(120)
    ]
    usage_record_many(attribution=Attribution.of_key(acme.team_key), events=events)

    def statements(query) -> tuple[list[str], int]:
        with CaptureQueriesContext(connection) as captured:
            response = acme.owner_client.get("/api/v1/billing/exports/usage.csv", query)
            lines = body(response).count("\n")
        sent = [q["sql"] for q in captured.captured_queries if "last_used_at" not in q["sql"]]
        return sent, lines

    few = statements({"from": "2026-03-01T10:00:00Z", "to": "2026-03-01T10:05:00Z"})
    many = statements(MARCH)
    assert few[1] == 1 + 6 and many[1] == 1 + 122
    assert len(few[0]) == len(many[0])
    assert sum(1 for sql in many[0] if re.match(r'DECLARE "\w+" NO SCROLL CURSOR', sql)) == 1

    response = acme.owner_client.get("/api/v1/billing/exports/usage.csv", MARCH)
    stream = iter(response.streaming_content)
    head = b"".join(next(stream) for _ in range(3))  # the header and two rows
    assert head.count(b"\n") == 3
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_cursors WHERE NOT is_holdable OR is_holdable")
        open_cursors = cursor.fetchone()[0]
    assert open_cursors >= 1, "rows must come from a server-side cursor, not one fetch"
    assert b"".join(stream).count(b"\n") == 120


def test_too_many_rows_to_stream_is_413_and_a_job_makes_them(acme, settings):
    settings.BILLING_EXPORT_STREAM_MAX_ROWS = 1
    response = acme.owner_client.get("/api/v1/billing/exports/usage.csv", MARCH)
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["metadata"] == {"type": "export_too_large", "limit": 1}
    assert "POST /api/v1/billing/exports" in error["message"]


def test_an_export_job_runs_reports_progress_and_downloads(
    acme, settings, django_capture_on_commit_callbacks
):
    settings.BILLING_EXPORT_CHUNK_ROWS = 20  # progress every 2 rows
    events = [
        UsageInput(
            id=f"job-{i}",
            model="openai/gpt-4o",
            cost=Decimal("0.01"),
            occurred_at=T0 + timedelta(minutes=i),
        )
        for i in range(40)
    ]
    usage_record_many(attribution=Attribution.of_key(acme.team_key), events=events)
    request = {"kind": "usage", "format": "csv", "filters": MARCH}
    with CaptureQueriesContext(connection) as captured:
        with django_capture_on_commit_callbacks(execute=True):
            response = acme.owner_client.post("/api/v1/billing/exports", request, format="json")
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["status"] == "queued" and created["download_url"] is None
    progress = [
        int(m.group(1))
        for q in captured.captured_queries
        for m in [re.search(r'UPDATE "billing_exportjob" SET "progress" = (\d+)', q["sql"])]
        if m
    ]
    assert len(progress) >= 10 and progress == sorted(progress) and progress[-1] == 99
    job = acme.owner_client.get(f"/api/v1/billing/exports/{created['id']}").json()
    assert job["status"] == "done" and job["progress"] == 100 and job["row_count"] == 42
    assert job["download_url"].endswith(f"/api/v1/billing/exports/{created['id']}/download")
    download = acme.owner_client.get(job["download_url"])
    assert download.status_code == 200 and download["Content-Type"] == "text/csv; charset=utf-8"
    streamed = acme.owner_client.get("/api/v1/billing/exports/usage.csv", MARCH)
    assert body(download) == body(streamed)
    listed = acme.owner_client.get("/api/v1/billing/exports").json()["results"]
    assert [j["id"] for j in listed] == [created["id"]]
    assert AuditEvent.objects.filter(
        organization=acme.org,
        action="billing.export_requested",
        target_id=str(ExportJob.objects.get().pk),
    ).exists()


def test_a_job_is_its_requesters_own(acme, other_tenant, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = acme.owner_client.post(
            "/api/v1/billing/exports", {"kind": "ledger", "format": "pdf"}, format="json"
        )
    job = response.json()["id"]
    assert acme.owner_client.get(f"/api/v1/billing/exports/{job}").status_code == 200
    # Another key of the same organization, another organization's key, a session: 404.
    _, secret = other_tenant.key("management")
    for client in (acme.client_for(), other_tenant.client(secret)):
        for path in (f"/api/v1/billing/exports/{job}", f"/api/v1/billing/exports/{job}/download"):
            response = client.get(path)
            assert response.status_code == 404
            assert response.json()["error"]["metadata"]["type"] == "not_found"


def test_a_job_not_done_is_409_and_a_requester_who_lost_the_right_fails_it(acme):
    from billing.services.exports import export_job_run

    bob = acme.client_for(user=acme.bob)
    response = bob.post(
        "/api/v1/billing/exports", {"kind": "usage", "format": "csv"}, format="json"
    )
    job = ExportJob.objects.get(public_id=response.json()["id"])
    response = bob.get(f"/api/v1/billing/exports/{job.public_id}/download")
    assert response.status_code == 409
    assert response.json()["error"]["metadata"]["type"] == "export_not_ready"
    # Bob became a member (no billing:read) before the job ran: it fails, nothing is written.
    acme.org.memberships.filter(user=acme.bob).update(role=Role.MEMBER)
    job = export_job_run(job_id=job.pk)
    assert job.status == "failed" and "billing:read" in job.error and not job.file


def test_ledger_csv_has_running_balances_from_the_opening_balance(acme):
    pool = LedgerAccount.objects.get(organization=acme.org, kind="pool")
    team = LedgerAccount.objects.get(organization=acme.org, kind="team")
    response = acme.owner_client.get("/api/v1/billing/exports/ledger.csv", {"account": team.pk})
    assert response.status_code == 200, body(response)
    rows = rows_of(response)
    # Allocation of 40, then three debits (0.0125, 0.5, 1).
    assert [r["transaction_kind"] for r in rows] == ["allocation", "usage", "usage", "usage"]
    assert [r["amount"] for r in rows] == [
        "40.000000000000",
        "-0.012500000000",
        "-0.500000000000",
        "-1.000000000000",
    ]
    assert [r["running_balance"] for r in rows] == [
        "40.000000000000",
        "39.987500000000",
        "39.487500000000",
        "38.487500000000",
    ]
    assert rows[0]["amount"][0] != "'" and rows[1]["amount"].startswith("-")  # numbers, not text
    assert rows[0]["created_at"].endswith("Z") and rows[0]["account_kind"] == "team"
    # From a later time: the opening balance carries; a kind filter keeps the account's balances.
    later = acme.owner_client.get(
        "/api/v1/billing/exports/ledger.json",
        {"from": (T0 + timedelta(days=1)).isoformat(), "transaction_kind": "usage"},
    )
    data = json.loads(body(later))
    by_account = {(r["account"], r["running_balance"]) for r in data["data"]}
    assert (team.pk, "38.487500000000") in by_account
    assert all(r["transaction_kind"] == "usage" for r in data["data"])
    team.refresh_from_db()
    pool.refresh_from_db()
    last_team = [r for r in data["data"] if r["account"] == team.pk][-1]
    assert Decimal(last_team["running_balance"]) == team.balance


def test_pdf_summaries_read_back(acme, settings):
    settings.BILLING_EXPORT_PDF_ROWS = 1
    response = acme.owner_client.get("/api/v1/billing/exports/usage.pdf", MARCH)
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    text = "\n".join(
        p.extract_text() for p in PdfReader(io.BytesIO(b"".join(response.streaming_content))).pages
    )
    assert "Usage summary" in text and "Acme" in text
    assert "0.512500" in text  # the total of the two March events
    assert "anthropic/claude-sonnet-4" in text and "openai/gpt-4o" not in text  # top 1 only
    assert "1 more not shown" in text
    response = acme.owner_client.get("/api/v1/billing/exports/ledger.pdf")
    text = "\n".join(
        p.extract_text() for p in PdfReader(io.BytesIO(b"".join(response.streaming_content))).pages
    )
    assert "Ledger summary" in text and "Page 1 of" in text


@pytest.mark.parametrize(
    ("path", "query", "field"),
    [
        ("usage.csv", {"from": "yesterday"}, "from"),
        ("usage.csv", {"from": "2026-02-30"}, "from"),
        ("usage.csv", {"from": "2026-03-02", "to": "2026-03-01"}, "to"),
        ("usage.csv", {"from": "2026-03-01", "to": "2026-03-01"}, "to"),
        ("usage.xlsx", {}, "format"),
        ("ledger.focus.csv", {}, "format"),
        ("usage.csv", {"operation": "dance"}, "operation"),
        ("usage.csv", {"member": "nobody@acme.test"}, "member"),
        ("usage.csv", {"colour": "red"}, "colour"),
        ("usage.csv", {"min_cost": "lots"}, "min_cost"),
        ("usage.csv", {"pseudonymize": "perhaps"}, "pseudonymize"),
        ("ledger.csv", {"account": "987654321"}, "account"),
        ("ledger.csv", {"team": "research"}, "team"),
        ("usage.csv", {"account": "1"}, "account"),
    ],
)
def test_bad_input_is_400_and_writes_nothing(acme, path, query, field):
    audit = AuditEvent.objects.count()
    response = acme.owner_client.get(f"/api/v1/billing/exports/{path}", query)
    assert response.status_code == 400, body(response)
    error = response.json()["error"]
    assert error["metadata"]["type"] == "validation_error" and field in error["metadata"]["errors"]
    assert not ExportJob.objects.exists() and not PseudonymSecret.objects.exists()
    assert AuditEvent.objects.count() == audit


@pytest.mark.parametrize(
    "request_body",
    [
        {"kind": "usage", "format": "xlsx"},
        {"kind": "invoices", "format": "csv"},
        {"kind": "ledger", "format": "focus.csv"},
        {"kind": "usage", "format": "csv", "filters": {"from": "2026-03-05", "to": "2026-03-01"}},
        {"kind": "usage", "format": "csv", "filters": {"to": "not a date"}},
        {"kind": "usage", "format": "csv", "pseudonymize": "yes please"},
        {"kind": "usage", "format": "csv", "filters": "from=2026"},
        {"kind": "usage", "format": "csv", "extra": 1},
    ],
)
def test_bad_job_requests_are_400_and_write_nothing(acme, request_body):
    audit = AuditEvent.objects.count()
    response = acme.owner_client.post("/api/v1/billing/exports", request_body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["metadata"]["type"] == "validation_error"
    assert not ExportJob.objects.exists() and AuditEvent.objects.count() == audit
