"""Counting and writing: how many rows an export reads (streamed at once up to
`stream_max_rows()`, else written to a file by a job), and its content piece by piece: CSV, FOCUS
CSV, JSON or the PDF summary."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.utils import timezone

from portal.spreadsheet import csv_lines

from ..models import ExportJob
from .focus import FOCUS_COLUMNS, _Months, focus_record
from .ledger import LEDGER_COLUMNS, _ledger_entries, ledger_rows
from .request import ExportRequest
from .summary import render_pdf
from .usage import USAGE_COLUMNS, usage_queryset, usage_record, usage_rows
from .values import Fixed, utc_iso


def stream_max_rows() -> int:
    """Rows up to which an export is streamed at once; above, a Celery task writes a file."""
    return settings.BILLING_EXPORT_STREAM_MAX_ROWS


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


def _csv_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return Fixed(value)
    return "" if value is None else value


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
