"""Model prices: loading them into versioned `ModelPrice` rows, finding the price of a model id,
and the cost of a request.

Prices are USD (= credits) per unit, `Decimal`, exact. They come from:

- the `genai-prices` package (pydantic/genai-prices, MIT): its bundled data snapshot
  (`prices_load()`, `manage.py prices_load`), or the latest data it publishes
  (`prices_sync()`, `manage.py prices_sync`, the `credits.tasks.prices_sync` beat task). The
  package gives prices per million tokens (`input_mtok`, `output_mtok`, `cache_read_mtok`,
  `output_reasoning_mtok`) and per thousand requests (`requests_kcount`); they are stored per
  token and per request (`Decimal.scaleb`, exact). Its price history (prices with a start date)
  becomes versions with that `effective_from`; a price without a start date is in force since
  `ALWAYS`. Not represented: tiered prices (a higher rate past N prompt tokens: the base rate is
  stored), time-of-day prices (off-peak discounts: the standard price is stored), per-image
  prices (the package prices image tokens, not images), cache writes.
- a file in LiteLLM's `model_prices_and_context_window.json` format (BerriAI/litellm, MIT) that an
  operator supplies (`prices_load(path=...)`, `manage.py prices_load PATH`): one version per model
  from the file's `last_updated`. Its JSON numbers are read as `Decimal` from their text, so
  `2.5e-06` stays exactly 0.0000025.

Keys (`ModelPrice.model`) of the package's data: OpenRouter's ids as OpenRouter names them
(`openai/gpt-4o`, `anthropic/claude-sonnet-4`, priced at OpenRouter's list); plain ids at the
price of the provider that makes the model (`gpt-4o` at OpenAI's, `claude-sonnet-4-0` at
Anthropic's); and `<provider>/<id>` for the other providers that sell a model (`azure/gpt-4o`,
`groq/llama-3.1-8b-instant`). `model_key` resolves what clients send (aliases, dated ids such as
`gpt-4o-2024-08-06`, `-latest` names, OpenRouter ids, `openrouter/...`) to one of these keys.
"""

from __future__ import annotations

import difflib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from importlib.metadata import version as package_version
from pathlib import Path

import httpx2
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from genai_prices import types as genai_types
from genai_prices.data_snapshot import DataSnapshot, find_provider_by_id, get_snapshot
from genai_prices.update_prices import DEFAULT_UPDATE_URL, UpdatePrices

from portal.errors import ValidationFailed
from portal.money import PRICE_DECIMAL_PLACES, quantize_credits

from ..models import ModelPrice

logger = logging.getLogger(__name__)

NON_MODEL_KEYS = frozenset({"sample_spec", "fallback_generalizations", "last_updated"})

# ModelPrice field <- LiteLLM price-table key (USD per token, per image, per request).
TABLE_FIELDS = {
    "input_per_token": "input_cost_per_token",
    "output_per_token": "output_cost_per_token",
    "cache_read_per_token": "cache_read_input_token_cost",
    "reasoning_per_token": "output_cost_per_reasoning_token",
    "input_per_image": "input_cost_per_image",
    "output_per_image": "output_cost_per_image",
    "per_request": "input_cost_per_request",
}
PRICE_FIELDS = tuple(TABLE_FIELDS)

# ModelPrice field <- genai-prices price key, and the power of ten its unit counts
# (`_mtok`: per 1,000,000 tokens; `_kcount`: per 1,000 requests).
PACKAGE_FIELDS = {
    "input_per_token": ("input_mtok", 6),
    "output_per_token": ("output_mtok", 6),
    "cache_read_per_token": ("cache_read_mtok", 6),
    "reasoning_per_token": ("output_reasoning_mtok", 6),
    "per_request": ("requests_kcount", 3),
}
OPENROUTER = "openrouter"
# The effective date of a genai-prices price that has no start date: in force for as long as the
# data knows (a replay of old traffic is priced at it).
ALWAYS = datetime(2000, 1, 1, tzinfo=UTC)
BUNDLED_SOURCE = "genai-prices {version} (bundled)"
FETCHED_SOURCE = "genai-prices (fetched)"
SYNC_TIMEOUT = 10.0  # seconds, for fetching the published data
PRICE_QUANTUM = Decimal(1).scaleb(-PRICE_DECIMAL_PLACES)


