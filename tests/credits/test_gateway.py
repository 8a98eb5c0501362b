"""The credit-aware gateway (issue 10): upstreams over the API, `POST /api/v1/chat/completions`
against loopback upstreams (OpenAI's contract and OpenRouter's), holds and captures through the
metering path, upstream failures, bad input, fallback, and `GET /api/v1/models`."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts.models import AuditEvent
from credits.gateway import prompt_bound
from credits.models import Hold, LedgerAccount, Upstream, UsageEvent
from credits.services.guardrails import guardrail_assign_keys, guardrail_create
from credits.services.prices import Tokens, cost_compute, price_for
from credits.services.upstreams import upstream_create
from credits.services.usage import authorization_estimate
from credits.verify import ledger_verify
from tests.conftest import SYSTEM

from .fake_upstream import (
    CACHED_TOKENS,
    COMPLETION_TOKENS,
    PROMPT_TOKENS,
    REASONING_TOKENS,
    WORDS,
    FakeUpstream,
)

MESSAGES = [{"role": "user", "content": "Say hello, in four tokens."}]


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


def make_upstream(tenant, fake, models=("gpt-4o", "gpt-4o-mini"), **kwargs) -> Upstream:
    fields = {"name": "fake", "kind": "openai_compatible", "timeout": 5, **kwargs}
    return upstream_create(
        organization=tenant.org,
        base_url=fake.url,
        models=list(models),
        api_key="sk-upstream-secret",
        actor=SYSTEM,
        **fields,
    )


def pool(tenant) -> LedgerAccount:
    return LedgerAccount.objects.get(organization=tenant.org, kind=LedgerAccount.Kind.POOL)


def chat(client, **body):
    return client.post("/api/v1/chat/completions", {"messages": MESSAGES, **body}, format="json")


def sse_events(response) -> list:
    text = b"".join(response.streaming_content).decode()
    events = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def fake_cost(model: str) -> Decimal:
    """What the price table charges for the fake upstream's reported usage."""
    tokens = Tokens(PROMPT_TOKENS, COMPLETION_TOKENS, CACHED_TOKENS, REASONING_TOKENS)
    return cost_compute(price_for(model, timezone.now()), tokens)


# Upstreams over the API -------------------------------------------------------------------------


def test_upstream_lifecycle_keeps_the_key_encrypted_and_write_only(tenant, prices):
    _, secret = tenant.key("management")
    client = tenant.client(secret)
    body = {
        "name": "OpenRouter",
        "kind": "openrouter",
        "base_url": "https://openrouter.ai/api/v1/",
        "api_key": "sk-or-very-secret",
        "models": ["openai/", "anthropic/claude-sonnet-4"],
        "timeout": 30,
    }
    response = client.post("/api/v1/upstreams", body, format="json")
    assert response.status_code == 201, response.content
    created = response.json()
    assert "sk-or-very-secret" not in response.content.decode()
    assert created["api_key_set"] is True
    assert created["base_url"] == "https://openrouter.ai/api/v1"
    upstream = Upstream.objects.get(public_id=created["id"])
    assert "sk-or-very-secret" not in upstream.api_key_encrypted
    assert upstream.api_key == "sk-or-very-secret"

    listed = client.get("/api/v1/upstreams").json()["data"]
    assert [u["id"] for u in listed] == [created["id"]]
    assert "sk-or" not in json.dumps(listed)

    patched = client.patch(
        f"/api/v1/upstreams/{created['id']}", {"timeout": 90, "enabled": False}, format="json"
    )
    assert patched.status_code == 200, patched.content
    assert patched.json()["timeout"] == 90 and patched.json()["enabled"] is False
    assert client.get(f"/api/v1/upstreams/{created['id']}").json()["timeout"] == 90

    assert client.delete(f"/api/v1/upstreams/{created['id']}").status_code == 204
    assert not Upstream.objects.filter(public_id=created["id"]).exists()
    actions = set(
        AuditEvent.objects.filter(
            organization=tenant.org, action__startswith="upstream."
        ).values_list("action", flat=True)
    )
    assert actions == {"upstream.created", "upstream.updated", "upstream.deleted"}
    assert not AuditEvent.objects.filter(after__icontains="sk-or-very-secret").exists()


