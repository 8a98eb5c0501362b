"""Exports of usage and ledger history: the rows a principal may read, in CSV, JSON, FOCUS CSV or a
PDF summary, streamed in constant memory or written to a file by a Celery task.

Rows come only from `credits.selectors.usage_visible` (usage: the principal's row filter, as in
the usage explorer and `GET /api/v1/credits/usage`) and `credits.selectors.accounts_visible`
(ledger: the accounts of the ledger page), so an export never shows more than the same principal
reads in the portal. Member e-mails and key names it may not identify are left blank, as in the
explorer; with `pseudonymize`, the ones it may identify become stable pseudonyms
(`member-<first 12 hex of HMAC-SHA256(organization secret, user id)>`, `key-<...>` of
`key:<key id>`), the secret being the organization's `billing.models.PseudonymSecret`.

Formats (one row per usage event or ledger entry, oldest first):

- `csv`, `json`: costs and amounts are decimal strings in credits (1 credit = 1 USD), never
  floats; times are UTC, ISO 8601 (`2026-11-30T14:05:09.123456Z`). Text a client chose is
  written through `portal.spreadsheet` (no formula injection).
- `focus.csv` (usage only): the FinOps Open Cost and Usage Specification, FOCUS 1.2
  (https://focus.finops.org/focus-specification/v1-2/): `ChargeCategory` Usage, `BillingCurrency`
  USD, `ServiceName` the model (`openai/gpt-4o`), `ResourceId` the API key's hash (else the
  model), `ConsumedQuantity` in `ConsumedUnit` Tokens (Images, Requests for requests without
  tokens), charge periods the UTC hour of the request, billing periods the calendar month in the
  organization's time zone, portal details in `x_` columns. Usage drawn from prepaid credits is
  billed at its cost (`BilledCost` = `EffectiveCost` = `ListCost` = `ContractedCost`); usage
  whose debit was reversed is left out (it was never charged).
- `pdf`: a summary (totals, by period, by model, team, operation, member and key; the ledger's
  accounts with opening and closing balances), each table at most `BILLING_EXPORT_PDF_ROWS`
  rows, rendered by WeasyPrint.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, time, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db.models import Count, F, Q, QuerySet, Sum, Window
from django.db.models.functions import Coalesce, TruncDay, TruncMonth
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from accounts.access import Principal
from accounts.models import ApiKey, Membership
from credits.models import LedgerEntry, LedgerTransaction, UsageEvent
from credits.reports import Identities, organization_tz
from credits.selectors import COUNTED, accounts_visible, usage_visible
from portal.errors import NotFound, PermissionDenied, ValidationFailed
from portal.spreadsheet import csv_lines

from .models import ExportJob

ZERO = Decimal(0)
FORMATS = {
    ExportJob.Kind.USAGE: ("csv", "json", "focus.csv", "pdf"),
    ExportJob.Kind.LEDGER: ("csv", "json", "pdf"),
}
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "focus.csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "pdf": "application/pdf",
}
# The scope each kind needs on top of billing:read (the explorer's and the ledger page's).
KIND_SCOPES = {ExportJob.Kind.USAGE: "usage:read", ExportJob.Kind.LEDGER: "credits:read"}
FOCUS_VERSION = "1.2"


def stream_max_rows() -> int:
    """Rows up to which an export is streamed at once; above, a Celery task writes a file."""
    return settings.BILLING_EXPORT_STREAM_MAX_ROWS


# Filters -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportFilters:
    """The usage explorer's filters (and the ledger's account and transaction kind). `start`
    inclusive and `end` exclusive are aware UTC datetimes; `member` is an e-mail and `key` a key
    hash, both of identities the principal may name."""

    start: datetime | None = None
    end: datetime | None = None
    team: str = ""
    member: str = ""
    key: str = ""
    model: str = ""
    operation: str = ""
    conversation: str = ""
    min_tokens: int | None = None
    max_tokens: int | None = None
    min_cost: Decimal | None = None
    max_cost: Decimal | None = None
    account: int | None = None
    transaction_kind: str = ""

    def to_json(self) -> dict[str, Any]:
        """Only the filters set, JSON-ready (times UTC ISO 8601, decimals as strings)."""
        out = {}
        for name, value in asdict(self).items():
            if value is None or value == "":
                continue
            if isinstance(value, datetime):
                value = utc_iso(value)
            elif isinstance(value, Decimal):
                value = f"{value:f}"
            out[name] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportFilters:
        values = dict(data)
        for name in ("start", "end"):
            if values.get(name):
                values[name] = datetime.fromisoformat(values[name].replace("Z", "+00:00"))
        for name in ("min_cost", "max_cost"):
            if values.get(name) is not None:
                values[name] = Decimal(values[name])
        return cls(**values)


FILTER_FIELDS = (
    "from",
    "to",
    "team",
    "member",
    "key",
    "model",
    "operation",
    "conversation",
    "min_tokens",
    "max_tokens",
    "min_cost",
    "max_cost",
    "account",
    "transaction_kind",
)
LEDGER_FILTERS = frozenset({"from", "to", "account", "transaction_kind"})


def _moment(value: str, tz: tzinfo, field: str, errors: dict) -> datetime | None:
    """An ISO 8601 date (local midnight) or date-time; without an offset it is read in `tz`."""
    value = value.strip()
    try:
        parsed = parse_datetime(value)
        if parsed is None:
            day = parse_date(value)
            parsed = datetime.combine(day, time.min) if day else None
    except ValueError:
        parsed = None
    if parsed is None:
        errors[field] = ["An ISO 8601 date or date-time is required (e.g. 2026-11-01)."]
        return None
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=tz)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        errors[field] = ["Out of range."]
        return None


def _whole(value, field: str, errors: dict) -> int | None:
    try:
        number = int(str(value))
    except ValueError:
        errors[field] = ["A whole number is required."]
        return None
    if number < 0 or number > 2**31 - 1:
        errors[field] = ["Out of range."]
        return None
    return number


def _credits(value, field: str, errors: dict) -> Decimal | None:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        errors[field] = ["A decimal number of credits is required."]
        return None
    if not number.is_finite() or number < 0 or number.adjusted() > 15:
        errors[field] = ["Out of range."]
        return None
    return number


def filters_parse(principal: Principal, data: dict[str, Any], *, kind: str) -> ExportFilters:
    """The filters of an API request (`from`, `to`: ISO 8601 dates or date-times, naive ones in
    the organization's time zone, `to` exclusive; `team` slug; `member` e-mail; `key` hash;
    `model` (part of the model id, as the explorer); `operation`; `conversation`; token and
    credit bounds; for the ledger `account` id and `transaction_kind`). Members and keys the
    principal may not name, and accounts it may not see, are refused like unknown ones.
    Raises ValidationFailed (400) naming each bad field."""
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(data) - set(FILTER_FIELDS))
    for name in unknown:
        errors[name] = ["Unknown filter."]
    tz = organization_tz(principal.organization)
    text = {k: str(v).strip() for k, v in data.items() if v is not None and str(v).strip() != ""}
    start = _moment(text["from"], tz, "from", errors) if "from" in text else None
    end = _moment(text["to"], tz, "to", errors) if "to" in text else None
    if start and end and end <= start:
        errors["to"] = ["Must be after `from`."]
    values: dict[str, Any] = {"start": start, "end": end}
    for name in ("team", "model", "conversation"):
        if name in text:
            if len(text[name]) > 255:
                errors[name] = ["At most 255 characters."]
            values[name] = text[name][:255]
    if "operation" in text:
        if text["operation"] not in UsageEvent.Operation.values:
            errors["operation"] = [f"One of: {', '.join(UsageEvent.Operation.values)}."]
        values["operation"] = text["operation"]
    identities = Identities(principal)
    if "member" in text:
        user_id = (
            Membership.objects.filter(
                organization=principal.organization, user__email__iexact=text["member"]
            )
            .values_list("user_id", flat=True)
            .first()
        )
        if user_id is None or not identities.member(user_id):
            errors["member"] = ["No such member in this organization."]
        values["member"] = text["member"]
    if "key" in text:
        key = ApiKey.objects.filter(organization=principal.organization, hash=text["key"]).first()
        if key is None or not identities.key(key.pk):
            errors["key"] = ["No such API key in this organization."]
        values["key"] = text["key"]
    for name in ("min_tokens", "max_tokens"):
        if name in text:
            values[name] = _whole(text[name], name, errors)
    for name in ("min_cost", "max_cost"):
        if name in text:
            values[name] = _credits(text[name], name, errors)
    for low, high in (("min_tokens", "max_tokens"), ("min_cost", "max_cost")):
        if values.get(low) is not None and values.get(high) is not None:
            if values[high] < values[low]:
                errors[high] = ["Must not be below the minimum."]
    if kind == ExportJob.Kind.LEDGER:
        if "account" in text:
            pk = _whole(text["account"], "account", errors)
            if pk is not None and not accounts_visible(principal).filter(pk=pk).exists():
                errors["account"] = ["No such account in this organization."]
            values["account"] = pk
        if "transaction_kind" in text:
            if text["transaction_kind"] not in LedgerTransaction.Kind.values:
                errors["transaction_kind"] = [
                    f"One of: {', '.join(LedgerTransaction.Kind.values)}."
                ]
            values["transaction_kind"] = text["transaction_kind"]
        for name in sorted(set(text) - LEDGER_FILTERS):
            errors.setdefault(name, ["A filter of usage exports only."])
    else:
        for name in ("account", "transaction_kind"):
            if name in text:
                errors[name] = ["A filter of ledger exports only."]
    if errors:
        raise ValidationFailed(errors)
    return ExportFilters(**values)


def kind_format_check(kind: str, format: str) -> None:
    """Raises ValidationFailed (400) for an unknown kind or a format the kind has not."""
    if kind not in FORMATS:
        raise ValidationFailed({"kind": [f"One of: {', '.join(FORMATS)}."]})
    if format not in FORMATS[kind]:
        raise ValidationFailed({"format": [f"One of: {', '.join(FORMATS[kind])}."]})


def require_kind_scope(principal: Principal, kind: str) -> None:
    """Usage exports need `usage:read`, ledger exports `credits:read` (on top of billing:read).
    Raises PermissionDenied (403)."""
    principal.require(KIND_SCOPES[kind])


# Values ------------------------------------------------------------------------------------------


def utc_iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a `Z`: 2026-11-30T14:05:09.123456Z (no fraction when whole)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def focus_time(moment: datetime) -> str:
    """FOCUS date-times: UTC, whole seconds, `YYYY-MM-DDTHH:mm:ssZ`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Fixed:
    """A number for `portal.spreadsheet.csv_lines`: written as its fixed-point text and, not
    being a `str`, never taken for a formula (a negative ledger amount starts with "-")."""

    __slots__ = ("text",)

    def __init__(self, value: Decimal):
        self.text = f"{value:f}"

    def __str__(self) -> str:
        return self.text


