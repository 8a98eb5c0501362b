"""A large export through a real Celery worker on Redis (the `worker` fixture of
tests/test_celery_worker.py): queued by the API, run by the worker with progress, its file
stored and downloadable."""

from __future__ import annotations

import csv
import io
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts.roles import Role
from billing.models import ExportJob
from credits.services import Attribution, UsageInput, usage_record_many

from ..test_celery_worker import worker  # noqa: F401 - the fixture

ROWS = 3000


@pytest.mark.django_db(transaction=True)
def test_a_large_export_runs_on_a_real_worker_with_progress(tenant, worker, settings):  # noqa: F811
    settings.BILLING_EXPORT_STREAM_MAX_ROWS = 1000
    settings.BILLING_EXPORT_QUEUE = worker.queue
    tenant.grant("1000")
    tenant.allocate("1000")
    alice = tenant.member(Role.MEMBER, email="alice@acme.test", team=tenant.team)
    key, _ = tenant.key("usage", team=None, user=alice)
    start = timezone.now() - timedelta(days=2)
    for batch in range(ROWS // 1000):
        events = [
            UsageInput(id=f"w-{batch}-{i}", model="openai/gpt-4o", cost=Decimal("0.001"),
                       occurred_at=start + timedelta(seconds=batch * 1000 + i))
            for i in range(1000)
        ]  # fmt: skip
        usage_record_many(attribution=Attribution.of_key(key), events=events)
    _, secret = tenant.key("management")
    client = tenant.client(secret)
    assert client.get("/api/v1/billing/exports/usage.csv").status_code == 413  # too large

    response = client.post(
        "/api/v1/billing/exports",
        {"kind": "usage", "format": "csv", "pseudonymize": True},
        format="json",
    )
    assert response.status_code == 201, response.content
    job_id = response.json()["id"]
    seen = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/billing/exports/{job_id}").json()
        seen.append((job["status"], job["progress"]))
        if job["status"] in ("done", "failed"):
            break
        time.sleep(0.05)
    assert job["status"] == "done", (job, seen[-5:])
    assert job["progress"] == 100 and job["row_count"] == ROWS
    progress = [p for _, p in seen]
    assert progress == sorted(progress), seen  # never goes back
    stored = ExportJob.objects.get(public_id=job_id)
    assert stored.started_at and stored.finished_at and stored.file.name.endswith(".csv")

    download = client.get(job["download_url"])
    assert download.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(download.streaming_content).decode())))
    assert len(rows) == ROWS and rows[0]["event_id"] == "w-0-0"
    assert sum(Decimal(r["cost"]) for r in rows) == Decimal("3.000")
    members = {r["member"] for r in rows}
    assert len(members) == 1 and members.pop().startswith("member-")  # pseudonymized
