"""FOCUS 1.2 (https://focus.finops.org/focus-specification/v1-2/): a usage event as a row of the
`focus.csv` export (what the columns hold: `billing.exports`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, tzinfo

from django.conf import settings

from .request import ExportRequest
from .usage import UsageRow
from .values import Fixed, Names, focus_time, utc_iso

FOCUS_VERSION = "1.2"

FOCUS_COLUMNS = (
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "ContractedUnitPrice",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "ListUnitPrice",
    "PricingCategory",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "ServiceSubcategory",
    "SkuId",
    "SubAccountId",
    "SubAccountName",
    "Tags",
    "x_EventId",
    "x_OccurredAt",
    "x_Operation",
    "x_PromptTokens",
    "x_CompletionTokens",
    "x_CachedTokens",
    "x_ReasoningTokens",
    "x_Images",
    "x_Member",
    "x_ConversationId",
    "x_CostSource",
)


def model_provider(model: str, price_provider: str | None) -> str:
    """Who serves a model: the prefix of an OpenRouter id (`openai/gpt-4o` -> openai), else the
    price table's provider."""
    if "/" in model:
        return model.split("/", 1)[0]
    return price_provider or ""


class _Months:
    """Calendar months in the organization's time zone (FOCUS billing periods), cached."""

    def __init__(self, tz: tzinfo):
        self.tz = tz
        self._cache: dict[tuple[int, int], tuple[str, str]] = {}

    def of(self, moment: datetime) -> tuple[str, str]:
        local = moment.astimezone(self.tz)
        key = (local.year, local.month)
        if key not in self._cache:
            start = datetime(local.year, local.month, 1, tzinfo=self.tz)
            following = (start + timedelta(days=32)).replace(day=1)
            self._cache[key] = (focus_time(start), focus_time(following))
        return self._cache[key]


def _consumed(row: UsageRow) -> tuple[int, str]:
    tokens = row.prompt_tokens + row.completion_tokens
    if tokens:
        return tokens, "Tokens"
    if row.images:
        return row.images, "Images"
    return 1, "Requests"


def focus_record(row: UsageRow, names: Names, request: ExportRequest, months: _Months) -> list:
    """One usage event as a FOCUS 1.2 row (in FOCUS_COLUMNS order)."""
    organization = request.principal.organization
    period_start, period_end = months.of(row.occurred_at)
    hour = row.occurred_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    quantity, unit = _consumed(row)
    provider = model_provider(row.model, row.price_provider)
    key_id = names.key_id(row.key_id, row.key_hash)
    member = names.member(row.member_id, row.member_email)
    tags = {"operation": row.operation}
    if member:
        tags["member"] = member
    if row.team_slug:
        tags["team"] = row.team_slug
    cost = Fixed(row.cost)
    description = (
        f"{row.operation} request to {row.model}: {row.prompt_tokens} input tokens "
        f"({row.cached_tokens} cached), {row.completion_tokens} output tokens "
        f"({row.reasoning_tokens} reasoning)"
    )
    return [
        cost,
        organization.slug,
        organization.name,
        "USD",
        period_end,
        period_start,
        "Usage",
        "",
        description,
        "Usage-Based",
        focus_time(hour + timedelta(hours=1)),
        focus_time(hour),
        quantity,
        unit,
        cost,
        "",
        cost,
        settings.BILLING_SELLER["name"],
        cost,
        "",
        "Standard",
        quantity,
        unit,
        provider,
        provider,
        "",
        "",
        key_id or row.model,
        names.key(row.key_id, row.key_name) if key_id else row.model,
        "API key" if key_id else "Model",
        "AI and Machine Learning",
        row.model,
        "Generative AI",
        row.model,
        row.team_slug or "",
        row.team_name or "",
        json.dumps(tags, sort_keys=True),
        row.event_id,
        utc_iso(row.occurred_at),
        row.operation,
        row.prompt_tokens,
        row.completion_tokens,
        row.cached_tokens,
        row.reasoning_tokens,
        row.images,
        member,
        row.conversation_id,
        row.cost_source,
    ]