@pytest.mark.parametrize(
    "change",
    [
        {"base_url": "ftp://example.com/v1"},
        {"base_url": "https://user:pw@example.com/v1"},
        {"base_url": "not a url"},
        {"kind": "anthropic"},
        {"timeout": 0},
        {"timeout": 601},
        {"timeout": "soon"},
        {"models": []},
        {"models": "gpt-4o"},
        {"name": ""},
        {"colour": "blue"},
    ],
)
def test_upstream_bad_input_is_400_and_writes_nothing(tenant, change):
    _, secret = tenant.key("management")
    body = {"name": "x", "kind": "openai_compatible", "base_url": "https://api.openai.com/v1",
            "models": ["gpt-4o"], **change}  # fmt: skip
    response = tenant.client(secret).post("/api/v1/upstreams", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["metadata"]["type"] == "validation_error"
    assert not Upstream.objects.exists()


def test_upstream_on_a_private_address_is_refused_unless_allowed(tenant, settings):
    settings.GATEWAY_ALLOW_PRIVATE_UPSTREAMS = False
    _, secret = tenant.key("management")
    body = {"name": "local", "kind": "openai_compatible", "base_url": "http://127.0.0.1:11434/v1",
            "models": ["llama3"]}  # fmt: skip
    response = tenant.client(secret).post("/api/v1/upstreams", body, format="json")
    assert response.status_code == 400
    assert "base_url" in response.json()["error"]["metadata"]["errors"]
    settings.GATEWAY_ALLOW_PRIVATE_UPSTREAMS = True
    assert tenant.client(secret).post("/api/v1/upstreams", body, format="json").status_code == 201


def test_upstream_names_are_unique_and_another_organizations_is_404(tenant, other_tenant, fake):
    upstream = make_upstream(tenant, fake)
    _, secret = tenant.key("management")
    body = {"name": "fake", "kind": "openai_compatible", "base_url": fake.url, "models": ["x"]}
    response = tenant.client(secret).post("/api/v1/upstreams", body, format="json")
    assert response.status_code == 409
    _, other = other_tenant.key("management")
    client = other_tenant.client(other)
    for method in ("get", "patch", "delete"):
        response = getattr(client, method)(f"/api/v1/upstreams/{upstream.public_id}", {},
                                           format="json")  # fmt: skip
        assert response.status_code == 404, (method, response.content)
    assert client.get("/api/v1/upstreams").json()["data"] == []
    assert Upstream.objects.get(pk=upstream.pk).enabled


def test_upstreams_need_org_write(tenant, fake):
    _, usage_secret = tenant.key("usage")
    assert tenant.client(usage_secret).get("/api/v1/upstreams").status_code == 403


# Chat completions: the request path -------------------------------------------------------------


def test_chat_holds_calls_captures_and_records_the_usage_event(tenant, fake, prices):
    tenant.grant("10")
    make_upstream(tenant, fake)
    key, secret = tenant.key("usage", team=None)
    response = chat(tenant.client(secret), model="gpt-4o", max_tokens=100, user="u-42",
                    session_id="conv-7")  # fmt: skip
    assert response.status_code == 200, response.content
    body = response.json()
    cost = fake_cost("gpt-4o")
    assert body["model"] == "gpt-4o"
    assert body["id"].startswith("gen-")
    assert body["choices"][0]["message"]["content"] == "".join(WORDS)
    assert Decimal(str(body["usage"]["cost"])) == cost
    assert body["usage"]["prompt_tokens"] == PROMPT_TOKENS

    sent = fake.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["Authorization"] == "Bearer sk-upstream-secret"
    assert sent["body"]["model"] == "gpt-4o" and "session_id" not in sent["body"]

    event = UsageEvent.objects.get(organization=tenant.org, event_id=body["id"])
    assert (event.api_key, event.team, event.model, event.operation) == (key, None, "gpt-4o",
                                                                        "chat")  # fmt: skip
    assert (event.prompt_tokens, event.completion_tokens, event.cached_tokens,
            event.reasoning_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS, CACHED_TOKENS,
                                        REASONING_TOKENS)  # fmt: skip
    assert event.cost == cost and event.cost_source == "price_table"
    assert event.conversation_id == "conv-7"
    assert event.metadata["upstream"] == "fake" and event.metadata["user"] == "u-42"
    assert isinstance(event.metadata["latency_ms"], int)
    hold = Hold.objects.get(organization=tenant.org, idempotency_key=body["id"])
    assert hold.status == Hold.Status.CAPTURED and hold.captured_amount == cost
    account = pool(tenant)
    assert account.balance == Decimal("10") - cost and account.held == 0
    generation = tenant.client(secret).get(f"/api/v1/generation?id={body['id']}")
    assert generation.status_code == 200
    assert Decimal(str(generation.json()["data"]["total_cost"])) == cost
    assert ledger_verify(tenant.org.pk) == []


def test_chat_streams_chunks_asks_for_usage_and_charges_it(tenant, fake, prices):
    tenant.grant("10")
    make_upstream(tenant, fake)
    _, secret = tenant.key("usage")
    response = chat(tenant.client(secret), model="gpt-4o-mini", max_tokens=50, stream=True)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    chunks = sse_events(response)
    assert fake.requests[0]["body"]["stream_options"] == {"include_usage": True}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "".join(WORDS)
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and {c["model"] for c in chunks} == {"gpt-4o-mini"}
    usage = chunks[-1]["usage"]
    cost = fake_cost("gpt-4o-mini")
    assert Decimal(str(usage["cost"])) == cost and chunks[-1]["choices"] == []
    event = UsageEvent.objects.get(organization=tenant.org, event_id=ids.pop())
    assert event.cost == cost and event.completion_tokens == COMPLETION_TOKENS
    assert pool(tenant).held == 0 and pool(tenant).balance == Decimal("10") - cost


def test_openrouter_upstream_charges_its_reported_cost(tenant, fake_openrouter, prices):
    tenant.grant("10")
    make_upstream(tenant, fake_openrouter, models=("openai/",), kind="openrouter")
    fake_openrouter.cost = "0.004321"
    _, secret = tenant.key("usage")
    for stream in (False, True):
        response = chat(tenant.client(secret), model="openai/gpt-4o", max_tokens=64,
                        stream=stream)  # fmt: skip
        assert response.status_code == 200
        if stream:
            usage = sse_events(response)[-1]["usage"]
        else:
            usage = response.json()["usage"]
        assert Decimal(str(usage["cost"])) == Decimal("0.004321")
    assert fake_openrouter.requests[0]["body"]["usage"] == {"include": True}
    events = UsageEvent.objects.filter(organization=tenant.org)
    assert [(e.cost, e.cost_source) for e in events] == [(Decimal("0.004321"), "reported")] * 2
    assert pool(tenant).balance == Decimal("10") - 2 * Decimal("0.004321")


FAILURES = [("429", 502, "upstream_error"), ("500", 502, "upstream_error"),
            ("timeout", 504, "upstream_timeout"), ("drop", 502, "upstream_error")]  # fmt: skip


# A stream dropped after its first chunk: test_dropped_stream_is_charged_what_was_streamed.
@pytest.mark.parametrize(
    ("mode", "status", "type_", "stream"),
    [(*f, False) for f in FAILURES] + [(*f, True) for f in FAILURES if f[0] != "drop"],
)
def test_upstream_failure_voids_the_hold(tenant, fake, prices, mode, status, type_, stream):
    tenant.grant("10")
    make_upstream(tenant, fake, timeout=1)
    fake.modes["gpt-4o"] = mode
    fake.hang = 3
    _, secret = tenant.key("usage")
    response = chat(tenant.client(secret), model="gpt-4o", max_tokens=100, stream=stream)
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == status and error["metadata"]["type"] == type_
    hold = Hold.objects.get(organization=tenant.org)
    assert hold.status == Hold.Status.VOIDED
    assert not UsageEvent.objects.exists()
    assert pool(tenant).balance == Decimal("10") and pool(tenant).held == 0


def test_dropped_stream_is_charged_what_was_streamed(tenant, fake, prices):
    tenant.grant("10")
    make_upstream(tenant, fake)
    fake.modes["gpt-4o"] = "drop"
    _, secret = tenant.key("usage")
    response = chat(tenant.client(secret), model="gpt-4o", max_tokens=100, stream=True)
    assert response.status_code == 200
    chunks = sse_events(response)
    assert chunks[0]["choices"][0]["delta"]["content"] == WORDS[0]
    assert chunks[-1]["error"]["code"] == 502
    event = UsageEvent.objects.get(organization=tenant.org)
    bound = prompt_bound({"messages": MESSAGES})
    assert (event.prompt_tokens, event.completion_tokens) == (bound, len(WORDS[0].encode()))
    assert event.metadata["usage_estimated"] is True
    assert Hold.objects.get(organization=tenant.org).status == Hold.Status.CAPTURED
    assert pool(tenant).held == 0 and pool(tenant).balance == Decimal("10") - event.cost


def test_stream_without_usage_is_charged_what_was_streamed(tenant, fake, prices):
    tenant.grant("10")
    make_upstream(tenant, fake)
    fake.modes["gpt-4o"] = "nousage"
    _, secret = tenant.key("usage")
    response = chat(tenant.client(secret), model="gpt-4o", max_tokens=100, stream=True)
    chunks = sse_events(response)
    assert "usage" not in chunks[-1]
    event = UsageEvent.objects.get(organization=tenant.org)
    assert event.completion_tokens == len("".join(WORDS).encode())
    assert pool(tenant).held == 0


def test_completion_without_usage_is_charged_the_bound_and_the_answer(tenant, fake, prices):
    tenant.grant("10")
    make_upstream(tenant, fake)
    fake.modes["gpt-4o"] = "nousage"
    _, secret = tenant.key("usage")
    response = chat(tenant.client(secret), model="gpt-4o", max_tokens=100)
    assert response.status_code == 200
    event = UsageEvent.objects.get(organization=tenant.org)
    bound = prompt_bound({"messages": MESSAGES})
    assert (event.prompt_tokens, event.completion_tokens) == (bound, len("".join(WORDS)))
    assert Decimal(str(response.json()["usage"]["cost"])) == event.cost > 0
    assert pool(tenant).held == 0


def test_reported_cost_above_an_uncoverable_hold_is_charged_the_hold(tenant, fake_openrouter,
                                                                      prices):  # fmt: skip
    """OpenRouter reports more than the worst case and the pool cannot cover the excess: the
    hold's amount is charged (the most reserved), the hold is resolved, the actual is kept."""
    make_upstream(tenant, fake_openrouter, models=("openai/",), kind="openrouter")
    worst = authorization_estimate(model="openai/gpt-4o", at=timezone.now(), max_tokens=100,
                                   prompt_tokens=prompt_bound({"messages": MESSAGES}))  # fmt: skip
    tenant.grant(worst)
    fake_openrouter.cost = str(worst * 3)
    _, secret = tenant.key("usage")
    for stream in (False, True):
        response = chat(tenant.client(secret), model="openai/gpt-4o", max_tokens=100,
                        stream=stream)  # fmt: skip
        assert response.status_code == (200 if not stream else 402), response
        if not stream:
            assert Decimal(str(response.json()["usage"]["cost"])) == worst
    event = UsageEvent.objects.get(organization=tenant.org)
    assert event.cost == worst and event.metadata["cost_above_hold"] is True
    assert not Hold.objects.filter(status=Hold.Status.PENDING).exists()
    assert pool(tenant).balance == 0 and pool(tenant).held == 0
    assert ledger_verify(tenant.org.pk) == []


# Refusals before anyone is called ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "no-such-model-xyz"}, "model"),
        ({"model": "gpt-3.5-turbo"}, "model"),  # priced, but no upstream serves it
        ({"model": "gpt-4o", "messages": "hello"}, "messages"),
        ({"model": "gpt-4o", "messages": []}, "messages"),
        ({"model": "gpt-4o", "max_tokens": 128_001}, "max_tokens"),
        ({"model": "gpt-4o", "max_tokens": 0}, "max_tokens"),
        ({"model": "gpt-4o", "models": ["gpt-4o-mini", "nope-nope"]}, "models"),
        ({"model": "gpt-4o", "route": "cheapest"}, "route"),
        ({}, "model"),
    ],
)
def test_bad_input_is_400_and_holds_nothing(tenant, fake, prices, body, field):
    tenant.grant("10")
    make_upstream(tenant, fake)
    _, secret = tenant.key("usage")
    response = tenant.client(secret).post(
        "/api/v1/chat/completions", {"messages": MESSAGES, **body}, format="json"
    )
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["metadata"]["errors"]
    assert not Hold.objects.exists() and not fake.requests


