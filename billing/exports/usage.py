"""Usage rows: the usage events of an export (`credits.selectors.usage_visible` narrowed by the
filters), read through a server-side cursor, and each event as the CSV and JSON exports write
it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import F, QuerySet

from credits.models import UsageEvent
from credits.selectors import COUNTED, usage_visible

from .request import ExportRequest
from .values import Names, utc_iso


def usage_queryset(request: ExportRequest) -> QuerySet[UsageEvent]:
    """The usage events of the export: `usage_visible(principal)` narrowed by the filters
    (reversed ones left out of FOCUS), oldest first."""
    f = request.filters
    qs = usage_visible(request.principal)
    conditions = {
        "occurred_at__gte": f.start,
        "occurred_at__lt": f.end,
        "team__slug": f.team or None,
        "member__email__iexact": f.member or None,
        "api_key__hash": f.key or None,
        "model__icontains": f.model or None,
        "operation": f.operation or None,
        "conversation_id": f.conversation or None,
        "cost__gte": f.min_cost,
        "cost__lte": f.max_cost,
    }
    qs = qs.filter(**{k: v for k, v in conditions.items() if v is not None})
    if f.min_tokens is not None or f.max_tokens is not None:
        qs = qs.annotate(total_tokens=F("prompt_tokens") + F("completion_tokens"))
        if f.min_tokens is not None:
            qs = qs.filter(total_tokens__gte=f.min_tokens)
        if f.max_tokens is not None:
            qs = qs.filter(total_tokens__lte=f.max_tokens)
    if request.format == "focus.csv":
        qs = qs.filter(COUNTED)
    return qs.order_by("occurred_at", "id")


_USAGE_FIELDS = (
    "occurred_at",
    "event_id",
    "model",
    "operation",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "images",
    "cost",
    "cost_source",
    "team__slug",
    "team__name",
    "api_key_id",
    "api_key__name",
    "api_key__hash",
    "member_id",
    "member__email",
    "conversation_id",
    "transaction__reversed_by__id",
    "price__provider",
)


@dataclass(frozen=True)
class UsageRow:
    occurred_at: datetime
    event_id: str
    model: str
    operation: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    images: int
    cost: Decimal
    cost_source: str
    team_slug: str | None
    team_name: str | None
    key_id: int | None
    key_name: str | None
    key_hash: str | None
    member_id: int | None
    member_email: str | None
    conversation_id: str
    reversed_by: int | None
    price_provider: str | None


def usage_rows(request: ExportRequest, chunk_size: int | None = None) -> Iterator[UsageRow]:
    """The export's usage events, read through a server-side cursor in chunks (constant memory
    whatever the number of rows)."""
    chunk = chunk_size or settings.BILLING_EXPORT_CHUNK_ROWS
    rows = usage_queryset(request).values_list(*_USAGE_FIELDS)
    for values in rows.iterator(chunk_size=chunk):
        yield UsageRow(*values)


USAGE_COLUMNS = (
    "occurred_at",
    "event_id",
    "model",
    "operation",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "images",
    "cost",
    "cost_source",
    "reversed",
    "team",
    "key",
    "member",
    "conversation_id",
)


def usage_record(row: UsageRow, names: Names) -> dict[str, Any]:
    """One event as the CSV and JSON exports write it (`cost`: credits, a Decimal written as an
    exact decimal string)."""
    return {
        "occurred_at": utc_iso(row.occurred_at),
        "event_id": row.event_id,
        "model": row.model,
        "operation": row.operation,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "cached_tokens": row.cached_tokens,
        "reasoning_tokens": row.reasoning_tokens,
        "images": row.images,
        "cost": row.cost,
        "cost_source": row.cost_source,
        "reversed": row.reversed_by is not None,
        "team": row.team_slug or "",
        "key": names.key(row.key_id, row.key_name),
        "member": names.member(row.member_id, row.member_email),
        "conversation_id": row.conversation_id,
    }