def pseudonym(secret: bytes, prefix: str, message: str) -> str:
    """`<prefix>-<first 12 hex digits of HMAC-SHA256(secret, message)>`."""
    digest = hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()
    return f"{prefix}-{digest[:12]}"


class Names:
    """How members and keys appear in an export for `principal`: blank when it may not identify
    them (`Principal.sees_member`, `sees_key`), else their e-mail and key name, or with a
    `secret` their pseudonyms (the same person always the same pseudonym in one organization)."""

    def __init__(self, principal: Principal, secret: bytes | None):
        self.identities = Identities(principal)
        self.secret = secret

    def member(self, user_id: int | None, email: str | None) -> str:
        if user_id is None or not self.identities.member(user_id):
            return ""
        if self.secret is not None:
            return pseudonym(self.secret, "member", str(user_id))
        return email or ""

    def key(self, key_id: int | None, name: str | None) -> str:
        if key_id is None or not self.identities.key(key_id):
            return ""
        if self.secret is not None:
            return pseudonym(self.secret, "key", f"key:{key_id}")
        return name or ""

    def key_id(self, key_id: int | None, hash: str | None) -> str:
        """The key's id for FOCUS `ResourceId`: its hash (OpenRouter's key id), a pseudonym."""
        if key_id is None or not self.identities.key(key_id):
            return ""
        if self.secret is not None:
            return pseudonym(self.secret, "key", f"key:{key_id}")
        return hash or ""