@dataclass(frozen=True)
class LoadResult:
    """What a load wrote: `created` new price versions; `unchanged` models whose prices were
    already stored; `effective_from` the date of a LiteLLM file's versions (or the time of a
    package load); `source` where the prices came from."""

    created: int
    unchanged: int
    effective_from: datetime
    source: str = ""


@dataclass(frozen=True)
class _Version:
    effective_from: datetime
    provider: str
    mode: str
    values: dict[str, Decimal | None]


def _price(value) -> Decimal | None:
    if value is None or isinstance(value, bool) or not isinstance(value, Decimal | int):
        return None
    value = Decimal(value)
    if not value.is_finite() or value < 0:
        return None
    if value.as_tuple().exponent < -PRICE_DECIMAL_PLACES:
        value = value.quantize(PRICE_QUANTUM)  # beyond the column's places (none in the data)
    return value


def _same(a: Decimal | None, b: Decimal | None) -> bool:
    """Equal prices. A relative 1e-12 of slack absorbs SQLite's float storage of decimals (the
    demo database); real price changes are far larger."""
    if a is None or b is None:
        return a is b
    return a == b or abs(a - b) <= max(abs(a), abs(b)) * Decimal("1e-12")


def _same_values(row: ModelPrice | _Version, values: dict[str, Decimal | None]) -> bool:
    stored = row.values if isinstance(row, _Version) else {f: getattr(row, f) for f in PRICE_FIELDS}
    return all(_same(stored.get(f), values.get(f)) for f in PRICE_FIELDS)


# Reading the LiteLLM format ---------------------------------------------------------------------


def _litellm_versions(path: Path, effective_from: datetime | None) -> tuple[dict, datetime]:
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
    versions: dict[str, list[_Version]] = {}
    for model, spec in table.items():
        if model in NON_MODEL_KEYS or not isinstance(spec, dict) or len(model) > 200:
            continue
        values = {f: _price(spec.get(key)) for f, key in TABLE_FIELDS.items()}
        if all(v is None for v in values.values()):
            continue
        versions[model] = [
            _Version(
                effective_from,
                str(spec.get("litellm_provider", ""))[:64],
                str(spec.get("mode", ""))[:32],
                values,
            )
        ]
    return versions, effective_from


# Reading genai-prices --------------------------------------------------------------------------


def _package_values(prices) -> dict[str, Decimal | None]:
    """A genai-prices `ModelPrice` as per-token / per-request prices (tiers: the base rate). A
    price with no unit priced at all is a free model (`...:free`): 0 per input and output token.
    One that prices only other units (pages, audio hours, searches) gives all None."""
    values: dict[str, Decimal | None] = dict.fromkeys(PRICE_FIELDS)
    if not any(v is not None for k, v in vars(prices).items() if not k.startswith("_")):
        return values | {"input_per_token": Decimal(0), "output_per_token": Decimal(0)}
    for name, (key, exponent) in PACKAGE_FIELDS.items():
        value = getattr(prices, key, None)
        if isinstance(value, genai_types.TieredPrices):
            value = value.base
        if isinstance(value, Decimal | int) and not isinstance(value, bool):
            values[name] = _price(Decimal(value).scaleb(-exponent))
    return values


def _model_versions(model, provider_id: str) -> list[_Version]:
    """The price history of one genai-prices model, oldest first."""
    conditional = (
        [(None, model.prices)]
        if isinstance(model.prices, genai_types.ModelPrice)
        else [(c.constraint, c.prices) for c in model.prices]
    )
    by_start: dict[datetime, dict] = {}
    for constraint, prices in conditional:
        if isinstance(constraint, genai_types.TimeOfDateConstraint):
            continue  # off-peak prices: the standard price applies
        start = (
            datetime.combine(constraint.start_date, datetime.min.time(), tzinfo=UTC)
            if isinstance(constraint, genai_types.StartDateConstraint)
            else ALWAYS
        )
        by_start[start] = _package_values(prices)  # a later one with the same start wins
    versions: list[_Version] = []
    for start in sorted(by_start):
        values = by_start[start]
        if all(v is None for v in values.values()):
            continue
        if versions and _same_values(versions[-1], values):
            continue
        versions.append(_Version(start, provider_id[:64], "", values))
    return versions


