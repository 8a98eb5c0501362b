"""Prices: the genai-prices data loaded into versioned rows (its price history kept), a
LiteLLM-format file an operator supplies, refreshing from the published data with and without a
network, resolving the ids clients send, and the cost of a request."""

from __future__ import annotations

import http.server
import io
import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.management import call_command
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import StartDateConstraint, TieredPrices, TimeOfDateConstraint

from credits.models import ModelPrice
from credits.services import prices as prices_module
from credits.services.prices import (
    ALWAYS,
    FETCHED_SOURCE,
    Tokens,
    cost_compute,
    model_key,
    model_suggestions,
    package_keys,
    price_for,
    prices_load,
    prices_sync,
)
from credits.tasks import prices_sync as prices_sync_task
from portal.errors import ValidationFailed

USAGE = "/api/v1/credits/usage"


def package_model(key: str):
    """(provider, model) of genai-prices' bundled data that a stored key stands for."""
    providers = get_snapshot().providers
    for (provider_id, model_id), stored_key in package_keys(providers).items():
        if stored_key == key:
            provider = next(p for p in providers if p.id == provider_id)
            return provider, next(m for m in provider.models if m.id == model_id)
    raise KeyError(key)


def per_token(value) -> Decimal | None:
    """A genai-prices price per million tokens as USD per token (tiers: the base rate)."""
    if isinstance(value, TieredPrices):
        value = value.base
    return None if value is None else Decimal(value) / Decimal(1_000_000)


# Loading genai-prices -----------------------------------------------------------------------------


def test_the_package_loads_once_and_reloading_writes_nothing(db):
    out = io.StringIO()
    call_command("prices_load", stdout=out)
    assert "Prices from genai-prices" in out.getvalue()
    keys = set(ModelPrice.objects.values_list("model", flat=True))
    assert len(keys) > 2000
    # OpenRouter ids, plain ids at the maker's price, and other providers' models.
    assert {"openai/gpt-4o", "anthropic/claude-sonnet-4", "google/gemini-2.5-flash"} <= keys
    assert {"gpt-4o", "claude-sonnet-4-0", "gemini-2.5-flash", "llama-3.1-8b-instant"} <= keys
    assert "claude-sonnet-4" not in keys  # Anthropic's name: resolved by its matching
    gpt4o = ModelPrice.objects.get(model="gpt-4o")
    assert (gpt4o.provider, gpt4o.effective_from) == ("openai", ALWAYS)
    assert (gpt4o.input_per_token, gpt4o.output_per_token, gpt4o.cache_read_per_token) == (
        Decimal("0.0000025"),
        Decimal("0.00001"),
        Decimal("0.00000125"),
    )
    rows = ModelPrice.objects.count()
    again = io.StringIO()
    call_command("prices_load", stdout=again)
    assert ModelPrice.objects.count() == rows
    assert ": 0 new," in again.getvalue()


def test_every_stored_price_is_the_package_price_at_that_time(db):
    """Against genai-prices' own `get_prices(timestamp)`: before, at and after every start date
    of its price history, for every model with a plain price (no tiers, no time of day)."""
    prices_load()
    stored = set(ModelPrice.objects.values_list("model", flat=True))
    providers = get_snapshot().providers
    checked = 0
    for (provider_id, model_id), key in package_keys(providers).items():
        model = next(
            m for p in providers if p.id == provider_id for m in p.models if m.id == model_id
        )
        conditions = model.prices if isinstance(model.prices, list) else []
        if any(isinstance(c.constraint, TimeOfDateConstraint) for c in conditions):
            continue
        starts = [
            datetime.combine(c.constraint.start_date, datetime.min.time(), tzinfo=UTC)
            for c in conditions
            if isinstance(c.constraint, StartDateConstraint)
        ]
        moments = [datetime(2024, 1, 1, tzinfo=UTC), datetime.now(UTC)]
        moments += [s + d for s in starts for d in (timedelta(seconds=-1), timedelta(0))]
        for at in moments:
            expected = model.get_prices(at)
            units = {k for k, v in vars(expected).items() if v is not None}
            if key not in stored:  # it prices only units a ModelPrice has no column for
                assert units and not units & {"input_mtok", "output_mtok", "requests_kcount"}
                continue
            row = price_for(key, at)
            assert row.model == key
            if not units:  # a free model
                assert (row.input_per_token, row.output_per_token) == (0, 0)
                continue
            assert row.input_per_token == per_token(expected.input_mtok), (key, at)
            assert row.output_per_token == per_token(expected.output_mtok), (key, at)
            assert row.cache_read_per_token == per_token(expected.cache_read_mtok), (key, at)
            assert row.reasoning_per_token == per_token(expected.output_reasoning_mtok)
            checked += 1
    assert checked > 2000


