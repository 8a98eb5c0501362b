"""The kinds and formats of exports, and their filters: `ExportFilters` (the usage explorer's
filters, and the ledger's account and transaction kind), read from an API request by
`filters_parse`; the checks of a kind and format and of the scope a kind needs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, time, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from accounts.access import Principal
from accounts.models import ApiKey, Membership
from credits.models import LedgerTransaction, UsageEvent
from credits.reports import Identities, organization_tz
from credits.selectors import accounts_visible
from portal.errors import ValidationFailed

from ..models import ExportJob
from .values import utc_iso

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
