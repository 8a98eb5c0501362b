"""Token counts as providers report them (OpenAI's and OpenRouter's `usage`): `prompt_tokens`
includes the cached input, `completion_tokens` includes reasoning. `POST /api/v1/credits/usage`
takes the provider's `usage` object whole or the flat fields; each token is charged once."""

from decimal import Decimal

import pytest

from credits.models import LedgerAccount, ModelPrice, UsageEvent
from credits.services import usage_record, usage_record_many
from credits.services.prices import Tokens, cost_compute
from credits.services.usage import Attribution, UsageInput
from portal.errors import ValidationFailed

USAGE = "/api/v1/credits/usage"


def expected_cost(event: UsageEvent, *, uncached: int, cached: int, output: int) -> Decimal:
    """The cost at the price the event was priced at (gpt-4o: its cache-read price is below its
    input price, and it has no reasoning price: reasoning is output)."""
    price = event.price
    assert price is not None and price.cache_read_per_token < price.input_per_token
    assert price.reasoning_per_token is None
    return (
        uncached * price.input_per_token
        + cached * price.cache_read_per_token
        + output * price.output_per_token
    )


def openrouter_usage(**overrides) -> dict:
    """The `usage` object of an OpenRouter chat completion, as it arrives."""
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 100,
        "total_tokens": 1100,
        "prompt_tokens_details": {"cached_tokens": 400, "cache_write_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "image_tokens": 0},
        "is_byok": False,
        "cost_details": {"upstream_inference_cost": None},
    }
    return {**usage, **overrides}


def test_each_token_is_charged_once_at_its_own_price():
    """100 prompt tokens of which 40 cached, 50 completion tokens of which 20 reasoning."""
    price = ModelPrice(
        input_per_token=Decimal(2),
        output_per_token=Decimal(10),
        cache_read_per_token=Decimal(1),
        reasoning_per_token=Decimal(5),
    )
    tokens = Tokens(prompt=100, completion=50, cached=40, reasoning=20)
    assert cost_compute(price, tokens) == 60 * 2 + 40 * 1 + 30 * 10 + 20 * 5
    # Without a cache-read or reasoning price, those tokens cost the input and output price.
    plain = ModelPrice(input_per_token=Decimal(2), output_per_token=Decimal(10))
    assert cost_compute(plain, tokens) == 100 * 2 + 50 * 10


@pytest.mark.parametrize(
    ("tokens", "field"),
    [
        (Tokens(prompt=10, cached=11), "cached_tokens"),
        (Tokens(completion=5, reasoning=6), "reasoning_tokens"),
        (Tokens(prompt=10, cached=11, completion=5, reasoning=6), "cached_tokens"),
    ],
)
def test_a_detail_above_its_total_is_refused_naming_the_field(tokens, field):
    price = ModelPrice(input_per_token=Decimal(1), output_per_token=Decimal(1))
    with pytest.raises(ValidationFailed) as exc:
        cost_compute(price, tokens)
    assert field in exc.value.metadata["errors"]


@pytest.fixture
def funded(tenant, prices):
    tenant.grant("10")
    key, secret = tenant.key("usage")
    return tenant, key, tenant.client(secret)


def errors_of(response) -> dict:
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] == 400 and error["metadata"]["type"] == "validation_error"
    return error["metadata"]["errors"]


def test_a_forwarded_usage_object_charges_cached_tokens_at_the_cache_price_only(funded):
    _, _, client = funded
    response = client.post(
        USAGE, {"id": "u1", "model": "gpt-4o", "usage": openrouter_usage()}, format="json"
    )
    assert response.status_code == 201, response.json()
    stored = UsageEvent.objects.get(event_id="u1")
    cost = expected_cost(stored, uncached=600, cached=400, output=100)
    assert Decimal(response.json()["cost"]) == cost
    twice = expected_cost(stored, uncached=1000, cached=400, output=100)
    assert cost < twice  # the 400 cached tokens are not also charged at the input price
    assert (stored.prompt_tokens, stored.cached_tokens) == (1000, 400)
    assert (stored.completion_tokens, stored.reasoning_tokens) == (100, 0)
    assert stored.cost == cost and stored.cost_source == "price_table"
    event = response.json()["event"]
    assert (event["prompt_tokens"], event["cached_tokens"]) == (1000, 400)


