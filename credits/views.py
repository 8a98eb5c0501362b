"""Pages of the credits app: the dashboard, the header balance, the usage explorer and its CSV
export, the ledger (accounts, lots, an account's history), team allocation and the member's own
page.

Each page is a plain view that authorizes through `accounts.pages.organization_page` (the
`Principal` of `accounts.access`), reads through selectors that take the principal, and renders;
htmx requests get the page's fragment (template partials). Days and hours are shown in the
organization's time zone."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import wraps

from django.contrib import messages
from django.core.exceptions import BadRequest
from django.db.models import F, Q
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from accounts.audit import Actor
from accounts.context_processors import may_open_teams
from accounts.pages import organization_page, page_url, perform
from portal.errors import ApplicationError, NotFound
from portal.spreadsheet import csv_lines

from . import services
from .analytics import (
    DailySpend,
    burn_rates,
    peak_hour,
    project_depletion,
    spend_by_hour_of_day,
    stacked_series,
)
from .forms import AllocationForm, UsageFilterForm
from .models import LedgerAccount
from .reports import (
    EXPORT_COLUMNS,
    Identities,
    export_rows,
    organization_tz,
    spend_by_day,
    spend_by_hour,
    spend_in_windows,
)
from .rollups import usage_sums_visible
from .selectors import (
    account_balance,
    account_history,
    account_visible_get,
    accounts_visible,
    available_for,
    balance_for,
    lots_visible,
    usage_report,
    usage_visible,
    with_running_balance,
)

DASHBOARD_DAYS = 30
PAGE_SIZE = 50
ZERO = Decimal(0)


def local_time(view):
    """Run the view in the organization's time zone: forms read and templates show local
    times (call inside `organization_page`)."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        with timezone.override(organization_tz(request.organization)):
            return view(request, *args, **kwargs)

    return wrapper


def _with_share(rows: list[dict], total: Decimal) -> list[dict]:
    """Each row with `share`, its percentage of `total` (0-100, whole number, for bars)."""
    for row in rows:
        row["share"] = int(row["cost"] * 100 / total) if total > 0 else 0
    return rows


def _label_identities(events, principal) -> list:
    """Usage events with `key_label` and `member_label`: the key's name and the member's e-mail
    where the principal may see them, else blank."""
    identities = Identities(principal)
    events = list(events)
    for e in events:
        e.key_label = e.api_key.name if e.api_key_id and identities.key(e.api_key_id) else ""
        e.member_label = e.member.email if e.member_id and identities.member(e.member_id) else ""
    return events


def _local_day_start(day, tz) -> datetime:
    return datetime.combine(day, time.min, tzinfo=tz)


def _dashboard_range(now: datetime, tz) -> tuple[date, datetime, datetime]:
    """The dashboard's days: the first of the last DASHBOARD_DAYS local days, and the range
    from its start to now."""
    first = timezone.localtime(now).date() - timedelta(days=DASHBOARD_DAYS - 1)
    return first, _local_day_start(first, tz), now + timedelta(seconds=1)


@require_GET
@organization_page
@local_time
def dashboard_conversations(request):
    """The dashboard's top conversations by cost over its days: a fragment the page loads after
    it is shown (htmx), because conversations are not in the rollups and their breakdown reads
    the raw events of the 30 days (`usage_report`'s conversation breakdown)."""
    _, start, end = _dashboard_range(timezone.now(), timezone.get_current_timezone())
    report = usage_report(
        principal=request.principal, period="daily", start=start, end=end, top=11,
        dimensions=["conversation"],
    )  # fmt: skip
    conversations = [
        {"conversation_id": r["key"], "events": r["events"], "cost": r["cost"],
         "tokens": r["prompt_tokens"] + r["completion_tokens"]}
        for r in report["breakdowns"]["conversation"] if r["key"]
    ][:10]  # fmt: skip
    return render(request, "credits/dashboard.html#conversations", {"conversations": conversations})


