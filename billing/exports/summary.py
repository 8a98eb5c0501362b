"""The PDF summary: totals and bounded breakdowns of the usage, and the ledger's accounts with
opening and closing balances, rendered by WeasyPrint."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.db.models.functions import Coalesce, TruncDay, TruncMonth
from django.template.loader import render_to_string
from django.utils import timezone

from credits.selectors import COUNTED, accounts_visible

from ..models import ExportJob
from .ledger import _ledger_entries, opening_balances
from .request import ExportRequest
from .usage import usage_queryset
from .values import ZERO


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
    """The summary as an A4 PDF (WeasyPrint, from `templates/billing/exports_<kind>_pdf.html`)."""
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