def package_keys(providers) -> dict[tuple[str, str], str]:
    """The `ModelPrice` key of each (provider id, model id) of genai-prices data, assigned in this
    order of precedence (the first claim of a key wins):

    1. a plain id, by the provider whose own model pattern matches it (`gpt-4o`: OpenAI);
    2. OpenRouter's ids (`openai/gpt-4o`: OpenRouter's price);
    3. a plain id that no provider's model pattern claims, by the other providers in the
       package's order (`llama-3.1-8b-instant`: Groq); a name such as `claude-sonnet-4` is left
       to its maker, whose matching resolves it (to Anthropic's `claude-sonnet-4-0`);
    4. `<provider>/<id>` for every provider's models (`azure/gpt-4o`).

    A (provider, model) can end up without a key when every candidate is taken (it is then the
    same model sold under a name another provider claimed first)."""
    keys: dict[str, tuple[str, str]] = {}
    others = [p for p in providers if p.id != OPENROUTER]
    openrouter = [p for p in providers if p.id == OPENROUTER]

    def claim(key: str, provider, model) -> None:
        if len(key) <= 200:
            keys.setdefault(key, (provider.id, model.id))

    for provider in others:
        if provider.model_match is not None:
            for model in provider.models:
                if provider.model_match.is_match(model.id.lower()):
                    claim(model.id, provider, model)
    for provider in openrouter:
        for model in provider.models:
            claim(model.id, provider, model)
    patterns = [p.model_match for p in others if p.model_match is not None]
    for provider in others:
        for model in provider.models:
            if not any(pattern.is_match(model.id.lower()) for pattern in patterns):
                claim(model.id, provider, model)
    for provider in others:
        for model in provider.models:
            claim(f"{provider.id}/{model.id}", provider, model)
    out: dict[tuple[str, str], str] = {}
    for key, ref in keys.items():
        out.setdefault(ref, key)  # the first (most specific) key of a model
    return out


def _package_versions(
    snapshot: DataSnapshot, only: Iterable[str] | None = None
) -> dict[str, list[_Version]]:
    """{key: versions} of a genai-prices data snapshot; with `only`, just the keys that these
    model ids resolve to (ValidationFailed for one that resolves to none)."""
    keys = _snapshot_keys(snapshot)
    wanted = None
    if only is not None:
        known = set(keys.values())
        wanted = set()
        for ref in only:
            candidates = [ref, *_package_candidates(ref, snapshot)]
            found = next((k for k in candidates if k in known), None)
            if found is None:
                raise ValidationFailed({"models": [f"'{ref}' is not in the genai-prices data."]})
            wanted.add(found)
    models = {(p.id, m.id): m for p in snapshot.providers for m in p.models}
    out: dict[str, list[_Version]] = {}
    for (provider_id, model_id), key in keys.items():
        if wanted is None or key in wanted:
            if versions := _model_versions(models[provider_id, model_id], provider_id):
                out[key] = versions
    return out


# Loading ------------------------------------------------------------------------------------------


def _new_versions(
    stored: list[ModelPrice], wanted: list[_Version], *, as_of: datetime, revise: bool
) -> list[_Version]:
    """The versions to add to a model's `stored` ones (oldest first) so that it follows
    `wanted`. Versions are never changed or removed (events point at them): a version that
    starts after the latest stored one is added when its prices differ from the one before it;
    when the source gives, for the latest stored version's time, other prices than stored (a
    revised price), the revision is added from `as_of` if `revise` (package data), else ignored
    (an older LiteLLM file than what is loaded)."""
    if not stored:
        return list(wanted)
    last = stored[-1]
    history = [v for v in wanted if v.effective_from <= last.effective_from]
    later = [v for v in wanted if v.effective_from > last.effective_from]
    out: list[_Version] = []
    previous: ModelPrice | _Version = last
    if (
        revise
        and history
        and as_of > last.effective_from
        and (not later or as_of < later[0].effective_from)
        and not _same_values(last, history[-1].values)
    ):
        revision = history[-1]
        out.append(_Version(as_of, revision.provider, revision.mode, revision.values))
        previous = out[-1]
    for version in later:
        if not _same_values(previous, version.values):
            out.append(version)
            previous = version
    return out