@organization_page
@local_time
def dashboard(request):
    """Balances; burn rates and when the credits run out; daily spend of the last 30 days in
    total and by team, model and operation; spend by hour of day; teams; top models, keys,
    members and conversations; the latest requests."""
    principal = request.principal
    tz = timezone.get_current_timezone()
    now = timezone.now()
    today = timezone.localtime(now).date()
    first, start, end = _dashboard_range(now, tz)
    summary = balance_for(principal, now=now)
    report = usage_report(
        principal=principal, period="daily", start=start, end=end, top=8,
    )  # fmt: skip
    day_list = [first + timedelta(days=i) for i in range(DASHBOARD_DAYS)]
    by_day = {timezone.localtime(r["start"], tz).date(): r for r in report["series"]}
    days = [
        DailySpend(d, by_day.get(d, {}).get("events", 0), by_day.get(d, {}).get("cost", ZERO))
        for d in day_list
    ]
    spent = report["totals"]["cost"]
    breakdowns = {name: _with_share(rows, spent) for name, rows in report["breakdowns"].items()}
    chart = {
        "labels": [d.isoformat() for d in day_list],
        "cost": [str(d.cost) for d in days],  # exact decimals; the chart parses them
        "events": [d.events for d in days],
    }
    stacked = {
        "labels": chart["labels"],
        "by": {
            dimension: stacked_series(
                spend_by_day(principal=principal, start=start, end=end, tz=tz, dimension=dimension),
                day_list,
                empty="No team (pool)" if dimension == "team" else "(none)",
            )
            for dimension in ("team", "model", "operation")
        },
    }
    hours = spend_by_hour_of_day(spend_by_hour(principal=principal, start=start, end=end, tz=tz))
    hours_chart = {"labels": [f"{h.hour:02d}" for h in hours], "cost": [str(h.cost) for h in hours]}
    windows, observed = spend_in_windows(principal=principal, now=now)
    rates = burn_rates(windows, observed)
    projection = project_depletion(summary.available, rates, today)
    recent = usage_visible(principal).order_by("-occurred_at", "-id")[:10]
    allocated = (
        summary.available - summary.pool_available if summary.pool_available is not None else None
    )
    return render(
        request,
        "credits/dashboard.html",
        {
            "summary": summary,
            "report": report,
            "breakdowns": breakdowns,
            "days": days,
            "chart": chart,
            "stacked": stacked,
            "hours": hours,
            "hours_chart": hours_chart,
            "peak_hour": peak_hour(hours),
            "rates": rates,
            "projection": projection,
            "window_start": first,
            "peak_day": max(days, key=lambda d: d.cost) if spent > 0 else None,
            "allocated": allocated,
            "recent": _label_identities(recent, principal),
            "membership": request.membership,
            "time_zone": str(tz),
        },
    )


@require_GET
@organization_page
def balance_widget(request):
    """The header's balance: what the principal can draw on now (polled by the page frame)."""
    summary = available_for(request.principal)
    response = render(request, "credits/balance_widget.html", {"summary": summary})
    response["Cache-Control"] = "no-store"
    return response


# The usage explorer -------------------------------------------------------------------------


def _usage_form(request) -> UsageFilterForm:
    return UsageFilterForm(request.GET or None, principal=request.principal)


def _filtered_usage(request, form: UsageFilterForm):
    qs = usage_visible(request.principal)
    if form.is_bound and form.is_valid():
        qs = form.filter(qs)
    return qs


@require_GET
@organization_page(scope="usage:read")
@local_time
def usage(request):
    """Every request the principal may see, newest first, filtered, 50 a page with a keyset
    cursor; htmx requests get the results fragment only."""
    form = _usage_form(request)
    valid = not form.is_bound or form.is_valid()
    qs = usage_visible(request.principal)
    if form.is_bound and valid:
        qs = form.after_cursor(form.filter(qs))
    rows = list(qs.order_by("-occurred_at", "-id")[: PAGE_SIZE + 1]) if valid else []
    more = len(rows) > PAGE_SIZE
    rows = _label_identities(rows[:PAGE_SIZE], request.principal)
    filters = request.GET.copy()
    filters.pop("cursor", None)
    next_query = None
    if more:
        following = filters.copy()
        following["cursor"] = UsageFilterForm.cursor_for(rows[-1])
        next_query = following.urlencode()
    context = {
        "form": form,
        "rows": rows,
        "next_query": next_query,
        "filters": filters.urlencode(),
        "paged": bool(form.is_bound and valid and form.cleaned_data.get("cursor")),
        "time_zone": str(timezone.get_current_timezone()),
    }
    template = "credits/usage.html#results" if request.htmx else "credits/usage.html"
    # htmx swaps only 2xx answers: its fragment carries the errors with a 200.
    status = 200 if valid or request.htmx else 400
    return render(request, template, context, status=status)