# The request -------------------------------------------------------------------------------------


@dataclass
class ExportRequest:
    """One export: who reads (`principal`), what and how. `secret` is the organization's
    pseudonym secret when `pseudonymize` (`billing.services.exports.pseudonym_secret`)."""

    principal: Principal
    kind: str
    format: str
    filters: ExportFilters = field(default_factory=ExportFilters)
    pseudonymize: bool = False
    secret: bytes | None = None

    def __post_init__(self):
        kind_format_check(self.kind, self.format)
        if self.pseudonymize and self.secret is None:
            raise ValueError("a pseudonymized export needs the organization's secret")

    @property
    def names(self) -> Names:
        return Names(self.principal, self.secret if self.pseudonymize else None)

    @property
    def tz(self) -> tzinfo:
        return organization_tz(self.principal.organization)

    def filename(self, now: datetime | None = None) -> str:
        stamp = timezone.localtime(now or timezone.now(), self.tz).strftime("%Y%m%d-%H%M%S")
        return f"{self.kind}-{self.principal.organization.slug}-{stamp}.{self.format}"


# Usage rows --------------------------------------------------------------------------------------


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


def _csv_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return Fixed(value)
    return "" if value is None else value


# FOCUS 1.2 ---------------------------------------------------------------------------------------

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


