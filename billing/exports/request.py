"""The request: one export (`ExportRequest`), who reads it, what kind, in which format, with
which filters, pseudonymized or not."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from django.utils import timezone

from accounts.access import Principal
from credits.reports import organization_tz

from .filters import ExportFilters, kind_format_check
from .values import Names


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