def test_a_price_change_with_a_start_date_is_a_version_and_old_events_keep_the_old_price(db):
    """OpenRouter's `openai/gpt-4o` got a cache-read price on 2026-10-19 in the package's data."""
    prices_load(models=["openai/gpt-4o"])
    versions = list(ModelPrice.objects.filter(model="openai/gpt-4o").order_by("effective_from"))
    assert [v.effective_from for v in versions] == [ALWAYS, datetime(2026, 10, 19, tzinfo=UTC)]
    before = price_for("openai/gpt-4o", datetime(2026, 10, 18, 23, 59, tzinfo=UTC))
    after = price_for("openai/gpt-4o", datetime(2026, 10, 19, tzinfo=UTC))
    assert before.cache_read_per_token is None
    assert after.cache_read_per_token == Decimal("0.00000125")
    assert before.input_per_token == after.input_per_token == Decimal("0.0000025")
    # A replay of 2023 traffic is priced at the earliest version.
    assert price_for("openai/gpt-4o", datetime(1999, 1, 1, tzinfo=UTC)) == before


def test_loading_only_some_models_resolves_their_ids_and_refuses_unknown_ones(db):
    result = prices_load(models=["codex-mini-latest", "openai/gpt-4o-mini"])
    assert set(ModelPrice.objects.values_list("model", flat=True)) == {
        "codex-mini",
        "openai/gpt-4o-mini",
    }
    assert result.created == ModelPrice.objects.count()
    with pytest.raises(ValidationFailed, match="no-such-model"):
        prices_load(models=["no-such-model"])


# Resolving the ids clients send -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "key"),
    [
        ("gpt-4o", "gpt-4o"),
        ("GPT-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),  # a dated id of the model (genai-prices' match)
        ("codex-mini-latest", "codex-mini"),
        ("openai/gpt-4o", "openai/gpt-4o"),  # OpenRouter's ids, at OpenRouter's prices
        ("anthropic/claude-sonnet-4", "anthropic/claude-sonnet-4"),
        ("google/gemini-2.5-flash", "google/gemini-2.5-flash"),
        ("openrouter/openai/gpt-4o", "openai/gpt-4o"),  # LiteLLM's way of naming them
        ("openai/gpt-4o-2024-08-06", "openai/gpt-4o"),
        ("no-such-model", None),
    ],
)
def test_openrouter_and_plain_ids_resolve_to_a_stored_price(prices, sent, key):
    assert model_key(sent) == key
    price = price_for(sent, datetime.now(UTC))
    assert (price.model if price else None) == key


def test_full_data_resolves_provider_prefixed_and_aliased_ids(db):
    prices_load()
    assert model_key("claude-sonnet-4") == "claude-sonnet-4-0"  # Anthropic's price
    assert model_key("groq/llama-3.1-8b-instant") == "llama-3.1-8b-instant"
    assert price_for("claude-3-5-sonnet-latest", datetime.now(UTC)).provider == "anthropic"
    assert model_suggestions("gpt-4x")[:2] == ["gpt-4", "gpt-4o"]


def test_an_unknown_model_is_a_400_naming_the_closest_known_ids(tenant, prices):
    tenant.grant("1")
    _, secret = tenant.key("usage")
    response = tenant.client(secret).post(
        USAGE,
        {"id": "e1", "model": "gpt-4x", "prompt_tokens": 10, "completion_tokens": 5},
        format="json",
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["metadata"]["type"] == "validation_error"
    assert "Unknown model 'gpt-4x'" in error["message"]
    assert "Did you mean 'gpt-4', 'gpt-4o'" in error["message"]
    assert "'gpt-4o'" in error["metadata"]["errors"]["model"][0]


def test_lookups_hit_the_process_cache_and_a_load_invalidates_it(
    prices, tmp_path, django_assert_num_queries
):
    now = datetime.now(UTC)
    for sent in ("gpt-4o", "openai/gpt-4o", "codex-mini-latest", "no-such-model"):
        price_for(sent, now)  # warm: the key list once, then each key's versions
    with django_assert_num_queries(0):
        for _ in range(200):
            for sent in ("gpt-4o", "openai/gpt-4o", "codex-mini-latest", "no-such-model"):
                price_for(sent, now)
    path = tmp_path / "table.json"
    table = {
        "gpt-4o": {"input_cost_per_token": 4e-06, "output_cost_per_token": 1.6e-05},
        "no-such-model": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06},
    }
    path.write_text(json.dumps(table | {"last_updated": (now - timedelta(hours=1)).isoformat()}))
    prices_load(path=path)
    assert price_for("gpt-4o", now).input_per_token == Decimal("0.000004")
    assert price_for("no-such-model", now).output_per_token == Decimal("0.000002")


