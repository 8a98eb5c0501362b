"""The gateway over HTTP (pytest-django's `live_server`): the official `openrouter` SDK's chat
calls (non-streaming and streaming) and models list with only the server URL and key changed,
its typed error on 402; 50 concurrent requests against a pool that covers exactly N worst
cases; a client that goes away mid-stream."""

from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from django.utils import timezone
from openrouter import OpenRouter, errors, utils

from credits.gateway import prompt_bound
from credits.models import Hold, LedgerAccount, UsageEvent
from credits.services.usage import authorization_estimate
from credits.verify import ledger_verify

from .fake_upstream import WORDS, FakeUpstream
from .test_gateway import MESSAGES, fake_cost, make_upstream

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore:.*DEPRECATED:DeprecationWarning"),
]

NO_RETRY = utils.RetryConfig("none", utils.BackoffStrategy(1, 1, 1, 1), False)


@pytest.fixture(autouse=True)
def _no_sdk_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith("OPENROUTER_"):
            monkeypatch.delenv(name)


@pytest.fixture
def fake():
    server = FakeUpstream()
    yield server
    server.close()


@pytest.fixture
def fake_openrouter():
    server = FakeUpstream(openrouter=True)
    yield server
    server.close()


def sdk(live_server, secret: str) -> OpenRouter:
    return OpenRouter(
        api_key=secret,
        server_url=live_server.url + "/api/v1",
        retry_config=NO_RETRY,
        timeout_ms=20_000,
    )


def pool(tenant) -> LedgerAccount:
    return LedgerAccount.objects.get(organization=tenant.org, kind=LedgerAccount.Kind.POOL)


def test_sdk_chat_send(live_server, tenant, fake, prices):
    tenant.grant("5")
    make_upstream(tenant, fake)
    _, secret = tenant.key("usage")
    result = sdk(live_server, secret).chat.send(
        model="gpt-4o", messages=MESSAGES, max_tokens=200, session_id="sdk-conv"
    )
    assert result.model == "gpt-4o"
    assert result.choices[0].message.content == "".join(WORDS)
    assert Decimal(str(result.usage.cost)) == fake_cost("gpt-4o")
    event = UsageEvent.objects.get(organization=tenant.org, event_id=result.id)
    assert event.conversation_id == "sdk-conv" and event.cost == fake_cost("gpt-4o")
    generation = sdk(live_server, secret).generations.get_generation(id=result.id)
    assert generation.data.id == result.id


