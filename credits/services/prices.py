"""Model prices from the LiteLLM price table and the cost of a request.

Source: BerriAI/litellm `model_prices_and_context_window.json` (MIT), copied in `credits/data/`.
Prices are USD (= credits) per unit; the JSON numbers are read as `Decimal` from their text, so
`2.5e-06` stays exactly 0.0000025.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from portal.errors import ValidationFailed
from portal.money import quantize_credits

from ..models import ModelPrice

DEFAULT_PRICE_FILE = (
    Path(__file__).resolve().parent.parent / "data" / "model_prices_and_context_window.json"
)
NON_MODEL_KEYS = frozenset({"sample_spec", "fallback_generalizations", "last_updated"})

# ModelPrice field <- price-table key.
TABLE_FIELDS = {
    "input_per_token": "input_cost_per_token",
    "output_per_token": "output_cost_per_token",
    "cache_read_per_token": "cache_read_input_token_cost",
    "reasoning_per_token": "output_cost_per_reasoning_token",
    "input_per_image": "input_cost_per_image",
    "output_per_image": "output_cost_per_image",
    "per_request": "input_cost_per_request",
}


@dataclass(frozen=True)
class LoadResult:
    created: int
    unchanged: int
    effective_from: datetime


def _price(value) -> Decimal | None:
    if value is None or isinstance(value, bool) or not isinstance(value, Decimal | int):
        return None
    value = Decimal(value)
    return value if value.is_finite() and value >= 0 else None


@transaction.atomic
def prices_load(
    *, path: Path = DEFAULT_PRICE_FILE, effective_from: datetime | None = None
) -> LoadResult:
    """Load the price table at `path`. A model whose prices differ from its latest stored
    version gets a new `ModelPrice` from `effective_from` (default: the table's `last_updated`);
    an unchanged one gets nothing, so loading the same file twice writes nothing.

    Raises ValidationFailed for a file that is not the LiteLLM table."""
    try:
        table = json.loads(Path(path).read_text(), parse_float=Decimal)
    except (OSError, ValueError) as exc:
        raise ValidationFailed({"path": [f"Cannot read a JSON price table: {exc}"]}) from None
    if not isinstance(table, dict):
        raise ValidationFailed({"path": ["Expected a JSON object keyed by model name."]})
    if effective_from is None:
        stamp = table.get("last_updated")
        effective_from = (
            parse_datetime(stamp) if isinstance(stamp, str) else None
        ) or timezone.now()
    latest: dict[str, ModelPrice] = {}
    for row in ModelPrice.objects.order_by("model", "effective_from"):
        latest[row.model] = row  # the last version of each model wins
    new_rows, unchanged = [], 0
    for model, spec in table.items():
        if model in NON_MODEL_KEYS or not isinstance(spec, dict) or len(model) > 200:
            continue
        values = {field: _price(spec.get(key)) for field, key in TABLE_FIELDS.items()}
        if all(v is None for v in values.values()):
            continue
        current = latest.get(model)
        if current is not None and all(getattr(current, f) == v for f, v in values.items()):
            unchanged += 1
            continue
        if current is not None and current.effective_from >= effective_from:
            unchanged += 1  # an older table than what is loaded: keep the newer prices
            continue
        new_rows.append(
            ModelPrice(
                model=model,
                provider=str(spec.get("litellm_provider", ""))[:64],
                mode=str(spec.get("mode", ""))[:32],
                effective_from=effective_from,
                source=Path(path).name,
                **values,
            )
        )
    ModelPrice.objects.bulk_create(new_rows, batch_size=500)
    _cache.clear()
    return LoadResult(created=len(new_rows), unchanged=unchanged, effective_from=effective_from)


_cache: dict[str, tuple[float, list[ModelPrice]]] = {}
CACHE_SECONDS = 60


def price_for(model: str, at: datetime) -> ModelPrice | None:
    """The price of `model` in force at `at`; for a time before the model's first version, that
    first version (a replay of old traffic is priced at the earliest list we know). None when
    the model is not in the table."""
    hit = _cache.get(model)
    if hit is None or hit[0] < time.monotonic():
        versions = list(ModelPrice.objects.filter(model=model).order_by("effective_from"))
        _cache[model] = hit = (time.monotonic() + CACHE_SECONDS, versions)
    versions = hit[1]
    if not versions:
        return None
    in_force = [v for v in versions if v.effective_from <= at]
    return in_force[-1] if in_force else versions[0]


@dataclass(frozen=True)
class Tokens:
    """Token counts of one request as providers report them (OpenAI's and OpenRouter's `usage`):
    `prompt` includes the `cached` input tokens (`prompt_tokens_details.cached_tokens`) and
    `completion` includes the `reasoning` tokens (`completion_tokens_details.reasoning_tokens`)."""

    prompt: int = 0
    completion: int = 0
    cached: int = 0
    reasoning: int = 0
    images: int = 0

    def check(self) -> None:
        """Raise ValidationFailed, naming the field, when a detail exceeds the total it is part
        of (more cached tokens than prompt tokens, more reasoning than completion tokens)."""
        errors = {}
        if self.cached > self.prompt:
            errors["cached_tokens"] = [
                f"{self.cached} cached tokens exceed the {self.prompt} prompt tokens that "
                "include them."
            ]
        if self.reasoning > self.completion:
            errors["reasoning_tokens"] = [
                f"{self.reasoning} reasoning tokens exceed the {self.completion} completion "
                "tokens that include them."
            ]
        if errors:
            raise ValidationFailed(errors)


def cost_compute(price: ModelPrice, tokens: Tokens, *, operation: str = "chat") -> Decimal:
    """Cost in credits (USD) of one request at `price`, exact, then rounded to the credit quantum:

        (prompt - cached) x input + cached x cache-read
        + (completion - reasoning) x output + reasoning x reasoning
        + images x image price + per-request price

    Counts are the provider's (see `Tokens`): `prompt` includes `cached` and `completion` includes
    `reasoning`, so each token is charged once. Where the table has no cache-read price, cached
    tokens cost the input price; with no reasoning price, reasoning tokens cost the output price
    (providers bill them as output). Images use the output image price for `image` operations,
    else the input image price.

    Raises ValidationFailed (naming `cached_tokens` or `reasoning_tokens`) when a detail exceeds
    its total."""
    tokens.check()
    zero = Decimal(0)
    input_price = price.input_per_token or zero
    output_price = price.output_per_token or zero
    image_price = (
        (price.output_per_image or price.input_per_image)
        if operation == "image"
        else (price.input_per_image or price.output_per_image)
    ) or zero
    total = (
        (tokens.prompt - tokens.cached) * input_price
        + tokens.cached
        * (price.cache_read_per_token if price.cache_read_per_token is not None else input_price)
        + (tokens.completion - tokens.reasoning) * output_price
        + tokens.reasoning
        * (price.reasoning_per_token if price.reasoning_per_token is not None else output_price)
        + tokens.images * image_price
        + (price.per_request or zero)
    )
    return quantize_credits(total)