def test_insufficient_credits_is_402_before_calling_anyone(tenant, fake, prices):
    tenant.grant("0.01")
    make_upstream(tenant, fake)
    _, secret = tenant.key("usage")
    response = chat(tenant.client(secret), model="gpt-4o", max_tokens=10_000)
    assert response.status_code == 402
    assert response.json()["error"]["metadata"]["type"] == "insufficient_credits"
    assert not Hold.objects.exists() and not fake.requests


def test_fallback_serves_the_cheaper_model_the_credits_allow(tenant, fake, prices):
    body = {"messages": MESSAGES}
    bound = prompt_bound(body)
    now = timezone.now()
    expensive = authorization_estimate(model="gpt-4o", prompt_tokens=bound, max_tokens=4000,
                                       at=now)  # fmt: skip
    cheap = authorization_estimate(model="gpt-4o-mini", prompt_tokens=bound, max_tokens=4000,
                                   at=now)  # fmt: skip
    assert 2 * cheap < expensive
    tenant.grant(2 * cheap)  # two of the cheaper worst cases, not one of the expensive one
    make_upstream(tenant, fake)
    _, secret = tenant.key("usage")
    client = tenant.client(secret)
    refused = chat(client, model="gpt-4o", max_tokens=4000)
    assert refused.status_code == 402
    for extra in ({"models": ["gpt-4o", "gpt-4o-mini"]},
                  {"model": "gpt-4o", "models": ["gpt-4o-mini"], "route": "fallback"}):  # fmt: skip
        response = chat(client, max_tokens=4000, **extra)
        assert response.status_code == 200, response.content
        assert response.json()["model"] == "gpt-4o-mini"
    assert [r["body"]["model"] for r in fake.requests] == ["gpt-4o-mini", "gpt-4o-mini"]
    assert "models" not in fake.requests[0]["body"]