def _load(
    versions: dict[str, list[_Version]],
    *,
    source: str,
    as_of: datetime,
    revise: Callable[[ModelPrice], bool],
) -> tuple[int, int]:
    """Add the new versions of `versions` (see `_new_versions`); `revise(latest stored row)` says
    whether a revised price may be added. Returns (versions created, models unchanged)."""
    stored: dict[str, list[ModelPrice]] = {}
    for row in ModelPrice.objects.order_by("model", "effective_from"):
        if row.model in versions:
            stored.setdefault(row.model, []).append(row)
    rows, unchanged = [], 0
    for key, wanted in versions.items():
        history = stored.get(key, [])
        new = _new_versions(
            history, wanted, as_of=as_of, revise=bool(history) and revise(history[-1])
        )
        unchanged += not new
        rows += [
            ModelPrice(
                model=key,
                provider=v.provider,
                mode=v.mode,
                effective_from=v.effective_from,
                source=source[:200],
                **v.values,
            )
            for v in new
        ]
    ModelPrice.objects.bulk_create(rows, batch_size=500)
    prices_cache_clear()
    transaction.on_commit(prices_cache_clear)
    return len(rows), unchanged


def _never(row: ModelPrice) -> bool:
    return False


def _always(row: ModelPrice) -> bool:
    return True


def _unless_fetched(row: ModelPrice) -> bool:
    return not row.source.startswith(FETCHED_SOURCE)


@transaction.atomic
def prices_load(
    *,
    path: Path | str | None = None,
    effective_from: datetime | None = None,
    models: Iterable[str] | None = None,
) -> LoadResult:
    """Load prices into `ModelPrice` versions; idempotent (loading the same data twice writes
    nothing).

    Without `path`: the data of the installed `genai-prices` (its bundled snapshot, or what
    `prices_sync` fetched in this process): every model, or only those that `models` (ids as
    clients send them) resolve to. A price the data revised without a start date becomes a new
    version from now, except that the bundled snapshot never revises what a fetched (newer) one
    stored.

    With `path`: a LiteLLM-format price table. A model whose prices differ from its latest stored
    version gets a new version from `effective_from` (default: the table's `last_updated`); a
    table older than what is stored changes nothing.

    Raises ValidationFailed for a file that is not a LiteLLM table, or a `models` id unknown to
    the package."""
    if path is not None:
        versions, effective_from = _litellm_versions(Path(path), effective_from)
        created, unchanged = _load(
            versions, source=Path(path).name, as_of=effective_from, revise=_never
        )
        return LoadResult(created, unchanged, effective_from, Path(path).name)
    return _load_snapshot(get_snapshot(), models=models)


def _load_snapshot(snapshot: DataSnapshot, *, models: Iterable[str] | None = None) -> LoadResult:
    now = timezone.now()
    if snapshot.from_auto_update:
        source, revise = FETCHED_SOURCE, _always
    else:
        source = BUNDLED_SOURCE.format(version=package_version("genai-prices"))
        revise = _unless_fetched
    created, unchanged = _load(
        _package_versions(snapshot, models), source=source, as_of=now, revise=revise
    )
    return LoadResult(created, unchanged, now, source)


@dataclass(frozen=True)
class SyncResult:
    """`fetched`: the published data was fetched and loaded (`load`); else `message` says why
    not, and the stored prices were kept."""

    fetched: bool
    message: str
    load: LoadResult | None = None