def test_flat_counts_mean_the_same_as_the_usage_object(funded):
    _, _, client = funded
    flat = {"id": "same", "model": "gpt-4o", "prompt_tokens": 1000, "completion_tokens": 100}
    first = client.post(USAGE, {**flat, "cached_tokens": 400}, format="json")
    assert first.status_code == 201
    # The same request spelled as a usage object is a retry of it, not a second charge.
    retry = client.post(
        USAGE, {"id": "same", "model": "gpt-4o", "usage": openrouter_usage()}, format="json"
    )
    assert retry.status_code == 200 and retry.json() == first.json()
    # Both spellings at once, agreeing, are accepted.
    both = client.post(
        USAGE, {**flat, "id": "both", "cached_tokens": 400, "usage": openrouter_usage()},
        format="json",
    )  # fmt: skip
    assert both.status_code == 201 and both.json()["cost"] == first.json()["cost"]


def test_reasoning_is_part_of_the_completion_tokens(funded):
    _, _, client = funded
    usage = openrouter_usage(
        prompt_tokens=10,
        prompt_tokens_details={"cached_tokens": 0},
        completion_tokens=500,
        completion_tokens_details={"reasoning_tokens": 450},
    )
    response = client.post(USAGE, {"id": "r", "model": "gpt-4o", "usage": usage}, format="json")
    assert response.status_code == 201
    stored = UsageEvent.objects.get(event_id="r")
    # gpt-4o has no reasoning price: reasoning tokens cost the output price, once.
    assert Decimal(response.json()["cost"]) == expected_cost(
        stored, uncached=10, cached=0, output=500
    )
    assert (stored.completion_tokens, stored.reasoning_tokens) == (500, 450)


def test_openrouters_cost_is_stored_as_reported(funded):
    tenant, _, client = funded
    response = client.post(
        USAGE,
        {"id": "c", "model": "anthropic/claude-new", "usage": openrouter_usage(cost=0.00042)},
        format="json",
    )
    assert response.status_code == 201, response.json()
    stored = UsageEvent.objects.get(event_id="c")
    assert stored.cost == Decimal("0.00042") and stored.cost_source == "reported"
    assert stored.price is None
    pool = LedgerAccount.objects.get(organization=tenant.org, kind="pool")
    assert pool.balance == Decimal("10") - Decimal("0.00042")


def test_a_float_cost_finer_than_the_credit_quantum_is_rounded_to_it(funded):
    _, _, client = funded
    usage = openrouter_usage(cost=1.2345678901234567e-05)
    response = client.post(USAGE, {"id": "f", "model": "x", "usage": usage}, format="json")
    assert response.status_code == 201, response.json()
    assert UsageEvent.objects.get(event_id="f").cost == Decimal("0.000012345679")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt_tokens": 999}, "usage.prompt_tokens"),
        ({"completion_tokens": 1}, "usage.completion_tokens"),
        ({"cached_tokens": 0}, "usage.prompt_tokens_details.cached_tokens"),
        ({"cost": "0.5", "usage": openrouter_usage(cost=0.25)}, "usage.cost"),
    ],
)
def test_contradicting_counts_are_refused_and_record_nothing(funded, body, field):
    _, _, client = funded
    request = {"id": "x", "model": "gpt-4o", "usage": openrouter_usage(), **body}
    errors = errors_of(client.post(USAGE, request, format="json"))
    assert list(errors) == [field]
    assert "Contradicts" in errors[field][0]
    assert not UsageEvent.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt_tokens": 10, "cached_tokens": 11}, "cached_tokens"),
        ({"completion_tokens": 5, "reasoning_tokens": 6}, "reasoning_tokens"),
        (
            {"usage": openrouter_usage(prompt_tokens=10)},
            "usage.prompt_tokens_details.cached_tokens",
        ),
        (
            {"usage": openrouter_usage(completion_tokens_details={"reasoning_tokens": 101})},
            "usage.completion_tokens_details.reasoning_tokens",
        ),
        ({"usage": {"input_tokens": 10, "output_tokens": 5}}, "usage.prompt_tokens"),
        ({"usage": openrouter_usage(prompt_tokens=1.5)}, "usage.prompt_tokens"),
        (
            {"usage": openrouter_usage(prompt_tokens_details={"cached_tokens": True})},
            "usage.prompt_tokens_details.cached_tokens",
        ),
        ({"usage": openrouter_usage(cost=-0.1)}, "usage.cost"),
        ({"usage": openrouter_usage(cost="lots")}, "usage.cost"),
        ({"usage": openrouter_usage(cost=1e30)}, "usage.cost"),
        ({"usage": [1]}, "usage.non_field_errors"),
    ],
)
def test_bad_counts_are_400_naming_the_field(funded, body, field):
    _, _, client = funded
    errors = errors_of(client.post(USAGE, {"id": "x", "model": "gpt-4o", **body}, format="json"))
    assert field in errors
    assert not UsageEvent.objects.exists()


