"""Metrics of the credits app (served at `/metrics`, `portal.metrics`).

Counted on the metering path, without a statement more (`usage_outcomes_count`, `usage_refused`):
- `portal_usage_events_recorded_total`: usage events recorded (new ones, not retries), counted
  when their transaction commits;
- `portal_usage_events_refused_total{reason}`: refused events, by the error's `metadata.type`
  (`insufficient_credits`, `budget_exceeded`, `validation_error`, `idempotency_conflict`, ...);
- `portal_credits_spent_total`: the credits (USD) of the recorded events; a float, as every
  Prometheus sample: for graphs and alerts, never for accounting (the ledger is the record).

Read at scrape time (`CreditsCollector`, one indexed query and one cache read):
- `portal_holds_open` and `portal_holds_open_credits`: pending holds, their count and amount;
- `portal_ledger_verify_mismatches` and `portal_ledger_verify_timestamp_seconds`: the last
  ledger verification (the hourly task or `manage.py ledger_verify`), absent before the first.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from django.db import transaction
from django.db.models import Count, Sum
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily

from portal.errors import ApplicationError
from portal.metrics import shared_value_get, shared_value_set

USAGE_RECORDED = Counter("portal_usage_events_recorded", "Usage events recorded (committed).")
USAGE_REFUSED = Counter(
    "portal_usage_events_refused", "Usage events refused, by reason.", ["reason"]
)
CREDITS_SPENT = Counter(
    "portal_credits_spent", "Credits (USD) spent by recorded usage events (committed)."
)

LEDGER_VERIFY = "ledger_verify"


def usage_recorded(cost, events: int) -> None:
    """Count `events` recorded events of `cost` credits in all when the current transaction
    commits."""

    def count():
        USAGE_RECORDED.inc(events)
        CREDITS_SPENT.inc(float(cost))

    transaction.on_commit(count)


def usage_refused(error: ApplicationError | str) -> None:
    """Count a refused event by its error (or the error's type)."""
    USAGE_REFUSED.labels(error if isinstance(error, str) else error.type).inc()


def usage_outcomes_count(outcomes: Iterable) -> None:
    """Count a batch's outcomes: results (recorded when `created`, counted at commit) and
    refusals (errors)."""
    recorded, cost = 0, 0
    for outcome in outcomes:
        if isinstance(outcome, ApplicationError):
            usage_refused(outcome)
        elif outcome.created:
            recorded += 1
            cost += outcome.event.cost
    if recorded:
        usage_recorded(cost, recorded)


def ledger_verify_result_store(mismatches: int) -> None:
    """Keep the last ledger verification's outcome for the scrape (in the shared cache)."""
    shared_value_set(LEDGER_VERIFY, {"mismatches": mismatches, "at": time.time()})


class CreditsCollector:
    """Gauges read at scrape time (see the module docstring)."""

    def collect(self):
        from .models import Hold

        holds = Hold.objects.filter(status=Hold.Status.PENDING).aggregate(
            n=Count("id"), amount=Sum("amount")
        )
        yield GaugeMetricFamily("portal_holds_open", "Pending holds.", value=holds["n"])
        yield GaugeMetricFamily(
            "portal_holds_open_credits",
            "Credits (USD) reserved by pending holds.",
            value=float(holds["amount"] or 0),
        )
        last = shared_value_get(LEDGER_VERIFY)
        if last is not None:
            yield GaugeMetricFamily(
                "portal_ledger_verify_mismatches",
                "Mismatches found by the last ledger verification (0: every balance verified).",
                value=last["mismatches"],
            )
            yield GaugeMetricFamily(
                "portal_ledger_verify_timestamp_seconds",
                "When the last ledger verification ran (Unix time).",
                value=last["at"],
            )