def test_a_key_limit_refuses_with_402(tenant, fake, prices):
    tenant.grant("10")
    make_upstream(tenant, fake)
    key, secret = tenant.key("usage", limit="0.0001")
    response = chat(tenant.client(secret), model="gpt-4o", max_tokens=1000)
    assert response.status_code == 402
    assert response.json()["error"]["metadata"]["type"] == "budget_exceeded"
    assert not fake.requests


def test_a_guardrail_refuses_a_model_and_the_fallback_uses_an_allowed_one(tenant, fake, prices):
    tenant.grant("10")
    make_upstream(tenant, fake)
    key, secret = tenant.key("usage")
    fields = {"name": "mini only", "allowed_models": ["gpt-4o-mini"]}
    guardrail = guardrail_create(organization=tenant.org, actor=SYSTEM, fields=fields)
    guardrail_assign_keys(guardrail=guardrail, keys=[key], actor=SYSTEM)
    client = tenant.client(secret)
    refused = chat(client, model="gpt-4o", max_tokens=10)
    assert refused.status_code == 403 and not fake.requests
    served = chat(client, models=["gpt-4o", "gpt-4o-mini"], max_tokens=10)
    assert served.status_code == 200 and served.json()["model"] == "gpt-4o-mini"
    assert [r["body"]["model"] for r in fake.requests] == ["gpt-4o-mini"]