# A LiteLLM-format file ----------------------------------------------------------------------------

# Rows in LiteLLM's format (values of its July 2026 table; per token, per image).
LITELLM = {
    "gpt-4o": {
        "input_cost_per_token": "2.5e-06",
        "output_cost_per_token": "1e-05",
        "cache_read_input_token_cost": "1.25e-06",
        "litellm_provider": "openai",
        "mode": "chat",
    },
    "o1": {
        "input_cost_per_token": "1.5e-05",
        "output_cost_per_token": "6e-05",
        "output_cost_per_reasoning_token": "6e-05",
        "litellm_provider": "openai",
        "mode": "chat",
    },
    "dall-e-3": {"output_cost_per_image": "0.04", "litellm_provider": "openai", "mode": "image"},
    "sample_spec": {"input_cost_per_token": "0"},
}


def write_table(path, table: dict, last_updated: str | None = None) -> None:
    """A LiteLLM-format table; prices given as strings are written as JSON numbers."""
    rows = dict(table) | ({"last_updated": last_updated} if last_updated else {})
    text = json.dumps(rows)
    for spec in table.values():
        for value in spec.values():
            if isinstance(value, str) and value[:1].isdigit():
                text = text.replace(f'"{value}"', value)
    path.write_text(text)


def test_a_litellm_file_loads_exactly_and_reloading_writes_nothing(db, tmp_path):
    path = tmp_path / "model_prices_and_context_window.json"
    write_table(path, LITELLM, "2026-07-24T18:23:43.215560+00:00")
    out = io.StringIO()
    call_command("prices_load", str(path), stdout=out)
    assert "effective 2026-07-24 18:23 UTC: 3 new, 0 unchanged" in out.getvalue()
    gpt4o = ModelPrice.objects.get(model="gpt-4o")
    assert (gpt4o.input_per_token, gpt4o.cache_read_per_token) == (
        Decimal("0.0000025"),
        Decimal("0.00000125"),
    )
    assert (gpt4o.provider, gpt4o.mode, gpt4o.source) == ("openai", "chat", path.name)
    assert ModelPrice.objects.get(model="dall-e-3").output_per_image == Decimal("0.04")
    assert not ModelPrice.objects.filter(model="sample_spec").exists()
    call_command("prices_load", str(path), stdout=out)
    assert "0 new, 3 unchanged" in out.getvalue()


def test_a_changed_litellm_price_is_a_new_version_and_an_older_file_changes_nothing(db, tmp_path):
    first, newer = tmp_path / "a.json", tmp_path / "b.json"
    write_table(first, {"gpt-4o": LITELLM["gpt-4o"]}, "2026-07-24T00:00:00+00:00")
    write_table(
        newer,
        {"gpt-4o": {**LITELLM["gpt-4o"], "input_cost_per_token": "3e-06"}},
        "2026-10-01T00:00:00+00:00",
    )
    assert prices_load(path=first).created == 1
    assert prices_load(path=newer).created == 1
    assert prices_load(path=newer).created == 0
    assert prices_load(path=first).created == 0  # older than what is stored
    old = price_for("gpt-4o", datetime(2026, 8, 1, tzinfo=UTC))
    new = price_for("gpt-4o", datetime(2026, 10, 2, tzinfo=UTC))
    assert (old.input_per_token, new.input_per_token) == (Decimal("0.0000025"), Decimal("3e-06"))
    assert price_for("gpt-4o", datetime(2023, 11, 16, tzinfo=UTC)) == old
    assert price_for("no-such-model", datetime.now(UTC)) is None


