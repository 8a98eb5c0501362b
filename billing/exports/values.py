"""How values appear in an export: times in UTC (ISO 8601, and FOCUS's whole seconds), exact
decimals for CSV, and members and keys as the principal may name them (`Names`: blank, their
e-mail and key name, or pseudonyms)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from decimal import Decimal

from accounts.access import Principal
from credits.reports import Identities

ZERO = Decimal(0)


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