def test_null_details_and_cost_mean_none_given(funded):
    _, _, client = funded
    usage = openrouter_usage(prompt_tokens_details=None, completion_tokens_details=None, cost=None)
    response = client.post(USAGE, {"id": "n", "model": "gpt-4o", "usage": usage}, format="json")
    assert response.status_code == 201, response.json()
    stored = UsageEvent.objects.get(event_id="n")
    assert stored.cost_source == "price_table" and stored.cached_tokens == 0
    assert stored.cost == expected_cost(stored, uncached=1000, cached=0, output=100)


def test_a_batch_takes_usage_objects_event_by_event(funded):
    _, _, client = funded
    events = [
        {"id": "b1", "model": "gpt-4o", "usage": openrouter_usage()},
        {"id": "b2", "model": "gpt-4o", "usage": openrouter_usage(prompt_tokens=399)},
        {"id": "b3", "model": "gpt-4o", "prompt_tokens": 1, "usage": openrouter_usage()},
        {"id": "b4", "model": "z", "usage": openrouter_usage(cost=0.001)},
    ]
    response = client.post(USAGE, {"events": events}, format="json")
    assert response.status_code == 207
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 400, 400, 201]
    b1 = UsageEvent.objects.get(event_id="b1")
    assert Decimal(results[0]["cost"]) == expected_cost(b1, uncached=600, cached=400, output=100)
    assert "usage.prompt_tokens_details.cached_tokens" in results[1]["error"]["metadata"]["errors"]
    assert "usage.prompt_tokens" in results[2]["error"]["metadata"]["errors"]
    assert Decimal(results[3]["cost"]) == Decimal("0.001")
    assert set(UsageEvent.objects.values_list("event_id", flat=True)) == {"b1", "b4"}


def test_services_refuse_a_detail_above_its_total(funded):
    """The replay and other callers of the services get the same check as the API."""
    tenant, key, _ = funded
    attribution = Attribution.of_key(key)
    bad = UsageInput(id="s1", model="gpt-4o", prompt_tokens=10, cached_tokens=20)
    with pytest.raises(ValidationFailed) as exc:
        usage_record(attribution=attribution, event=bad)
    assert list(exc.value.metadata["errors"]) == ["cached_tokens"]
    reported = UsageInput(id="s2", model="x", completion_tokens=1, reasoning_tokens=2, cost="1")
    outcomes = usage_record_many(attribution=attribution, events=[bad, reported])
    assert [type(o) for o in outcomes] == [ValidationFailed, ValidationFailed]
    assert list(outcomes[1].metadata["errors"]) == ["reasoning_tokens"]
    assert not UsageEvent.objects.exists()


def test_generation_reports_the_providers_counts(funded):
    _, _, client = funded
    usage = openrouter_usage(completion_tokens_details={"reasoning_tokens": 30})
    client.post(USAGE, {"id": "g", "model": "gpt-4o", "usage": usage}, format="json")
    data = client.get("/api/v1/generation", {"id": "g"}).json()["data"]
    assert (data["tokens_prompt"], data["native_tokens_prompt"]) == (1000, 1000)
    assert (data["tokens_completion"], data["native_tokens_completion"]) == (100, 100)
    assert (data["native_tokens_cached"], data["native_tokens_reasoning"]) == (400, 30)