def test_a_file_that_is_not_a_litellm_table_is_a_clear_error(db, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    with pytest.raises(ValidationFailed):
        prices_load(path=bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValidationFailed, match="keyed by model name"):
        prices_load(path=bad)
    assert not ModelPrice.objects.exists()


# Refreshing from the published data ---------------------------------------------------------------


class Published:
    """A local HTTP server standing in for genai-prices' published data.json."""

    def __init__(self) -> None:
        self.status, self.body = 200, b"[]"
        published = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server API
                self.send_response(published.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(published.body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/data.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def published():
    server = Published()
    yield server
    server.server.shutdown()
    server.server.server_close()


def openai_data(input_mtok: str, output_mtok: str) -> bytes:
    """Published data in genai-prices' raw format: OpenAI with gpt-4o only."""
    return json.dumps(
        [
            {
                "id": "openai",
                "name": "OpenAI",
                "api_pattern": r"https://api\.openai\.com",
                "model_match": {"starts_with": "gpt-"},
                "models": [
                    {
                        "id": "gpt-4o",
                        "match": {"equals": "gpt-4o"},
                        "prices": {"input_mtok": input_mtok, "output_mtok": output_mtok},
                    }
                ],
            }
        ]
    ).encode()


def test_sync_loads_the_published_prices_as_a_new_version_from_now(prices, published):
    published.body = openai_data("3", "12")
    before = datetime.now(UTC)
    result = prices_sync(url=published.url, timeout=5)
    assert result.fetched and result.load.created == 1
    latest = ModelPrice.objects.filter(model="gpt-4o").latest("effective_from")
    assert latest.effective_from >= before and latest.source == FETCHED_SOURCE
    assert (latest.input_per_token, latest.output_per_token) == (Decimal("3e-6"), Decimal("1.2e-5"))
    # Events before the sync keep the old price; the bundled snapshot does not undo the sync.
    assert price_for("gpt-4o", before - timedelta(seconds=1)).input_per_token == Decimal("2.5e-6")
    assert price_for("gpt-4o", datetime.now(UTC)) == latest
    prices_load(models=["gpt-4o"])
    assert ModelPrice.objects.filter(model="gpt-4o").latest("effective_from") == latest
    assert prices_sync(url=published.url, timeout=5).load.created == 0


@pytest.mark.parametrize(
    ("status", "body"), [(500, b"oops"), (200, b"not json"), (200, b"{}"), (200, b"[]")]
)
def test_sync_keeps_the_installed_prices_when_the_data_cannot_be_had(
    prices, published, status, body
):
    published.status, published.body = status, body
    rows = ModelPrice.objects.count()
    result = prices_sync(url=published.url, timeout=5)
    assert not result.fetched and "keeping the installed prices" in result.message
    assert ModelPrice.objects.count() == rows


def test_sync_without_a_network_says_so_and_a_bare_installation_gets_the_snapshot(db):
    closed = "http://127.0.0.1:9/data.json"  # the discard port: nothing listens
    out = io.StringIO()
    call_command("prices_sync", url=closed, timeout=2, stdout=out)
    assert "Could not fetch the published genai-prices data" in out.getvalue()
    assert "Loaded the installed snapshot" in out.getvalue()
    rows = ModelPrice.objects.count()
    assert rows > 2000
    call_command("prices_sync", url=closed, timeout=2, stdout=out)
    assert ModelPrice.objects.count() == rows


def test_the_beat_task_syncs_every_six_hours(prices, published, monkeypatch):
    entry = next(
        e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == prices_sync_task.name
    )
    assert entry["schedule"].hour == {0, 6, 12, 18}
    monkeypatch.setattr(prices_module, "DEFAULT_UPDATE_URL", "http://127.0.0.1:9/data.json")
    assert prices_sync_task.apply().get() is False  # offline: no error
    published.body = openai_data("2.5", "10")
    monkeypatch.setattr(prices_module, "DEFAULT_UPDATE_URL", published.url)
    assert prices_sync_task.apply().get() is True


# The cost of a request ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "tokens"),
    [
        ("gpt-4o", Tokens(prompt=1234, completion=567)),
        ("openai/gpt-4o", Tokens(prompt=100_000, completion=1)),
        ("anthropic/claude-sonnet-4", Tokens(prompt=1, completion=1)),
        ("text-embedding-3-small", Tokens(prompt=8191)),
    ],
)
def test_cost_is_exact_at_the_package_price(prices, model, tokens):
    at = datetime.now(UTC)
    provider, info = package_model(model_key(model))
    expected = info.get_prices(at)
    cost = cost_compute(price_for(model, at), tokens)
    assert cost == tokens.prompt * per_token(expected.input_mtok) + tokens.completion * (
        per_token(expected.output_mtok) or 0
    )
    assert isinstance(cost, Decimal) and cost > 0


def test_a_single_token_of_the_cheapest_model_is_representable(db):
    prices_load()
    cheapest = ModelPrice.objects.filter(input_per_token__gt=0).order_by("input_per_token")[0]
    assert cost_compute(cheapest, Tokens(prompt=1)) == cheapest.input_per_token > 0
