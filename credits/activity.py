"""Activity (a selector): the usage a principal (an API key, or a member's session) may see, by
UTC day and model, over the last 30 completed UTC days, as OpenRouter's `GET /activity` reports
it. What it may see is `selectors.usage_visible` (for a key: `selectors.usage_for_key`).

One read of the usage rollups and their tail (`credits.rollups.usage_sums`, by UTC day and
model) over at most 30 days of the key's visible usage; reversed usage is left out, as
everywhere else. Days are UTC days of `occurred_at` (when the request ran), as in the usage
report."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db.models import Q
from django.utils import timezone

from accounts.access import Principal

from . import rollups
from .models import ModelPrice

ACTIVITY_DAYS = 30
ZERO = Decimal(0)


def activity_days(now: datetime | None = None) -> tuple[date, date]:
    """(first, last) UTC day of the activity window: the 30 days before today (UTC)."""
    today = (now or timezone.now()).astimezone(UTC).date()
    return today - timedelta(days=ACTIVITY_DAYS), today - timedelta(days=1)


@dataclass(frozen=True)
class ActivityRow:
    date: date
    model: str
    provider: str
    requests: int
    usage: Decimal
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cached_tokens: int

    @property
    def endpoint_id(self) -> str:
        """A stable id for the (provider, model) pair: the portal has no endpoints of its own."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"credit-portal:{self.provider}/{self.model}"))


def activity_for(
    principal: Principal,
    *,
    day: date | None = None,
    api_key_hash: str | None = None,
    member_id: int | None = None,
    now: datetime | None = None,
) -> list[ActivityRow]:
    """The usage `principal` may see per UTC day and model, newest day first, over the last 30
    completed UTC days (or the one `day` of them), optionally of one key (by hash) or one member
    (by user id). The caller checks that `day` is in the window."""
    first, last = activity_days(now)
    start = datetime.combine(day or first, time.min, tzinfo=UTC)
    end = datetime.combine((day or last) + timedelta(days=1), time.min, tzinfo=UTC)
    where = Q()
    if api_key_hash is not None:
        where &= Q(api_key__hash=api_key_hash)
    if member_id is not None:
        where &= Q(member_id=member_id)
    rows = sorted(
        rollups.usage_sums_visible(
            principal, start=start, end=end, where=where, fields=["model"], time="date"
        ),
        key=lambda r: (-r["date"].toordinal(), r["model"]),
    )
    providers = _providers({row["model"] for row in rows})
    return [
        ActivityRow(
            date=row["date"],
            model=row["model"],
            provider=providers.get(row["model"]) or _provider_prefix(row["model"]),
            requests=row["events"],
            usage=row["cost"],
            prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"],
            reasoning_tokens=row["reasoning_tokens"],
            cached_tokens=row["cached_tokens"],
        )
        for row in rows
    ]


def _provider_prefix(model: str) -> str:
    """The provider an OpenRouter-style id names (`openai/gpt-4o`: openai), else ""."""
    return model.split("/", 1)[0] if "/" in model else ""


def _providers(models: set[str]) -> dict[str, str]:
    """The provider of each model in the price table (its latest version's), in one query."""
    providers: dict[str, str] = {}
    if models:
        for model, provider in (
            ModelPrice.objects.filter(model__in=models)
            .order_by("model", "effective_from")
            .values_list("model", "provider")
        ):
            providers[model] = provider  # the latest version wins
    return providers