def test_a_capture_takes_the_usage_object_too(funded):
    _, _, client = funded
    hold = client.post("/api/v1/credits/authorizations", {"id": "h1", "amount": "1"}, format="json")
    assert hold.status_code == 201, hold.json()
    capture = client.post(
        f"/api/v1/credits/authorizations/{hold.json()['id']}/capture",
        {"id": "cap", "model": "gpt-4o", "usage": openrouter_usage()},
        format="json",
    )
    assert capture.status_code == 201, capture.json()
    stored = UsageEvent.objects.get(event_id="cap")
    assert (stored.prompt_tokens, stored.cached_tokens) == (1000, 400)
    assert stored.cost == expected_cost(stored, uncached=600, cached=400, output=100)
    bad = client.post(
        f"/api/v1/credits/authorizations/{hold.json()['id']}/capture",
        {"id": "cap2", "model": "gpt-4o", "usage": openrouter_usage(prompt_tokens=1)},
        format="json",
    )
    assert "usage.prompt_tokens_details.cached_tokens" in errors_of(bad)


@pytest.mark.parametrize("cost", ["0", 0, 1e-20])
def test_a_zero_cost_is_a_plain_decimal_string(funded, cost):
    _, _, client = funded
    flat = client.post(USAGE, {"id": "z", "model": "x", "cost": cost}, format="json")
    nested = client.post(
        USAGE, {"id": "z2", "model": "x", "usage": openrouter_usage(cost=cost)}, format="json"
    )
    batch = client.post(
        USAGE, {"events": [{"id": "z3", "model": "x", "usage": openrouter_usage(cost=cost)}]},
        format="json",
    )  # fmt: skip
    if cost != 1e-20:  # the flat field refuses more decimals than the quantum
        assert flat.status_code == 201 and flat.json()["cost"] == "0.000000000000"
    assert nested.status_code == 201 and nested.json()["cost"] == "0.000000000000"
    assert batch.json()["results"][0]["cost"] == "0.000000000000"
    assert nested.json()["balance_after"] == "10.000000000000"


@pytest.mark.parametrize("cost", [-4e-13, -6e-13, -1e-20, "-4e-13", "-0.0000000000004"])
def test_a_negative_cost_however_small_is_refused_and_records_nothing(funded, cost):
    """-4e-13 rounds to "-0" at the quantum: the sign is checked on the value as given, in the
    one parser of amounts (`portal.money.parse_credits`), for an event, a batch and a capture."""
    tenant, _, client = funded
    one = client.post(
        USAGE,
        {"id": "x1", "model": "gpt-4o", "prompt_tokens": 1, "completion_tokens": 1,
         "usage": {"prompt_tokens": 1, "completion_tokens": 1, "cost": cost}},
        format="json",
    )  # fmt: skip
    assert list(errors_of(one)) == ["usage.cost"]
    batch = client.post(
        USAGE,
        {"events": [{"id": "x2", "model": "gpt-4o", "usage": openrouter_usage(cost=cost)}]},
        format="json",
    )
    (result,) = batch.json()["results"]
    assert result["status"] == 400 and "usage.cost" in result["error"]["metadata"]["errors"]
    flat = client.post(USAGE, {"id": "x3", "model": "gpt-4o", "cost": cost}, format="json")
    assert list(errors_of(flat)) == ["cost"]
    hold = client.post("/api/v1/credits/authorizations", {"id": "h", "amount": "1"}, format="json")
    capture = client.post(
        f"/api/v1/credits/authorizations/{hold.json()['id']}/capture",
        {"id": "x4", "model": "gpt-4o", "usage": openrouter_usage(cost=cost)},
        format="json",
    )
    assert list(errors_of(capture)) == ["usage.cost"]
    assert not UsageEvent.objects.exists()
    pool = LedgerAccount.objects.get(organization=tenant.org, kind="pool")
    assert pool.balance == Decimal("10") and pool.held == Decimal("1")


@pytest.mark.parametrize("cost", [-0.0, "-0", "-0.000000000000"])
def test_a_cost_of_minus_zero_is_stored_and_answered_as_zero(funded, cost):
    _, _, client = funded
    for id_, body in [
        ("z1", {"cost": cost}),
        ("z2", {"usage": openrouter_usage(cost=cost)}),
    ]:
        response = client.post(USAGE, {"id": id_, "model": "gpt-4o", **body}, format="json")
        assert response.status_code == 201, response.json()
        assert response.json()["cost"] == "0.000000000000"
        assert response.json()["event"]["cost"] == "0.000000000000"
        assert not UsageEvent.objects.get(event_id=id_).cost.is_signed()
