"""The gateway under the ASGI server of production (gunicorn with one uvicorn worker, serving
`portal.asgi`, against the test database): the official SDK's streamed and plain chat calls, many
streams open at once in one worker process with fewer database connections than streams,
upstream failures before and during a stream, and a client that goes away mid-stream. The same
request path as under WSGI (test_gateway_sdk.py); here the stream runs on the event loop with
httpx's async client."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import pytest
from django.db import connection
from openrouter import OpenRouter, errors

from credits.models import Hold, UsageEvent
from credits.verify import ledger_verify
from tests.conftest import TEST_FIELD_ENCRYPTION_KEY

from .fake_upstream import WORDS, FakeUpstream
from .test_gateway import MESSAGES, fake_cost, make_upstream
from .test_gateway_sdk import NO_RETRY, pool

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore:.*DEPRECATED:DeprecationWarning"),
]

ROOT = Path(__file__).resolve().parents[2]
STREAMS = 24  # open at once in the one worker process
POOL = 4  # database connections of that process: an open stream holds none


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def asgi_server(transactional_db, tmp_path_factory):
    """`gunicorn portal.asgi:application -k uvicorn_worker.UvicornWorker -w 1`, as the README's
    production section runs it, on a free loopback port. Yields its base URL. One per test: the
    server's caches (prices, keys) must not outlive the rows a test's flush removes."""
    yield from _serve(tmp_path_factory, pool=POOL)


@pytest.fixture
def asgi_server_one_connection(transactional_db, tmp_path_factory):
    """`asgi_server` with one pooled database connection, waited for at most 1 s."""
    yield from _serve(tmp_path_factory, pool=1, pool_timeout=1)


def _serve(tmp_path_factory, *, pool: int, pool_timeout: float = 10):
    port = _free_port()
    log = tmp_path_factory.mktemp("asgi") / "server.log"
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DEBUG": "0",
        "SECRET_KEY": "asgi-test-secret-key",
        "SECURE_SSL_REDIRECT": "0",
        "FIELD_ENCRYPTION_KEY": TEST_FIELD_ENCRYPTION_KEY,
        "GATEWAY_ALLOW_PRIVATE_UPSTREAMS": "1",
        "CACHE_URL": "redis://127.0.0.1:6379/15?key_prefix=asgi-" + str(port),
        "CELERY_BROKER_URL": "",
        "DATABASE_POOL_MAX_SIZE": str(pool),
        "DATABASE_POOL_TIMEOUT": str(pool_timeout),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "portal.asgi:application",
         "-k", "uvicorn_worker.UvicornWorker", "-w", "1", "-b", f"127.0.0.1:{port}",
         "--graceful-timeout", "2", "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "/api/v1/models", timeout=1)
            break
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("the ASGI server did not start:\n" + log.read_text())
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=20)
    print(log.read_text())  # shown with a failure


@pytest.fixture
def fake():
    server = FakeUpstream()
    yield server
    server.close()


def sdk(url: str, secret: str) -> OpenRouter:
    return OpenRouter(
        api_key=secret, server_url=url + "/api/v1", retry_config=NO_RETRY, timeout_ms=30_000
    )


def post(url: str, secret: str, **body) -> httpx.Response:
    return httpx.post(
        url + "/api/v1/chat/completions",
        json={"messages": MESSAGES, "max_tokens": 100, **body},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    )


def test_sdk_chat_streamed_and_plain(asgi_server, tenant, fake, prices):
    tenant.grant("0.01")  # two holds of 200 tokens of gpt-4o, not one of 100,000
    make_upstream(tenant, fake)
    _, secret = tenant.key("usage")
    client = sdk(asgi_server, secret)

    chunks = list(client.chat.send(model="gpt-4o", messages=MESSAGES, max_tokens=200, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(WORDS)
    assert Decimal(str(chunks[-1].usage.cost)) == fake_cost("gpt-4o")
    assert fake.requests[-1]["body"]["stream_options"] == {"include_usage": True}

    result = client.chat.send(model="gpt-4o", messages=MESSAGES, max_tokens=200, user="u-1")
    assert result.choices[0].message.content == "".join(WORDS)

    events = UsageEvent.objects.filter(organization=tenant.org)
    assert sorted(e.event_id for e in events) == sorted([chunks[0].id, result.id])
    assert all(e.cost == fake_cost("gpt-4o") for e in events)
    assert pool(tenant).held == 0
    assert pool(tenant).balance == Decimal("0.01") - 2 * fake_cost("gpt-4o")
    with pytest.raises(errors.PaymentRequiredResponseError):
        list(client.chat.send(model="gpt-4o", messages=MESSAGES, max_tokens=100_000,
                              stream=True))  # fmt: skip
    assert ledger_verify(tenant.org.pk) == []


def test_one_worker_process_serves_many_streams_at_once(asgi_server, tenant, fake, prices):
    """Every stream waits at the upstream, after its first chunk, until STREAMS of them are open:
    a worker that held one stream at a time could never get there (the barrier breaks after its
    timeout and the test fails), nor one whose streams each kept one of its POOL connections."""
    tenant.grant("50")
    make_upstream(tenant, fake)
    fake.barrier = threading.Barrier(STREAMS, timeout=20)
    _, secret = tenant.key("usage")

    def one(_):
        response = post(asgi_server, secret, model="gpt-4o", stream=True)
        return response.status_code, response.text

    with ThreadPoolExecutor(max_workers=STREAMS) as executor:
        results = list(executor.map(one, range(STREAMS)))
    assert not fake.barrier.broken
    assert [status for status, _ in results] == [200] * STREAMS
    assert all(text.rstrip().endswith("data: [DONE]") for _, text in results)
    assert UsageEvent.objects.filter(organization=tenant.org).count() == STREAMS
    assert not Hold.objects.filter(status=Hold.Status.PENDING).exists()
    assert pool(tenant).held == 0 and ledger_verify(tenant.org.pk) == []


def test_plain_requests_waiting_for_the_upstream_hold_no_connection(asgi_server, tenant, fake,
                                                                     prices):  # fmt: skip
    """Non-streaming requests wait at the upstream until STREAMS of them are there: a worker
    whose requests kept one of its POOL connections each while they waited could never get
    there (the others wait for a connection for their hold)."""
    tenant.grant("50")
    make_upstream(tenant, fake)
    fake.barrier = threading.Barrier(STREAMS, timeout=20)
    _, secret = tenant.key("usage")

    with ThreadPoolExecutor(max_workers=STREAMS) as executor:
        results = list(executor.map(lambda _: post(asgi_server, secret, model="gpt-4o"),
                                    range(STREAMS)))  # fmt: skip
    assert not fake.barrier.broken
    assert [r.status_code for r in results] == [200] * STREAMS
    assert all(r.json()["choices"][0]["message"]["content"] == "".join(WORDS) for r in results)
    assert UsageEvent.objects.filter(organization=tenant.org).count() == STREAMS
    assert not Hold.objects.filter(status=Hold.Status.PENDING).exists()
    assert pool(tenant).held == 0 and ledger_verify(tenant.org.pk) == []


def test_upstream_failures_void_or_end_the_stream(asgi_server, tenant, fake, prices):
    tenant.grant("5")
    make_upstream(tenant, fake, models=("gpt-4o", "gpt-4o-mini"))
    fake.modes = {"gpt-4o": "500", "gpt-4o-mini": "drop"}
    _, secret = tenant.key("usage")

    refused = post(asgi_server, secret, model="gpt-4o", stream=True)
    assert refused.status_code == 502
    assert refused.json()["error"]["metadata"]["type"] == "upstream_error"
    assert Hold.objects.get(organization=tenant.org).status == Hold.Status.VOIDED

    dropped = post(asgi_server, secret, model="gpt-4o-mini", stream=True)
    assert dropped.status_code == 200
    assert '"error":{"code":502' in dropped.text and dropped.text.rstrip().endswith("[DONE]")
    event = UsageEvent.objects.get(organization=tenant.org)
    assert event.metadata["usage_estimated"] is True and event.cost > 0
    assert not Hold.objects.filter(status=Hold.Status.PENDING).exists()
    assert pool(tenant).held == 0 and ledger_verify(tenant.org.pk) == []


def test_client_gone_mid_stream_is_charged_and_leaves_no_hold(asgi_server, tenant, fake, prices):
    tenant.grant("5")
    make_upstream(tenant, fake)
    fake.chunk_delay = 0.3  # the client leaves after the first chunk, long before the end
    _, secret = tenant.key("usage")
    with httpx.stream(
        "POST",
        asgi_server + "/api/v1/chat/completions",
        json={"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 100, "stream": True},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                break  # the first chunk: go away
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        hold = Hold.objects.get(organization=tenant.org)
        if hold.status != Hold.Status.PENDING:
            break
        time.sleep(0.1)
    assert hold.status == Hold.Status.CAPTURED
    event = UsageEvent.objects.get(organization=tenant.org)
    assert event.metadata.get("usage_estimated") is True
    assert event.completion_tokens < len("".join(WORDS).encode())
    assert pool(tenant).held == 0 and pool(tenant).balance == Decimal("5") - event.cost


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_capture_the_database_cannot_take_is_retried_until_it_can(
    asgi_server_one_connection, tenant, fake, prices, stream
):
    """The worker's one connection is taken by a usage event waiting for the account's row
    (locked here) when the upstream answers: the capture gets no connection within the pool's
    timeout. The answer still goes out, without `usage.cost`, and the capture is made once the
    row is free, at the upstream's usage."""
    server = asgi_server_one_connection
    tenant.grant("5")
    make_upstream(tenant, fake)
    fake.barrier = threading.Barrier(2, timeout=20)  # the upstream answers when this test says
    _, secret = tenant.key("usage")
    account = pool(tenant)
    with ThreadPoolExecutor(max_workers=2) as executor:
        chat = executor.submit(post, server, secret, model="gpt-4o", stream=stream)
        deadline = time.monotonic() + 15
        while fake.barrier.n_waiting == 0:  # held, and at the upstream
            assert time.monotonic() < deadline and not chat.done(), chat.result()
            time.sleep(0.05)
        db = connection.settings_dict
        with psycopg.connect(
            host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"]
        ) as locker:
            locker.execute(
                "SELECT 1 FROM credits_ledgeraccount WHERE id = %s FOR UPDATE", [account.pk]
            )
            usage = executor.submit(
                httpx.post,
                server + "/api/v1/credits/usage",
                json={"id": "waits-for-the-row", "model": "gpt-4o", "prompt_tokens": 10},
                headers={"Authorization": f"Bearer {secret}"},
                timeout=30,
            )
            while not locker.execute(  # the usage event holds the connection, waiting
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                " AND wait_event_type = 'Lock'",
                [db["NAME"]],
            ).fetchone()[0]:
                assert time.monotonic() < deadline and not usage.done(), usage.result()
                time.sleep(0.05)
            fake.barrier.wait()
            answer = chat.result()
            hold = Hold.objects.get(organization=tenant.org)
            assert hold.status == Hold.Status.PENDING  # not captured while the row was locked
            locker.rollback()
        assert usage.result().status_code == 201
    assert answer.status_code == 200
    if stream:
        assert answer.text.rstrip().endswith("data: [DONE]")
        chunks = [json.loads(line[6:]) for line in answer.text.splitlines()
                  if line.startswith("data: {")]  # fmt: skip
        content = "".join(c["choices"][0]["delta"].get("content") or ""
                          for c in chunks if c["choices"])  # fmt: skip
        document = {"id": chunks[0]["id"], "usage": chunks[-1]["usage"]}
    else:
        document = answer.json()
        content = document["choices"][0]["message"]["content"]
    assert content == "".join(WORDS)
    assert "cost" not in document["usage"] and document["usage"]["prompt_tokens"] > 0
    deadline = time.monotonic() + 20
    while hold.status == Hold.Status.PENDING and time.monotonic() < deadline:
        time.sleep(0.1)
        hold.refresh_from_db()
    assert hold.status == Hold.Status.CAPTURED
    event = UsageEvent.objects.get(organization=tenant.org, event_id=document["id"])
    assert event.cost == fake_cost("gpt-4o") and hold.captured_amount == event.cost
    assert pool(tenant).held == 0 and ledger_verify(tenant.org.pk) == []