# Ledger rows -------------------------------------------------------------------------------------


def _ledger_entries(request: ExportRequest) -> QuerySet[LedgerEntry]:
    f = request.filters
    entries = LedgerEntry.objects.filter(account__in=accounts_visible(request.principal))
    if f.account is not None:
        entries = entries.filter(account_id=f.account)
    return entries


def ledger_queryset(request: ExportRequest) -> QuerySet[LedgerEntry]:
    """The entries of the accounts the principal sees in the period (all kinds: a transaction
    kind filter is applied while writing, so that running balances stay the accounts' own),
    oldest first, each with `running` (the sum of its account's entries in the period up to
    it; add the account's opening balance)."""
    f = request.filters
    entries = _ledger_entries(request)
    if f.start is not None:
        entries = entries.filter(created_at__gte=f.start)
    if f.end is not None:
        entries = entries.filter(created_at__lt=f.end)
    running = Window(Sum("amount"), partition_by=[F("account_id")], order_by=F("id").asc())
    return entries.annotate(running=running).order_by("id")


def opening_balances(request: ExportRequest) -> dict[int, Decimal]:
    """{account id: balance before the period} (one grouped query; empty without `from`)."""
    if request.filters.start is None:
        return {}
    rows = (
        _ledger_entries(request)
        .filter(created_at__lt=request.filters.start)
        .values("account_id")
        .annotate(total=Sum("amount"))
    )
    return {r["account_id"]: r["total"] for r in rows}


_LEDGER_FIELDS = (
    "created_at",
    "id",
    "transaction_id",
    "transaction__kind",
    "account_id",
    "account__kind",
    "account__team__slug",
    "amount",
    "running",
    "lot_id",
    "transaction__memo",
)
LEDGER_COLUMNS = (
    "created_at",
    "entry",
    "transaction",
    "transaction_kind",
    "account",
    "account_kind",
    "team",
    "amount",
    "running_balance",
    "lot",
    "memo",
)


def ledger_rows(request: ExportRequest, chunk_size: int | None = None) -> Iterator[dict]:
    """The export's ledger entries (server-side cursor, chunks), each with the balance of its
    account right after it; the `transaction_kind` filter applied here."""
    chunk = chunk_size or settings.BILLING_EXPORT_CHUNK_ROWS
    opening = opening_balances(request)
    wanted = request.filters.transaction_kind
    rows = ledger_queryset(request).values_list(*_LEDGER_FIELDS)
    for values in rows.iterator(chunk_size=chunk):
        created, pk, tx, tx_kind, account, a_kind, team, amount, running, lot, memo = values
        if wanted and tx_kind != wanted:
            yield None  # counted for progress, not written
            continue
        yield {
            "created_at": utc_iso(created),
            "entry": pk,
            "transaction": tx,
            "transaction_kind": tx_kind,
            "account": account,
            "account_kind": a_kind,
            "team": team or "",
            "amount": amount,
            "running_balance": opening.get(account, ZERO) + running,
            "lot": lot,
            "memo": memo,
        }