def test_sdk_chat_stream(live_server, tenant, fake_openrouter, prices):
    tenant.grant("5")
    make_upstream(tenant, fake_openrouter, models=("openai/",), kind="openrouter")
    _, secret = tenant.key("usage")
    stream = sdk(live_server, secret).chat.send(
        model="openai/gpt-4o", messages=MESSAGES, max_tokens=200, stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(WORDS)
    assert {c.model for c in chunks} == {"openai/gpt-4o"}
    assert Decimal(str(chunks[-1].usage.cost)) == Decimal(fake_openrouter.cost)
    assert UsageEvent.objects.get(organization=tenant.org).cost == Decimal(fake_openrouter.cost)
    assert pool(tenant).held == 0


def test_sdk_402_raises_payment_required(live_server, tenant, fake, prices):
    tenant.grant("0.001")
    make_upstream(tenant, fake)
    _, secret = tenant.key("usage")
    client = sdk(live_server, secret)
    with pytest.raises(errors.PaymentRequiredResponseError) as raised:
        client.chat.send(model="gpt-4o", messages=MESSAGES, max_tokens=50_000)
    assert raised.value.data.error.code == 402
    with pytest.raises(errors.PaymentRequiredResponseError):
        list(client.chat.send(model="gpt-4o", messages=MESSAGES, max_tokens=50_000, stream=True))
    assert not fake.requests and not Hold.objects.exists()


def test_sdk_models_list(live_server, tenant, fake, prices):
    make_upstream(tenant, fake, models=("gpt-4o", "openai/"))
    _, secret = tenant.key("usage")
    listed = sdk(live_server, secret).models.list().result
    ids = [m.id for m in listed.data]
    assert "gpt-4o" in ids and "openai/gpt-4o" in ids
    assert listed.total_count == len(ids)


@pytest.mark.usefixtures("many_connections")
def test_50_concurrent_requests_never_spend_past_the_pool(live_server, tenant, fake_openrouter,
                                                         prices):  # fmt: skip
    """Each request's worst case is W; the pool holds exactly N x W and the upstream reports a
    cost of exactly W: N requests are served, the others answer 402, the pool ends at zero."""
    n, max_tokens = 7, 500
    worst = authorization_estimate(
        model="openai/gpt-4o",
        prompt_tokens=prompt_bound({"messages": MESSAGES}),
        max_tokens=max_tokens,
        at=timezone.now(),
    )
    tenant.grant(n * worst)
    make_upstream(tenant, fake_openrouter, models=("openai/",), kind="openrouter")
    fake_openrouter.cost = str(worst)
    fake_openrouter.delay = 0.2  # holds overlap
    _, secret = tenant.key("usage")

    def one(i: int) -> int:
        response = httpx.post(
            f"{live_server.url}/api/v1/chat/completions",
            json={
                "model": "openai/gpt-4o",
                "messages": MESSAGES,
                "max_tokens": max_tokens,
                "stream": i % 2 == 0,
            },  # fmt: skip
            headers={"Authorization": f"Bearer {secret}"},
            timeout=60,
        )
        return response.status_code

    with ThreadPoolExecutor(max_workers=50) as executor:
        statuses = list(executor.map(one, range(50)))
    assert sorted(set(statuses)) == [200, 402], statuses
    assert statuses.count(200) == n
    account = pool(tenant)
    assert account.balance == 0 and account.held == 0
    assert not Hold.objects.filter(status=Hold.Status.PENDING).exists()
    events = UsageEvent.objects.filter(organization=tenant.org)
    assert events.count() == n and sum(e.cost for e in events) == n * worst
    assert ledger_verify(tenant.org.pk) == []


def test_client_gone_mid_stream_is_charged_and_leaves_no_hold(live_server, tenant, fake, prices):
    tenant.grant("5")
    make_upstream(tenant, fake)
    fake.chunk_delay = 0.3  # the client leaves after the first chunk, long before the end
    _, secret = tenant.key("usage")
    with httpx.stream(
        "POST",
        f"{live_server.url}/api/v1/chat/completions",
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
    # charged the prompt bound and what was streamed before the server noticed, not the usage
    assert event.metadata.get("usage_estimated") is True
    assert event.completion_tokens < len("".join(WORDS).encode())
    assert event.cost > 0 and pool(tenant).held == 0
    assert pool(tenant).balance == Decimal("5") - event.cost


def test_typescript_sdk_chat_stream_and_402(live_server, tenant, fake, prices):
    """`openrouter_sdk_ts_gateway.mjs` with `node`: chat, streamed chat, a typed 402."""
    from .test_openrouter_sdk_ts import ROOT, node

    tenant.grant("0.5")  # a 120,000-token worst case of gpt-4o (1.2 credits) does not fit
    make_upstream(tenant, fake)
    _, secret = tenant.key("usage")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OPENROUTER_")}
    environment.update(
        PORTAL_API_URL=f"{live_server.url}/api/v1", PORTAL_USAGE_KEY=secret, PORTAL_MODEL="gpt-4o"
    )
    script = Path(__file__).with_name("openrouter_sdk_ts_gateway.mjs")
    run = subprocess.run([node(), str(script)], cwd=ROOT, env=environment, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    cost = fake_cost("gpt-4o")
    assert out["chat"]["model"] == "gpt-4o" and out["chat"]["content"] == "".join(WORDS)
    assert Decimal(str(out["chat"]["cost"])) == cost
    assert out["stream"]["text"] == "".join(WORDS) and out["stream"]["model"] == "gpt-4o"
    assert Decimal(str(out["stream"]["cost"])) == cost and len(out["stream"]["ids"]) == 1
    assert out["refused"] == {"status": 402, "type": "insufficient_credits"}
    ids = {out["chat"]["id"], out["stream"]["ids"][0]}
    assert set(UsageEvent.objects.values_list("event_id", flat=True)) == ids
    assert len(fake.requests) == 2 and pool(tenant).held == 0
