"""GET /activity's selector: one aggregate per request, whatever the number of events."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.access import Principal
from credits.activity import activity_days, activity_for
from credits.services import usage_record_many
from credits.services.usage import Attribution, UsageInput


def record(key, count: int, prefix: str) -> None:
    yesterday = datetime.now(UTC) - timedelta(days=1)
    events = [
        UsageInput(
            id=f"{prefix}{i}",
            model=f"vendor/model-{i % 3}",
            prompt_tokens=10,
            completion_tokens=4,
            cached_tokens=2,
            reasoning_tokens=1,
            cost=Decimal("0.001"),
            occurred_at=yesterday - timedelta(days=i % 5),
        )
        for i in range(count)
    ]
    usage_record_many(attribution=Attribution.of_key(key), events=events)


def queries(principal) -> tuple[int, list]:
    with CaptureQueriesContext(connection) as captured:
        rows = activity_for(principal)
    return len(captured), rows


@pytest.mark.django_db
def test_activity_reads_a_constant_number_of_queries(tenant):
    tenant.grant("10")
    key, _ = tenant.key("usage")
    principal = Principal.for_key(key)
    record(key, 3, "a")
    few, rows = queries(principal)
    record(key, 60, "b")
    many, rows = queries(principal)
    assert many == few <= 3
    assert sum(r.requests for r in rows) == 63 and len(rows) == 15  # 5 days x 3 models
    assert rows[0].date == activity_days()[1] and rows[0].provider == "vendor"
    assert sum(r.prompt_tokens for r in rows) == 630 and sum(r.cached_tokens for r in rows) == 126