def prices_sync(*, url: str | None = None, timeout: float = SYNC_TIMEOUT) -> SyncResult:
    """Fetch the latest prices genai-prices publishes (its `UpdatePrices` fetcher; `url` defaults
    to the package's, `timeout` in seconds) and load them as `prices_load` does, revising prices
    that changed from now on. Without internet (or on a timeout, an HTTP error, data that does
    not parse) nothing is raised: the stored prices stay, a warning is logged and returned, and
    an installation with no prices at all gets the installed snapshot's."""
    updater = UpdatePrices(
        url=url or DEFAULT_UPDATE_URL,
        request_timeout=httpx2.Timeout(timeout=timeout, connect=min(timeout, 5.0)),
    )
    try:
        snapshot = updater.fetch()
        if snapshot is None or not snapshot.providers:
            raise ValueError("the published data has no providers")
    except Exception as exc:  # noqa: BLE001 - offline, timeout, HTTP or data error: keep prices
        message = (
            f"Could not fetch the published genai-prices data from {updater.url} "
            f"({type(exc).__name__}: {exc}); keeping the installed prices."
        )
        logger.warning(message)
        load = None
        if not ModelPrice.objects.exists():
            load = prices_load()
            message += f" Loaded the installed snapshot: {load.created} price versions."
        return SyncResult(False, message, load)
    with transaction.atomic():
        load = _load_snapshot(snapshot)
    message = (
        f"Fetched genai-prices data ({len(snapshot.providers)} providers): "
        f"{load.created} new price versions, {load.unchanged} models unchanged."
    )
    logger.info(message)
    return SyncResult(True, message, load)


# Finding a model's price (the usage hot path) ---------------------------------------------------

CACHE_SECONDS = 60  # other processes see a load within this time
ALIAS_CACHE_SIZE = 10_000


@dataclass
class _Cache:
    """What this process knows of `ModelPrice`, for `CACHE_SECONDS`: every key, the resolution of
    the ids seen, and the versions of the keys priced."""

    expires: float
    keys: frozenset[str] | None = None
    lower: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str | None] = field(default_factory=dict)
    versions: dict[str, list[ModelPrice]] = field(default_factory=dict)


_cache = _Cache(expires=0.0)
_cache_lock = threading.Lock()


def prices_cache_clear() -> None:
    """Forget the cached prices of this process (a load calls it; other processes expire theirs
    after `CACHE_SECONDS`)."""
    global _cache
    _cache = _Cache(expires=0.0)


def _current() -> _Cache:
    global _cache
    cache = _cache
    if cache.expires < time.monotonic():
        cache = _Cache(expires=time.monotonic() + CACHE_SECONDS)
        _cache = cache
    if cache.keys is None:
        with _cache_lock:
            if cache.keys is None:
                keys = frozenset(ModelPrice.objects.values_list("model", flat=True).distinct())
                cache.lower = {k.lower(): k for k in sorted(keys, reverse=True)}  # A < a wins
                cache.keys = keys
    return cache


def _package_candidates(ref: str, snapshot: DataSnapshot | None = None) -> Iterator[str]:
    """Keys that genai-prices' own model matching gives for `ref` (aliases, dated ids, a
    provider prefix), most specific first. Reads the package's data, never its lookup caches
    (they would grow with every unknown id a client sends)."""
    snapshot = snapshot or get_snapshot()
    keys = _snapshot_keys(snapshot)
    providers = snapshot.providers
    name = ref.strip().lower()
    found: list = []
    if "/" in name:
        for provider in providers:
            if provider.id == OPENROUTER and (model := provider.find_model(name)):
                found.append((provider, model))
        prefix, name = name.split("/", 1)
        provider = find_provider_by_id(providers, prefix)
        if provider is not None and provider.id != OPENROUTER:
            if model := provider.find_model(name, all_providers=providers):
                found.append((provider, model))
    for provider in providers:  # the provider whose models these are (`gpt-`: OpenAI)
        if provider.model_match is not None and provider.model_match.is_match(name):
            if model := provider.find_model(name, all_providers=providers):
                found.append((provider, model))
            break
    for provider in providers:  # any provider that sells a model of this name
        if provider.id != OPENROUTER and (model := provider.find_model(name)):
            found.append((provider, model))
            break
    for provider, model in found:
        if (key := keys.get((provider.id, model.id))) is not None:
            yield key
        yield model.id
        yield f"{provider.id}/{model.id}"


