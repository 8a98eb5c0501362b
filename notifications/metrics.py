"""Metrics of the outbox (served at `/metrics`, `portal.metrics`).

`portal_outbox_deliveries_total{channel, outcome}`: delivery attempts of outbox messages
(`channel`: webhook, email, sms), by what the attempt left the message as: `delivered`,
`retrying` (failed, another attempt is due), `failed` (refused for good) or `dead` (the last
attempt failed). Counted by the Celery workers in the shared cache (Redis), so that the web
process that answers the scrape sees every worker's counts."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily

from portal.metrics import shared_counter_inc, shared_counters_get

from .models import OutboxMessage

OUTCOMES = {
    OutboxMessage.Status.DELIVERED: "delivered",
    OutboxMessage.Status.PENDING: "retrying",
    OutboxMessage.Status.FAILED: "failed",
    OutboxMessage.Status.DEAD: "dead",
}


def _name(channel: str, outcome: str) -> str:
    return f"outbox_deliveries:{channel}:{outcome}"


def delivery_count(*, channel: str, status: str) -> None:
    """Count one delivery attempt of a `channel` message that left it in `status`."""
    shared_counter_inc(_name(channel, OUTCOMES.get(status, status)))


class DeliveriesCollector:
    def collect(self):
        names = {
            _name(c, o): (c, o) for c in OutboxMessage.Channel.values for o in OUTCOMES.values()
        }
        counts = shared_counters_get(list(names))
        family = CounterMetricFamily(
            "portal_outbox_deliveries",
            "Delivery attempts of outbox messages (webhooks, e-mail, SMS), by outcome.",
            labels=["channel", "outcome"],
        )
        for name, (channel, outcome) in names.items():
            family.add_metric([channel, outcome], counts.get(name, 0))
        yield family