@require_GET
@organization_page(scope="usage:read")
@local_time
def usage_export(request):
    """The filtered usage as CSV, streamed from a server-side cursor (constant memory)."""
    form = _usage_form(request)
    if form.is_bound and not form.is_valid():
        raise BadRequest("Invalid filters")
    qs = _filtered_usage(request, form)
    rows = export_rows(qs, principal=request.principal, tz=timezone.get_current_timezone())
    response = StreamingHttpResponse(
        csv_lines(EXPORT_COLUMNS, rows), content_type="text/csv; charset=utf-8"
    )
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    filename = f"usage-{request.organization.slug}-{stamp}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


# The ledger ---------------------------------------------------------------------------------


def _team_balance_rows(principal, summary) -> list:
    """The teams' balances with what the principal may do to each (allocate, reclaim)."""
    rows = []
    for row in summary.teams:
        may = {}
        for direction, check in (
            ("allocate", principal.check_allocate),
            ("reclaim", principal.check_reclaim),
        ):
            try:
                check(row.team)
                may[direction] = row.team.funding != "pool"
            except ApplicationError:
                may[direction] = False
        rows.append(
            {
                "row": row,
                "may": may,
                "movable": may["allocate"] or may["reclaim"],
                "idempotency_key": uuid.uuid4().hex,  # one move per form shown
            }
        )
    return rows


@require_GET
@organization_page(scope="credits:read")
@local_time
def ledger(request):
    """The accounts the principal may see with balance, held and available; the credit lots
    with their expiry and what remains; the teams' balances with the allocation form."""
    principal = request.principal
    accounts = list(accounts_visible(principal).order_by("kind", "team__name", "id"))
    for account in accounts:
        account.shown_balance = account_balance(account)
        account.spendable = account.kind in LedgerAccount.HOLDS_LOTS
    lots = lots_visible(principal).filter(remaining__gt=0)
    summary = balance_for(principal)
    team_rows = _team_balance_rows(principal, summary)
    return render(
        request,
        "credits/ledger.html",
        {
            "accounts": accounts,
            "lots": lots.order_by(F("expires_at").asc(nulls_last=True), "account_id", "id")[:100],
            "lot_count": lots.count(),
            "team_rows": team_rows,
            "show_forms": any(row["movable"] for row in team_rows),
            "summary": summary,
        },
    )


@require_GET
@organization_page(scope="credits:read")
@local_time
def ledger_account(request, pk: int):
    """One account's entries, newest first, 50 a page (`?before=<entry id>`), each with the
    balance right after it (correct on every page)."""
    try:
        entries = account_history(principal=request.principal, account_id=pk)
    except NotFound:
        raise Http404("No such account") from None
    account = account_visible_get(principal=request.principal, pk=pk)
    before = request.GET.get("before")
    error = None
    if before:
        try:
            entries = entries.filter(id__lt=int(before))
        except ValueError:
            error = "This page link is not valid; showing the newest entries."
            before = None
    page = list(entries.order_by("-id")[: PAGE_SIZE + 1])
    more = len(page) > PAGE_SIZE
    page = with_running_balance(page[:PAGE_SIZE])
    context = {
        "account": account,
        "balance": account_balance(account),
        "entries": page,
        "next_before": page[-1].pk if more else None,
        "paged": bool(before),
        "error": error,
    }
    template = (
        "credits/ledger_account.html#history" if request.htmx else "credits/ledger_account.html"
    )
    return render(request, template, context, status=400 if error else 200)