# Counting and writing ----------------------------------------------------------------------------


def export_count(request: ExportRequest, *, limit: int | None = None) -> int:
    """Rows the export reads (at most `limit + 1` counted when a limit is given, so deciding
    whether to stream costs the same for a billion rows). A PDF reads its summary: 0."""
    if request.format == "pdf":
        return 0
    if request.kind == ExportJob.Kind.USAGE:
        qs = usage_queryset(request)
    else:
        qs = _ledger_entries(request)
        f = request.filters
        if f.start is not None:
            qs = qs.filter(created_at__gte=f.start)
        if f.end is not None:
            qs = qs.filter(created_at__lt=f.end)
    qs = qs.order_by()
    if limit is not None:
        return qs.values("pk")[: limit + 1].count()
    return qs.count()


Progress = Callable[[int], None]  # called with the number of rows read so far


def _counted(rows: Iterable, progress: Progress | None, every: int) -> Iterator:
    done = 0
    for row in rows:
        done += 1
        if progress is not None and done % every == 0:
            progress(done)
        yield row
    if progress is not None:
        progress(done)


def export_chunks(
    request: ExportRequest,
    *,
    progress: Progress | None = None,
    every: int = 1000,
    stats: dict | None = None,
) -> Iterator[str | bytes]:
    """The export's content, piece by piece (text for CSV and JSON, one `bytes` for a PDF).
    `progress(rows read)` is called every `every` rows and at the end; `stats["rows"]` is set to
    the rows written."""
    stats = {} if stats is None else stats
    stats["rows"] = 0
    if request.format == "pdf":
        yield render_pdf(request)
        if progress is not None:
            progress(0)
        return
    names = request.names

    def written(records: Iterable) -> Iterator:
        for record in records:
            if record is None:  # read (for progress), not written
                continue
            stats["rows"] += 1
            yield record

    if request.kind == ExportJob.Kind.USAGE:
        rows = written(_counted(usage_rows(request), progress, every))
        if request.format == "focus.csv":
            months = _Months(request.tz)
            yield from csv_lines(
                FOCUS_COLUMNS, (focus_record(r, names, request, months) for r in rows)
            )
            return
        records = (usage_record(r, names) for r in rows)
        columns = USAGE_COLUMNS
    else:
        records = written(_counted(ledger_rows(request), progress, every))
        columns = LEDGER_COLUMNS
    if request.format == "csv":
        yield from csv_lines(columns, ([_csv_value(r[c]) for c in columns] for r in records))
    else:
        yield from json_lines(request, records)


def _json_value(value: Any) -> str:
    """Decimals in JSON exports are exact strings ("0.012500000000"), never floats."""
    if isinstance(value, Decimal):
        return f"{value:f}"
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_lines(request: ExportRequest, records: Iterable[dict]) -> Iterator[str]:
    """`{"kind", "organization", "generated_at", "time_zone", "filters", "pseudonymized",
    "data": [...], "count"}`, written one record at a time."""
    head = {
        "kind": request.kind,
        "organization": request.principal.organization.slug,
        "generated_at": utc_iso(timezone.now()),
        "time_zone": str(request.tz),
        "filters": request.filters.to_json(),
        "pseudonymized": request.pseudonymize,
    }
    yield json.dumps(head)[:-1] + ', "data": ['
    count = 0
    for record in records:
        yield ("," if count else "") + "\n" + json.dumps(record, default=_json_value)
        count += 1
    yield f'\n], "count": {count}}}\n'


# The PDF summary ---------------------------------------------------------------------------------


