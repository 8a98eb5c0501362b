"""Prometheus metrics (prometheus-client) served at `/metrics`.

Three kinds, by where they are counted:
- In the web process: requests by route, method and status, and their latency
  (`portal.middleware.RequestContextMiddleware`); usage events recorded and refused, and credits
  spent (`credits.metrics`, counted when the metering path commits). Under gunicorn each worker
  counts its own: set `PROMETHEUS_MULTIPROC_DIR` to an empty directory (emptied at every start)
  and every worker writes there, and a scrape, whichever worker answers it, adds them up
  (prometheus-client's multiprocess mode; `portal/gunicorn.conf.py` removes a dead worker's
  live gauges).
- Shared counters in the cache (Redis): what Celery workers count on other machines (outbox
  deliveries by outcome): `shared_counter_inc` and `shared_counters_get`.
- Read at scrape time (`scrape_collector_register`; apps register theirs in `ready()`): holds
  open, the Celery queue depth, the last ledger verification. Each is one cheap query.

`/metrics` answers 404 unless `METRICS_TOKEN` is set, then 401 without
`Authorization: Bearer <METRICS_TOKEN>`.
"""

from __future__ import annotations

import hmac
import logging
import os

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector

logger = logging.getLogger(__name__)

HTTP_REQUESTS = Counter(
    "portal_http_requests",
    "HTTP requests answered, by route (the URL pattern), method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "portal_http_request_duration_seconds",
    "Time to answer a request (to the first byte of a streamed body), by route and method.",
    ["route", "method"],
)

_scrape_collectors: list = []


def scrape_collector_register(collector) -> None:
    """Add a collector (an object with `collect()` yielding prometheus_client metric families)
    read at every scrape. Called from the apps' `ready()`."""
    if collector not in _scrape_collectors:
        _scrape_collectors.append(collector)


# Counters in the shared cache ----------------------------------------------------------------

SHARED_PREFIX = "metrics:"


def shared_counter_inc(name: str, amount: int = 1) -> None:
    """Add `amount` to the shared counter `name` (a cache key under `metrics:`, no expiry). A
    cache outage loses the count, never the caller's work (logged)."""
    key = SHARED_PREFIX + name
    try:
        cache.add(key, 0, timeout=None)
        cache.incr(key, amount)
    except Exception:  # counting must not fail the caller
        logger.warning("metrics: could not count %s in the cache", name, exc_info=True)


def shared_counters_get(names: list[str]) -> dict[str, int]:
    """{name: count} of the shared counters that exist."""
    found = cache.get_many([SHARED_PREFIX + n for n in names])
    return {k.removeprefix(SHARED_PREFIX): int(v) for k, v in found.items()}


def shared_value_set(name: str, value) -> None:
    """Store a value read at scrape time (e.g. the last ledger verification), no expiry."""
    try:
        cache.set(SHARED_PREFIX + name, value, timeout=None)
    except Exception:  # storing a metric must not fail the caller
        logger.warning("metrics: could not store %s in the cache", name, exc_info=True)


def shared_value_get(name: str, default=None):
    return cache.get(SHARED_PREFIX + name, default)


# Celery's queues ------------------------------------------------------------------------------

# kombu's Redis transport keeps a queue's messages of priority 0, 3, 6 and 9 in four lists.
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
_redis_clients: dict = {}


def _queue_depth(broker_url: str, queue: str) -> int:
    if broker_url.startswith(("redis://", "rediss://")):
        import redis

        client = _redis_clients.get(broker_url)
        if client is None:
            client = redis.Redis.from_url(broker_url, socket_timeout=1, socket_connect_timeout=1)
            _redis_clients[broker_url] = client
        with client.pipeline(transaction=False) as pipe:
            for suffix in _PRIORITY_SUFFIXES:
                pipe.llen(queue + suffix)
            return sum(pipe.execute())
    from kombu import Connection

    with Connection(broker_url, connect_timeout=1) as connection:
        return connection.default_channel.queue_declare(queue=queue, passive=True).message_count


class CeleryQueueCollector:
    """`portal_celery_queue_depth{queue}`: messages waiting in each Celery queue of the broker
    (the default queue, and the exports' queue when it has its own). Absent without a broker
    (the demo's eager tasks); a broker that does not answer shows as
    `portal_celery_broker_up 0`."""

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        broker = settings.CELERY_BROKER_URL
        if not broker:
            return
        queues = {settings.CELERY_TASK_DEFAULT_QUEUE, getattr(settings, "BILLING_EXPORT_QUEUE", "")}
        depth = GaugeMetricFamily(
            "portal_celery_queue_depth", "Messages waiting in a Celery queue.", labels=["queue"]
        )
        up = 1
        for queue in sorted(q for q in queues if q):
            try:
                depth.add_metric([queue], _queue_depth(broker, queue))
            except Exception:  # the broker's outage is a sample, not a failed scrape
                logger.warning("metrics: the Celery broker did not answer", exc_info=True)
                up = 0
                break
        yield depth
        yield GaugeMetricFamily(
            "portal_celery_broker_up", "Whether the Celery broker answered the scrape.", value=up
        )


scrape_collector_register(CeleryQueueCollector())


# The scrape ----------------------------------------------------------------------------------


class _ThisProcess:
    """The default registry (this process's counters) inside a scrape's registry."""

    def collect(self):
        yield from REGISTRY.collect()


def registry_for_scrape() -> CollectorRegistry:
    """A registry of everything a scrape shows: every worker's counters (multiprocess mode) or
    this process's, then the scrape-time collectors."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    for collector in _scrape_collectors:
        registry.register(collector)
    return registry


def _authorized(request: HttpRequest, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """GET /metrics: the Prometheus text format. 404 when `METRICS_TOKEN` is unset (metrics
    off), 401 without the right bearer token."""
    token = settings.METRICS_TOKEN
    if not token:
        return HttpResponse("Not found.\n", status=404, content_type="text/plain")
    if not _authorized(request, token):
        response = HttpResponse("A bearer token is required.\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(
        generate_latest(registry_for_scrape()), content_type=CONTENT_TYPE_PLAIN_0_0_4
    )
