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

The package, by responsibility (each importing only those before it): `values` (times, numbers,
names and pseudonyms), `filters` (kinds, formats, filters), `request` (`ExportRequest`), `usage`
(usage rows), `focus` (FOCUS 1.2 rows), `ledger` (ledger rows), `summary` (the PDF), `writing`
(counting, streaming CSV, JSON and PDF), `jobs` (export jobs, reads). Import from
`billing.exports`.
"""

from __future__ import annotations

from .filters import (
    CONTENT_TYPES,
    FILTER_FIELDS,
    FORMATS,
    KIND_SCOPES,
    LEDGER_FILTERS,
    ExportFilters,
    filters_parse,
    kind_format_check,
    require_kind_scope,
)
from .focus import (
    FOCUS_COLUMNS,
    FOCUS_VERSION,
    focus_record,
    model_provider,
)
from .jobs import (
    export_job_get,
    export_job_request,
    export_jobs_visible,
    principal_of_job,
)
from .ledger import (
    LEDGER_COLUMNS,
    ledger_queryset,
    ledger_rows,
    opening_balances,
)
from .request import (
    ExportRequest,
)
from .summary import (
    ledger_summary,
    render_pdf,
    usage_summary,
)
from .usage import (
    USAGE_COLUMNS,
    UsageRow,
    usage_queryset,
    usage_record,
    usage_rows,
)
from .values import (
    ZERO,
    Fixed,
    Names,
    focus_time,
    pseudonym,
    utc_iso,
)
from .writing import (
    Progress,
    export_chunks,
    export_count,
    json_lines,
    stream_max_rows,
)

__all__ = [
    "CONTENT_TYPES",
    "ExportFilters",
    "ExportRequest",
    "FILTER_FIELDS",
    "FOCUS_COLUMNS",
    "FOCUS_VERSION",
    "FORMATS",
    "Fixed",
    "KIND_SCOPES",
    "LEDGER_COLUMNS",
    "LEDGER_FILTERS",
    "Names",
    "Progress",
    "USAGE_COLUMNS",
    "UsageRow",
    "ZERO",
    "export_chunks",
    "export_count",
    "export_job_get",
    "export_job_request",
    "export_jobs_visible",
    "filters_parse",
    "focus_record",
    "focus_time",
    "json_lines",
    "kind_format_check",
    "ledger_queryset",
    "ledger_rows",
    "ledger_summary",
    "model_provider",
    "opening_balances",
    "principal_of_job",
    "pseudonym",
    "render_pdf",
    "require_kind_scope",
    "stream_max_rows",
    "usage_queryset",
    "usage_record",
    "usage_rows",
    "usage_summary",
    "utc_iso",
]