# Teams --------------------------------------------------------------------------------------


def _team_url(org: str, slug: str) -> str:
    """The team's page (the accounts app's), else the dashboard."""
    for name in ("team", "team-detail"):
        try:
            return reverse(name, kwargs={"org": org, "slug": slug})
        except NoReverseMatch:
            continue
    return reverse("dashboard", kwargs={"org": org})


@require_POST
@organization_page
def team_allocate(request, slug: str):
    """Allocate credits from the pool to the team, or reclaim them, through the same services
    and checks as `POST /api/v1/credits/allocations`; back to the team with a message."""
    principal = request.principal
    try:
        team = principal.team(slug)
    except NotFound:
        raise Http404("No such team") from None
    back = request.POST.get("next")
    if not (back and back.startswith(f"/o/{request.organization.slug}/")):
        back = (
            _team_url(request.organization.slug, team.slug)
            if may_open_teams(principal)
            else reverse("ledger", kwargs={"org": request.organization.slug})
        )
    form = AllocationForm(request.POST)
    if not form.is_valid():
        for field, errors in form.errors.items():
            label = form.fields[field].label if field in form.fields else ""
            for error in errors:
                messages.error(request, f"{label}: {error}" if label else error)
        return redirect(back)
    data = form.cleaned_data
    allocate = data["direction"] == "allocate"

    def move():
        (principal.check_allocate if allocate else principal.check_reclaim)(team)
        service = services.credits_allocate if allocate else services.credits_reclaim
        service(
            team=team,
            amount=data["amount"],
            idempotency_key=data["idempotency_key"] or None,
            memo=data["memo"],
            actor=Actor.from_request(request),
            organization=request.organization,
        )

    amount = f"{data['amount']:,.2f}"
    done = f"Allocated {amount} credits to" if allocate else f"Reclaimed {amount} credits from"
    return perform(request, move, done=f"{done} {team.name}.", then=back)


@require_GET
@organization_page(scope="credits:read")
def team_balances(request):
    """The teams' balances as a fragment (for the teams list)."""
    summary = balance_for(request.principal)
    return render(
        request,
        "credits/team_balances.html#team-balances",
        {"team_rows": _team_balance_rows(request.principal, summary)},
    )


# The member's own page ----------------------------------------------------------------------


@require_GET
@organization_page
@local_time
def me(request):
    """The signed-in member's own usage, keys and teams: what they spent, the keys they hold,
    their teams' balances and totals (nothing of other members but totals)."""
    principal = request.principal
    user = request.user
    now = timezone.now()
    today = timezone.localtime(now).date()
    tz = timezone.get_current_timezone()
    own = usage_visible(principal).filter(member_id=user.pk)
    month_start = _local_day_start(today.replace(day=1), tz)
    since = {"today": _local_day_start(today, tz), "month": month_start}
    rows = usage_sums_visible(principal, where=Q(member_id=user.pk), since=since)
    row = rows[0] if rows else {"cost": ZERO, "events": 0, "cost_today": ZERO, "cost_month": ZERO}
    totals = {
        "total": row["cost"],
        "events": row["events"],
        "today": row["cost_today"],
        "month": row["cost_month"],
    }
    summary = balance_for(principal, now=now)
    mine = principal.member_team_ids | principal.managed_team_ids
    teams = [t for t in summary.teams if t.team.pk in mine]
    # The keys card, for who may open the keys page (a viewer may not: no card, no link).
    keys_url = page_url(request, "keys")
    keys = []
    if keys_url is not None:
        keys = list(principal.keys().filter(user_id=user.pk).order_by("name"))
    usage_url = page_url(request, "usage")
    recent = own.order_by("-occurred_at", "-id")[:20]
    return render(
        request,
        "credits/me.html",
        {
            "totals": totals,
            "summary": summary,
            "teams": teams,
            "keys": keys,
            "keys_url": keys_url,
            "recent": _label_identities(recent, principal),
            "membership": request.membership,
            "time_zone": str(tz),
            "usage_url": usage_url and f"{usage_url}?member={user.pk}",
        },
    )
