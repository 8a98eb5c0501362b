"""The budgets page (`/o/<org>/budgets/`): every budget the principal sees with its current
window (spent and held against the limit, window bounds in the organization's time zone, the
spend projected at the window's end: `credits.forecast.budget_projection`), the latest alerts,
and the forms that create, edit and delete budgets and acknowledge alerts.

Writes go through the same layer and services as `/api/v1/budgets` and `/api/v1/alerts`:
`Principal.check_budget` (credits:write organization-wide, or a team manager for the members of
the team), `Principal.check_alert_acknowledge`, `credits.services.budgets` and
`credits.services.alerts`."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from accounts.forms import form_errors
from accounts.models import ApiKey, Membership
from accounts.pages import actor, confirm, organization_page, perform
from portal.errors import ApplicationError, NotFound

from . import selectors
from .apis_budgets import alert_visible_get, alerts_visible
from .forecast import budget_projection
from .forms import BudgetCreateForm, BudgetEditForm
from .models import Budget
from .services import alerts as alert_services
from .services import budgets as services
from .services.alerts import budget_label
from .services.budgets import budget_current_windows

LATEST_ALERTS = 20


def _back(request) -> str:
    return reverse("budgets", kwargs={"org": request.organization.slug})


def _target(budget: Budget):
    return {"team": budget.team, "member": budget.member, "api_key": budget.api_key}.get(
        budget.scope
    )


def _may(check) -> bool:
    try:
        check()
    except ApplicationError:
        return False
    return True


def _when(moment, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z") if moment else ""


def _target_label(budget: Budget, principal) -> str:
    if budget.scope == Budget.Scope.ORGANIZATION:
        return "Organization"
    if budget.scope == Budget.Scope.TEAM:
        return budget.team.name
    if budget.scope == Budget.Scope.MEMBER:
        return budget.member.email if principal.sees_member(budget.member_id) else "(a member)"
    return budget.api_key.name if principal.sees_key(budget.api_key) else "(a key)"


def _rows(principal) -> list[dict]:
    budgets = list(selectors.budgets_visible(principal).order_by("scope", "id")[:1000])
    now = timezone.now()
    windows = budget_current_windows(budgets, now)
    org_zone = ZoneInfo(principal.organization.time_zone)
    rows = []
    for b in budgets:
        w = windows[b.pk]
        zone = ZoneInfo("UTC") if b.utc_windows else org_zone
        used = w.spent + w.held
        projection = budget_projection(b, w, now)
        rows.append(
            {
                "budget": b,
                "target": _target_label(b, principal),
                "spent": w.spent,
                "held": w.held,
                "used": used,
                "remaining": max(b.limit - used, 0),
                "percent": round(used * 100 / b.limit) if b.limit else (100 if used else 0),
                "over": used > b.limit,
                "projected": projection.projected,
                "projected_over": projection.exceeds,
                "window_start": _when(w.window_start, zone),
                "window_end": _when(w.window_end, zone) if w.window_end else "",
                "may_change": _may(lambda b=b: principal.check_budget(b.scope, _target(b))),
            }
        )
    return rows


def _create_choices(principal) -> dict:
    """What the create form offers: the scopes the principal may set, and targets it sees."""
    org_wide_writer = principal.has("credits:write") and principal.org_wide
    if org_wide_writer:
        scopes = [s for s, _ in Budget.Scope.choices]
        teams = [(t.slug, t.name) for t in principal.teams().order_by("name")]
        members = [
            (m.user.email, m.user.email)
            for m in Membership.objects.filter(organization=principal.organization)
            .select_related("user")
            .order_by("user__email")
            if principal.sees_member(m.user_id)
        ]
        keys = (
            [(k.hash, f"{k.name} ({k.label})") for k in principal.keys().order_by("name")]
            if principal.has("keys:read")
            else []
        )
        return {"scopes": scopes, "teams": teams, "members": members, "keys": keys}
    if principal.budget_team_ids:
        members = (
            Membership.objects.filter(
                organization=principal.organization,
                user__team_memberships__team_id__in=principal.budget_team_ids,
            )
            .select_related("user")
            .distinct()
            .order_by("user__email")
        )
        return {
            "scopes": ["member"],
            "teams": [],
            "members": [(m.user.email, m.user.email) for m in members],
            "keys": [],
        }
    return {}


def _resolve_target(request, scope: str, data: dict):
    """The Team, User or ApiKey the form named, from what the principal sees (else None)."""
    principal = request.principal
    if scope == "team":
        return principal.teams().filter(slug=data.get("team")).first()
    if scope == "member":
        membership = (
            Membership.objects.filter(
                organization=request.organization, user__email=data.get("member")
            )
            .select_related("user")
            .first()
        )
        return membership.user if membership else None
    if scope == "api_key":
        return ApiKey.objects.filter(
            organization=request.organization, hash=data.get("api_key"), deleted_at__isnull=True
        ).first()
    return None


@organization_page(scope="credits:read")
@require_http_methods(["GET", "POST"])
def budgets(request):
    principal = request.principal
    choices = _create_choices(principal)
    form = BudgetCreateForm(request.POST or None, **choices) if choices else None
    if request.method == "POST":
        if form is None:
            raise Http404("No such page")
        if form.is_valid():
            data = form.cleaned_data
            scope = data["scope"]
            target = _resolve_target(request, scope, data)
            try:
                if scope != "organization" and target is None:
                    raise NotFound("No such target in this organization.", field=scope)
                principal.check_budget(scope, target)
                services.budget_create(
                    organization=request.organization,
                    scope=scope,
                    period=data["period"],
                    limit=data["limit"],
                    mode=data["mode"],
                    grace=data["grace"] or 0,
                    thresholds=data["thresholds"],
                    operation=data["operation"],
                    model=data["model"],
                    actor=actor(request),
                    **({scope: target} if scope != "organization" else {}),
                )
            except ApplicationError as exc:
                form_errors(form, exc)
            else:
                messages.success(request, "Budget created.")
                return redirect(_back(request))
    alerts = list(
        alerts_visible(principal).select_related(
            "budget__team", "budget__member", "budget__api_key"
        )[:LATEST_ALERTS]
    )
    org_zone = ZoneInfo(request.organization.time_zone)
    alert_rows = [
        {
            "alert": a,
            "budget": f"{a.budget.get_period_display()} budget of "
            f"{_target_label(a.budget, principal)}",
            "created": _when(a.created_at, org_zone),
            "may_acknowledge": a.acknowledged_at is None
            and _may(lambda a=a: principal.check_alert_acknowledge(a.budget)),
        }
        for a in alerts
    ]
    return render(
        request,
        "credits/budgets.html",
        {
            "rows": _rows(principal),
            "form": form,
            "alert_rows": alert_rows,
            "time_zone": request.organization.time_zone,
        },
        status=400 if request.method == "POST" else 200,
    )


def _budget_for_change(request, id) -> Budget:
    """A budget the principal sees and may change; 404 otherwise (the page does not exist for
    it, as pages answer)."""
    principal = request.principal
    budget = selectors.budgets_visible(principal).filter(public_id=id).first()
    if budget is None or not _may(lambda: principal.check_budget(budget.scope, _target(budget))):
        raise Http404("No such budget")
    return budget


@organization_page(scope="credits:read")
@require_http_methods(["GET", "POST"])
def budget_edit(request, id):
    budget = _budget_for_change(request, id)
    initial = {
        "period": budget.period,
        "limit": budget.limit.normalize(),
        "mode": budget.mode,
        "grace": budget.grace.normalize(),
        "thresholds": ", ".join(str(t) for t in budget.thresholds),
        "operation": budget.operation,
        "model": budget.model,
    }
    form = BudgetEditForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        data["grace"] = data["grace"] or 0
        if data["thresholds"] is None:
            data.pop("thresholds")
        changes = {k: v for k, v in data.items() if str(v) != str(initial.get(k))}
        if "thresholds" in data and data["thresholds"] != budget.thresholds:
            changes["thresholds"] = data["thresholds"]
        if not changes:
            messages.success(request, "Nothing changed.")
            return redirect(_back(request))
        try:
            request.principal.check_budget(budget.scope, _target(budget))
            services.budget_update(budget=budget, actor=actor(request), **changes)
        except ApplicationError as exc:
            form_errors(form, exc)
        else:
            messages.success(request, "Budget saved.")
            return redirect(_back(request))
    return render(
        request,
        "credits/budget_form.html",
        {"form": form, "budget": budget, "label": budget_label(budget)},
        status=400 if request.method == "POST" else 200,
    )


@organization_page(scope="credits:read")
@require_http_methods(["GET", "POST"])
def budget_delete(request, id):
    budget = _budget_for_change(request, id)
    if request.method == "GET":
        return confirm(
            request,
            title="Delete the budget?",
            question=f"Delete {budget_label(budget)}? Its windows and alerts go too.",
            action="Delete the budget",
            cancel=_back(request),
        )
    return perform(
        request,
        lambda: (
            request.principal.check_budget(budget.scope, _target(budget)),
            services.budget_delete(budget=budget, actor=actor(request)),
        ),
        done="Budget deleted.",
        then=_back(request),
    )


@organization_page(scope="credits:read")
@require_POST
def alert_acknowledge(request, id):
    try:
        alert = alert_visible_get(request.principal, id)
    except NotFound:
        raise Http404("No such alert") from None

    def write():
        request.principal.check_alert_acknowledge(alert.budget)
        return alert_services.alert_acknowledge(alert=alert, actor=actor(request))

    return perform(request, write, done="Alert acknowledged.", then=_back(request))