def _top(rows: list[dict], n: int) -> tuple[list[dict], int]:
    return rows[:n], max(0, len(rows) - n)


def usage_summary(request: ExportRequest) -> dict:
    """Totals and bounded breakdowns of the export's counted usage (reversed usage left out, as
    the reports): by day (by month beyond 62 days), model, team, operation, member and key,
    each at most BILLING_EXPORT_PDF_ROWS rows by cost; members and keys the principal may not
    identify summed into one row."""
    n = settings.BILLING_EXPORT_PDF_ROWS
    qs = usage_queryset(request).filter(COUNTED).order_by()
    sums = {
        "events": Count("id"),
        "cost": Coalesce(Sum("cost"), ZERO),
        "prompt_tokens": Coalesce(Sum("prompt_tokens"), 0),
        "completion_tokens": Coalesce(Sum("completion_tokens"), 0),
    }
    totals = qs.aggregate(**sums)
    tz = request.tz
    by_day = list(
        qs.annotate(bucket=TruncDay("occurred_at", tzinfo=tz))
        .values("bucket")
        .annotate(**sums)
        .order_by("bucket")
    )
    period = "day"
    if len(by_day) > 62:
        period = "month"
        by_day = list(
            qs.annotate(bucket=TruncMonth("occurred_at", tzinfo=tz))
            .values("bucket")
            .annotate(**sums)
            .order_by("bucket")
        )
    label_format = "%Y-%m-%d" if period == "day" else "%Y-%m"
    series = [
        {
            "label": r["bucket"].astimezone(tz).strftime(label_format),
            **{k: r[k] for k in sums},
        }
        for r in by_day
    ]
    series, series_more = (series[-n:], max(0, len(series) - n))
    breakdowns = []
    plain = (("Model", "model"), ("Team", "team__slug"), ("Operation", "operation"))
    for title, field_name in plain:
        rows = [
            {"label": r[field_name] or "(none)", **{k: r[k] for k in sums}}
            for r in qs.values(field_name).annotate(**sums).order_by("-cost", field_name)[: n + 1]
        ]
        shown, more = _top(rows, n)
        breakdowns.append({"title": title, "rows": shown, "more": more})
    names = request.names
    for title, id_field, text_field, label in (
        ("Member", "member_id", "member__email", names.member),
        ("API key", "api_key_id", "api_key__name", names.key),
    ):
        merged: dict[str, dict] = {}
        for r in qs.values(id_field, text_field).annotate(**sums):
            if r[id_field] is None:
                name = "(none)"
            else:
                name = label(r[id_field], r[text_field]) or f"(other {title.lower()}s)"
            row = merged.setdefault(name, {"label": name, **dict.fromkeys(sums, 0)})
            for k in sums:
                row[k] += r[k]
        rows = sorted(merged.values(), key=lambda r: (-r["cost"], r["label"]))
        shown, more = _top(rows, n)
        breakdowns.append({"title": title, "rows": shown, "more": more})
    return {
        "totals": totals,
        "period": period,
        "series": series,
        "series_more": series_more,
        "breakdowns": breakdowns,
    }