_snapshot_key_cache: dict[int, tuple[DataSnapshot, dict]] = {}


def _snapshot_keys(snapshot: DataSnapshot) -> dict[tuple[str, str], str]:
    """`package_keys` of a snapshot, computed once per snapshot."""
    hit = _snapshot_key_cache.get(id(snapshot))
    if hit is None or hit[0] is not snapshot:
        hit = (snapshot, package_keys(snapshot.providers))
        _snapshot_key_cache.clear()
        _snapshot_key_cache[id(snapshot)] = hit
    return hit[1]


def _candidates(ref: str) -> Iterator[str]:
    """Stored keys that may price `ref`, in order: itself, OpenRouter's and LiteLLM's naming,
    genai-prices' matching, the id without its vendor prefix."""
    name = ref.strip()
    yield name
    if name.lower().startswith("openrouter/"):
        name = name[len("openrouter/") :]
        yield name
    else:
        yield f"openrouter/{name}"  # LiteLLM's key of an OpenRouter model
    yield from _package_candidates(name)
    if "/" in name:
        yield name.split("/", 1)[1]


def model_key(model: str) -> str | None:
    """The `ModelPrice` key that prices `model` as a client names it: itself when stored (exact,
    then ignoring case), else through genai-prices' model matching and OpenRouter's naming
    (`openai/gpt-4o`, `openrouter/openai/gpt-4o`, `gpt-4o-2024-08-06`, `codex-mini-latest`).
    None when nothing matches. Cached per id in the process (see `CACHE_SECONDS`)."""
    cache = _current()
    if model in cache.aliases:
        return cache.aliases[model]
    keys = cache.keys or frozenset()
    key = None
    for candidate in _candidates(model):
        if candidate in keys:
            key = candidate
            break
        if (lowered := cache.lower.get(candidate.lower())) is not None:
            key = lowered
            break
    if len(cache.aliases) < ALIAS_CACHE_SIZE:
        cache.aliases[model] = key
    return key


def model_suggestions(model: str, n: int = 3) -> list[str]:
    """Up to `n` stored model ids closest to `model` (difflib's ratio, best first), for the
    message of an unknown model."""
    lowered = _current().lower
    close = difflib.get_close_matches(model.strip().lower(), list(lowered), n=n, cutoff=0.6)
    return [lowered[c] for c in close]


def price_for(model: str, at: datetime) -> ModelPrice | None:
    """The price of `model` (resolved by `model_key`) in force at `at`; for a time before the
    model's first version, that first version (a replay of old traffic is priced at the earliest
    list we know). None when the model resolves to no stored price."""
    key = model_key(model)
    if key is None:
        return None
    cache = _current()
    versions = cache.versions.get(key)
    if versions is None:
        versions = list(ModelPrice.objects.filter(model=key).order_by("effective_from"))
        cache.versions[key] = versions
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


_context_windows: dict[str, int | None] = {}


def model_context_window(model: str) -> int | None:
    """The context window in tokens of `model` (resolved by `model_key`), from the genai-prices
    data the keys come from; None when unknown (a model loaded from a LiteLLM file only, or one
    the data gives none). The gateway takes it as the bound on a request's output tokens: a
    model never writes more than its context holds. Cached per key in the process."""
    key = model_key(model)
    if key is None:
        return None
    if key not in _context_windows:
        snapshot = get_snapshot()
        refs = {k: ref for ref, k in _snapshot_keys(snapshot).items()}
        window = None
        if (ref := refs.get(key)) is not None:
            provider = find_provider_by_id(snapshot.providers, ref[0])
            found = next((m for m in provider.models if m.id == ref[1]), None) if provider else None
            window = getattr(found, "context_window", None)
        _context_windows[key] = window
    return _context_windows[key]
