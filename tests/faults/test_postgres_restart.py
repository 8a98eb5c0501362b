"""PostgreSQL restarted (`pg_ctl restart -m fast`) in the middle of a burst of usage events posted
by several clients to two servers on the same database: the production one (gunicorn with
uvicorn workers, `portal.asgi`, connections from a pool per process) and gunicorn's sync WSGI
workers without the pool (`DATABASE_POOL_MAX_SIZE=0`: a persistent connection, `CONN_MAX_AGE`
60, checked before reuse: `CONN_HEALTH_CHECKS`). Each
client retries an event with the same id until it gets an answer that is not a 5xx: every event
is charged exactly once, every 5xx is cured by its retry, no request that began once the database
was back failed, the ledger and the audit log verify.

The cluster is the test's own (tests/faults/conftest.py), never the machine's shared one."""

from __future__ import annotations

import threading
import time
from collections import Counter
from decimal import Decimal

import httpx
import psycopg
import pytest

from .conftest import Server, database_setup, manage, server_env

EVENTS = 320
CLIENTS = 8  # half on each server
RESTART_AFTER = 80  # answered events before the restart
DEADLINE = 60  # seconds for the whole burst, retries included


def event(n: int) -> dict:
    return {
        "id": f"pg-restart-{n}",
        "model": "gpt-4o",
        "prompt_tokens": 1000,
        "completion_tokens": 100,
    }


@pytest.fixture
def portal(postgres_cluster, tmp_path):
    """A migrated database on the test's cluster with the org `faults` (100 credits) and a usage
    key; an ASGI and a WSGI server on it (one worker each). Yields (cluster, database url, env,
    {"asgi": server, "wsgi": server}, key secret)."""
    url = postgres_cluster.create_database("portal_faults")
    env = server_env(url, CACHE_URL="locmemcache://")
    secret = database_setup(env, "100")
    servers = {
        "asgi": Server(env, tmp_path / "asgi.log", workers=1),
        "wsgi": Server(
            {**env, "DATABASE_POOL_MAX_SIZE": "0"}, tmp_path / "wsgi.log", workers=1, asgi=False
        ),
    }
    try:
        for server in servers.values():
            server.wait(secret)
        yield postgres_cluster, url, env, servers, secret
    finally:
        for kind, server in servers.items():
            server.stop()
            print(kind, server.log.read_text()[-3000:])  # shown with a failure


def test_every_event_is_charged_once_across_a_database_restart(portal):
    cluster, url, env, servers, secret = portal
    pending = list(reversed(range(EVENTS)))
    lock = threading.Lock()
    answered = 0
    restart_began = threading.Event()
    restarted_at: list[float] = []
    tries: dict[int, list[tuple[str, float, object]]] = {}  # n -> [(server, started, outcome)]
    final: dict[int, httpx.Response] = {}
    deadline = time.monotonic() + DEADLINE

    def client(kind: str) -> None:
        nonlocal answered
        headers = {"Authorization": f"Bearer {secret}"}
        with httpx.Client(base_url=servers[kind].url, headers=headers, timeout=10) as http:
            while time.monotonic() < deadline:
                with lock:
                    if not pending:
                        return
                    n = pending.pop()
                while time.monotonic() < deadline:  # the same id until a non-5xx answer
                    started = time.monotonic()
                    try:
                        response = http.post("/api/v1/credits/usage", json=event(n))
                        outcome: object = response.status_code
                    except httpx.TransportError as exc:  # cut mid-request by the restart
                        response, outcome = None, type(exc).__name__
                    tries.setdefault(n, []).append((kind, started, outcome))
                    if response is not None and response.status_code < 500:
                        final[n] = response
                        break
                    time.sleep(0.05)
                with lock:
                    answered += 1
                    if answered == RESTART_AFTER:
                        restart_began.set()

    kinds = ["asgi", "wsgi"] * (CLIENTS // 2)
    threads = [threading.Thread(target=client, args=(kind,)) for kind in kinds]
    for thread in threads:
        thread.start()
    assert restart_began.wait(timeout=DEADLINE), "the burst never reached the restart"
    cluster.restart()  # -m fast: open connections cut, transactions in flight rolled back
    restarted_at.append(time.monotonic())
    for thread in threads:
        thread.join(timeout=DEADLINE + 10)
    assert not any(t.is_alive() for t in threads)

    # Every event answered, first time (201) or as a retry of a first time that committed (200).
    assert len(final) == EVENTS, f"{EVENTS - len(final)} events never got a non-5xx answer"
    statuses = Counter(r.status_code for r in final.values())
    assert set(statuses) <= {200, 201}, statuses
    failed = {n: t for n, t in tries.items() if len(t) > 1}
    print(f"final answers {dict(statuses)}; needed a retry:",
          {k: Counter(o for t in failed.values() for kk, _, o in t[:-1] if kk == k)
           for k in servers})  # fmt: skip
    # The failures the servers answered were the database's, told as such: 503, retry.
    answered_5xx = Counter(
        o for t in tries.values() for _, _, o in t if isinstance(o, int) and o >= 500
    )
    assert set(answered_5xx) <= {503}, answered_5xx
    # The restart hit requests (of the WSGI server at least: a new connection of a sync worker
    # is refused while the cluster starts up; the ASGI server's pool waits up to
    # DATABASE_POOL_TIMEOUT for one, so only its requests in flight at the restart fail, and
    # some runs have none).
    assert any(t[0][0] == "wsgi" for t in failed.values()), "no wsgi request failed"
    # Requests that began once the database was back were not failed by dead connections (WSGI:
    # checked before their first use in a request; ASGI: the pool's, checked as it lends them).
    after = [(k, o) for t in tries.values() for k, began, o in t if began > restarted_at[0] + 0.05]
    assert not [(k, o) for k, o in after if o not in (200, 201)], after

    # Exactly once: one usage event and one usage transaction per id, the pool down by their sum.
    with psycopg.connect(url.replace("postgres://", "postgresql://", 1)) as conn:
        rows = conn.execute(
            "SELECT event_id, cost, transaction_id FROM credits_usageevent"
            " WHERE event_id LIKE 'pg-restart-%%'"
        ).fetchall()
        usage_transactions = conn.execute(
            "SELECT count(*), count(DISTINCT idempotency_key) FROM credits_ledgertransaction"
            " WHERE kind = 'usage'"
        ).fetchone()
        balance = conn.execute(
            "SELECT a.balance FROM credits_ledgeraccount a JOIN accounts_organization o"
            " ON o.id = a.organization_id WHERE o.slug = 'faults' AND a.kind = 'pool'"
        ).fetchone()[0]
    assert sorted(r[0] for r in rows) == sorted(event(n)["id"] for n in range(EVENTS))
    assert len({r[2] for r in rows}) == EVENTS and None not in {r[2] for r in rows}
    assert usage_transactions == (EVENTS, EVENTS)
    charged = sum((r[1] for r in rows), Decimal(0))
    assert balance == Decimal("100") - charged
    costs = {r[0]: r[1] for r in rows}
    for n, response in final.items():  # each answer (first or retried) is the stored event's
        assert Decimal(response.json()["cost"]) == costs[f"pg-restart-{n}"]

    verified = manage(env, "ledger_verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    audited = manage(env, "audit_verify")
    assert audited.returncode == 0, audited.stdout + audited.stderr
