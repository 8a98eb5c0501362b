"""Prices from the real LiteLLM table: loading, versioning, and the cost formula."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command

from credits.models import ModelPrice
from credits.services.prices import DEFAULT_PRICE_FILE, Tokens, cost_compute, price_for, prices_load
from portal.errors import ValidationFailed

TABLE = json.loads(DEFAULT_PRICE_FILE.read_text(), parse_float=Decimal)


def write_table(path, table: dict) -> None:
    """Write a price table as JSON numbers (the table's own form)."""
    path.write_text(json.dumps(table, default=lambda d: float(d)))  # repr keeps the digits


def test_the_whole_table_loads_once_and_reloading_writes_nothing(db, capsys):
    call_command("prices_load")
    loaded = ModelPrice.objects.count()
    models_with_prices = sum(
        1
        for k, v in TABLE.items()
        if isinstance(v, dict)
        and k not in ("sample_spec", "fallback_generalizations")
        and any(
            x in v
            for x in (
                "input_cost_per_token",
                "output_cost_per_token",
                "input_cost_per_image",
                "output_cost_per_image",
                "input_cost_per_request",
                "cache_read_input_token_cost",
                "output_cost_per_reasoning_token",
            )
        )
    )
    assert loaded > 2000
    assert loaded <= models_with_prices
    call_command("prices_load")
    assert ModelPrice.objects.count() == loaded
    assert "0 new" in capsys.readouterr().out.splitlines()[-1]
    gpt4o = ModelPrice.objects.get(model="gpt-4o")
    assert gpt4o.input_per_token == Decimal("0.0000025")
    assert gpt4o.output_per_token == Decimal("0.00001")
    assert gpt4o.effective_from == datetime(2026, 7, 24, 18, 23, 43, 215560, tzinfo=UTC)


def test_a_changed_price_is_a_new_version_and_old_events_keep_the_old_price(db, tmp_path):
    first = {"gpt-4o": TABLE["gpt-4o"], "last_updated": "2026-07-24T00:00:00+00:00"}
    newer = {
        "gpt-4o": {**TABLE["gpt-4o"], "input_cost_per_token": Decimal("0.000003")},
        "last_updated": "2026-10-01T00:00:00+00:00",
    }
    for name, table in (("a.json", first), ("b.json", newer)):
        write_table(tmp_path / name, table)
    assert prices_load(path=tmp_path / "a.json").created == 1
    assert prices_load(path=tmp_path / "b.json").created == 1
    assert prices_load(path=tmp_path / "b.json").created == 0
    old = price_for("gpt-4o", datetime(2026, 8, 1, tzinfo=UTC))
    new = price_for("gpt-4o", datetime(2026, 10, 2, tzinfo=UTC))
    assert old.input_per_token == Decimal("0.0000025")
    assert new.input_per_token == Decimal("0.000003")
    # Before the first version (a replay of 2023 traffic): the earliest list price.
    assert price_for("gpt-4o", datetime(2023, 11, 16, tzinfo=UTC)) == old
    assert price_for("no-such-model", datetime.now(UTC)) is None


def test_a_file_that_is_not_the_table_is_a_clear_error(db, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    with pytest.raises(ValidationFailed):
        prices_load(path=bad)
    assert not ModelPrice.objects.exists()


@pytest.mark.parametrize(
    ("model", "operation", "tokens"),
    [
        ("gpt-4o", "chat", Tokens(prompt=1234, completion=567, cached=800)),
        ("o1", "chat", Tokens(prompt=100, completion=2050, reasoning=2000)),
        ("gpt-4o-mini", "chat", Tokens(prompt=1, completion=1, cached=1, reasoning=1)),
        ("dall-e-3", "image", Tokens(images=3)),
        ("text-embedding-3-small", "embedding", Tokens(prompt=8191)),
    ],
)
def test_cost_is_exact_from_the_table(prices, model, operation, tokens):
    row = TABLE[model]
    zero = Decimal(0)
    input_price = row.get("input_cost_per_token", zero)
    output_price = row.get("output_cost_per_token", zero)
    expected = (  # prompt includes cached, completion includes reasoning
        (tokens.prompt - tokens.cached) * input_price
        + (tokens.completion - tokens.reasoning) * output_price
        + tokens.cached * row.get("cache_read_input_token_cost", input_price)
        + tokens.reasoning * row.get("output_cost_per_reasoning_token", output_price)
        + tokens.images * row.get("output_cost_per_image", row.get("input_cost_per_image", zero))
    )
    price = price_for(model, datetime.now(UTC) + timedelta(days=1))
    assert cost_compute(price, tokens, operation=operation) == expected
    assert isinstance(cost_compute(price, tokens, operation=operation), Decimal)


def test_single_token_of_the_cheapest_model_is_representable(db, tmp_path):
    cheapest = min(
        (v["input_cost_per_token"], k)
        for k, v in TABLE.items()
        if isinstance(v, dict) and v.get("input_cost_per_token", 0) > 0
    )
    path = tmp_path / "cheap.json"
    write_table(path, {cheapest[1]: TABLE[cheapest[1]]})
    prices_load(path=path, effective_from=datetime(2026, 1, 1, tzinfo=UTC))
    price = price_for(cheapest[1], datetime.now(UTC))
    assert cost_compute(price, Tokens(prompt=1)) == cheapest[0] > 0