# Models -----------------------------------------------------------------------------------------


def test_models_lists_what_the_upstreams_reach_with_table_prices(tenant, other_tenant, fake,
                                                                prices):  # fmt: skip
    make_upstream(tenant, fake, models=("gpt-4o", "openai/", "not-priced-model"))
    make_upstream(other_tenant, fake, models=("gpt-3.5-turbo",))
    _, secret = tenant.key("usage")
    body = tenant.client(secret).get("/api/v1/models").json()
    ids = [m["id"] for m in body["data"]]
    assert "gpt-4o" in ids and "openai/gpt-4o" in ids
    assert "gpt-3.5-turbo" not in ids and "not-priced-model" not in ids
    assert body["total_count"] == len(ids) and body["links"] == {"next": None}
    gpt4o = next(m for m in body["data"] if m["id"] == "gpt-4o")
    price = price_for("gpt-4o", timezone.now())
    assert Decimal(gpt4o["pricing"]["prompt"]) == price.input_per_token
    assert Decimal(gpt4o["pricing"]["completion"]) == price.output_per_token
    assert gpt4o["context_length"] == 128_000


# Statements and what is read once per process -----------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the services' own transactions, not savepoints
def test_a_chat_request_makes_nine_statements_in_two_transactions(
    tenant, fake, prices, django_assert_max_num_queries
):
    """Once its key, the organization's upstreams and guardrails are read (per process, for a
    second): the hold (begin, lock, one statement for the lots past expiry, the hold and its
    amount held, commit) and the capture (begin, lock, the hold with the lots and ids, one
    write, commit)."""
    tenant.grant("10")
    make_upstream(tenant, fake)
    _, secret = tenant.key("usage", team=None)
    client = tenant.client(secret)
    assert chat(client, model="gpt-4o", max_tokens=10).status_code == 200
    with django_assert_max_num_queries(9) as queries:
        assert chat(client, model="gpt-4o", max_tokens=10).status_code == 200
    tables = " ".join(q["sql"] for q in queries.captured_queries)
    assert "credits_upstream" not in tables and "credits_guardrail" not in tables
    assert "SAVEPOINT" not in tables