def ledger_summary(request: ExportRequest) -> dict:
    """Per account the principal sees (at most BILLING_EXPORT_PDF_ROWS): opening balance,
    credits in, debits out and closing balance over the period, and totals by transaction
    kind."""
    n = settings.BILLING_EXPORT_PDF_ROWS
    f = request.filters
    opening = opening_balances(request)
    period = _ledger_entries(request)
    if f.start is not None:
        period = period.filter(created_at__gte=f.start)
    if f.end is not None:
        period = period.filter(created_at__lt=f.end)
    if f.transaction_kind:
        period = period.filter(transaction__kind=f.transaction_kind)
    moved = {
        r["account_id"]: r
        for r in period.order_by()
        .values("account_id")
        .annotate(
            entries=Count("id"),
            credits=Coalesce(Sum("amount", filter=Q(amount__gt=0)), ZERO),
            debits=Coalesce(Sum("amount", filter=Q(amount__lt=0)), ZERO),
        )
    }
    accounts = accounts_visible(request.principal)
    if f.account is not None:
        accounts = accounts.filter(pk=f.account)
    rows = []
    for account in accounts.order_by("kind", "team__name", "id")[: n + 1]:
        m = moved.get(account.pk, {})
        start = opening.get(account.pk, ZERO)
        credits, debits = m.get("credits", ZERO), m.get("debits", ZERO)
        rows.append(
            {
                "label": account.get_kind_display()
                + (f" · {account.team.name}" if account.team_id else ""),
                "id": account.pk,
                "entries": m.get("entries", 0),
                "opening": start,
                "credits": credits,
                "debits": debits,
                "closing": start + credits + debits,
            }
        )
    rows, more = _top(rows, n)
    kinds = list(
        period.order_by()
        .values("transaction__kind")
        .annotate(
            entries=Count("id"),
            credits=Coalesce(Sum("amount", filter=Q(amount__gt=0)), ZERO),
            debits=Coalesce(Sum("amount", filter=Q(amount__lt=0)), ZERO),
        )
        .order_by("transaction__kind")
    )
    return {"accounts": rows, "more": more, "kinds": kinds}


def render_pdf(request: ExportRequest) -> bytes:
    """The summary as an A4 PDF (WeasyPrint, from `templates/billing/exports_<kind>.pdf.html`)."""
    from weasyprint import HTML

    usage = request.kind == ExportJob.Kind.USAGE
    summary = usage_summary(request) if usage else ledger_summary(request)
    f = request.filters
    tz = request.tz
    html = render_to_string(
        f"billing/exports_{request.kind}_pdf.html",
        {
            "organization": request.principal.organization,
            "summary": summary,
            "filters": f.to_json(),
            "start": f.start.astimezone(tz) if f.start else None,
            "end": f.end.astimezone(tz) if f.end else None,
            "time_zone": str(tz),
            "generated_at": timezone.localtime(timezone.now(), tz),
            "pseudonymized": request.pseudonymize,
            "max_rows": settings.BILLING_EXPORT_PDF_ROWS,
        },
    )
    return HTML(string=html).write_pdf()


# Jobs (reads) ------------------------------------------------------------------------------------


def export_jobs_visible(principal: Principal) -> QuerySet[ExportJob]:
    """The export jobs `principal` asked for: a session's own (made in a session), a key's own.
    An export holds what its requester may read, so nobody else sees it."""
    jobs = ExportJob.objects.filter(organization=principal.organization)
    if principal.key is not None:
        return jobs.filter(api_key=principal.key)
    return jobs.filter(api_key__isnull=True, requested_by=principal.user)


def export_job_get(*, principal: Principal, id) -> ExportJob:
    """One of `principal`'s export jobs by its public id. Raises NotFound (404): another
    organization's or another requester's job is not found."""
    job = export_jobs_visible(principal).filter(public_id=id).first()
    if job is None:
        raise NotFound("No such export in this organization.", resource="export")
    return job


def export_job_request(job: ExportJob, principal: Principal, secret: bytes | None) -> ExportRequest:
    """The job's export as `principal` (its requester, now) reads it."""
    return ExportRequest(
        principal=principal,
        kind=job.kind,
        format=job.format,
        filters=ExportFilters.from_json(job.filters),
        pseudonymize=job.pseudonymize,
        secret=secret,
    )


def principal_of_job(job: ExportJob) -> Principal:
    """Who the job reads as, with its rights of now: its API key (not deleted, disabled or
    expired), else the member who asked in a session. Raises PermissionDenied when the
    requester can no longer export this kind."""
    if job.api_key_id is not None:
        key = job.api_key
        expired = key.expires_at is not None and key.expires_at <= timezone.now()
        if key.deleted_at is not None or key.disabled or expired:
            raise PermissionDenied("The API key that asked for this export is no longer valid.")
        principal = Principal.for_key(key)
    else:
        principal = Principal.for_session(organization=job.organization, user=job.requested_by)
        if principal is None:
            raise PermissionDenied("The member who asked for this export left the organization.")
    principal.require("billing:read")
    require_kind_scope(principal, job.kind)
    return principal