def test_an_upstream_changed_elsewhere_is_seen_within_the_cache_time(tenant, fake, prices):
    from credits.services.upstreams import UPSTREAM_CACHE_SECONDS, upstream_update

    tenant.grant("10")
    upstream = make_upstream(tenant, fake)
    _, secret = tenant.key("usage", team=None)
    client = tenant.client(secret)
    assert chat(client, model="gpt-4o", max_tokens=10).status_code == 200
    Upstream.objects.filter(pk=upstream.pk).update(enabled=False)  # another worker's change
    time.sleep(UPSTREAM_CACHE_SECONDS + 0.05)
    refused = chat(client, model="gpt-4o", max_tokens=10)
    assert refused.status_code == 400 and "No upstream" in refused.json()["error"]["message"]
    upstream_update(upstream=upstream, actor=SYSTEM, enabled=True)  # this process: at once
    assert chat(client, model="gpt-4o", max_tokens=10).status_code == 200


def test_a_guardrail_changed_elsewhere_is_seen_within_the_cache_time(tenant, fake, prices):
    from credits.services.guardrails import RESTRICTING_CACHE_SECONDS

    tenant.grant("10")
    make_upstream(tenant, fake)
    key, secret = tenant.key("usage")
    fields = {"name": "any 4o", "allowed_models": ["gpt-4o", "gpt-4o-mini"]}
    guardrail = guardrail_create(organization=tenant.org, actor=SYSTEM, fields=fields)
    guardrail_assign_keys(guardrail=guardrail, keys=[key], actor=SYSTEM)
    client = tenant.client(secret)
    assert chat(client, model="gpt-4o", max_tokens=10).status_code == 200
    type(guardrail).objects.filter(pk=guardrail.pk).update(allowed_models=["gpt-4o-mini"])
    time.sleep(RESTRICTING_CACHE_SECONDS + 0.05)
    refused = chat(client, model="gpt-4o", max_tokens=10)
    assert refused.status_code == 403
    assert refused.json()["error"]["metadata"]["guardrail_id"] == str(guardrail.public_id)
