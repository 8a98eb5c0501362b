"""The organization's own pages: its audit log (filters, keyset paging, htmx swaps of the
results) and its settings (name, billing details, currency, time zone)."""

from __future__ import annotations

import zoneinfo
from datetime import datetime, time, timedelta

from django.contrib import messages
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import Q
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from portal.errors import ApplicationError

from . import selectors, services
from .forms import AuditFilterForm, OrganizationForm, form_errors
from .pages import actor, organization_page

AUDIT_PAGE_SIZE = 50


def _cursor(value: str | None) -> int | None:
    try:
        number = int(value) if value else None
    except ValueError:
        return None
    return number if number is not None and 0 < number < 2**63 else None


@organization_page(scope="audit:read")
def audit_log(request):
    """The organization's audit events, newest first, filtered by actor, action, target and
    days (in the organization's time zone); keyset paging on the event id (`before`,
    `after`). An htmx request gets the results fragment only."""
    organization = request.organization
    events = selectors.audit_event_list(organization=organization)
    actions = events.order_by("action").values_list("action", flat=True).distinct()
    form = AuditFilterForm(request.GET or None, actions=list(actions))
    if form.is_valid():
        data = form.cleaned_data
        zone = zoneinfo.ZoneInfo(organization.time_zone)
        if data["actor"]:
            events = events.filter(actor_label__icontains=data["actor"])
        if data["action"]:
            events = events.filter(action=data["action"])
        if data["target"]:
            target = data["target"]
            events = events.filter(
                Q(target_type__iexact=target)
                | Q(target_id=target)
                | Q(target_label__icontains=target)
            )
        if data["since"]:
            events = events.filter(created_at__gte=datetime.combine(data["since"], time.min, zone))
        if data["until"]:
            end = datetime.combine(data["until"] + timedelta(days=1), time.min, zone)
            events = events.filter(created_at__lt=end)
    elif form.is_bound:
        events = events.none()
    before, after = _cursor(request.GET.get("before")), _cursor(request.GET.get("after"))
    if after is not None:
        page = list(events.filter(id__gt=after).order_by("id")[: AUDIT_PAGE_SIZE + 1])
        has_newer = len(page) > AUDIT_PAGE_SIZE
        page = list(reversed(page[:AUDIT_PAGE_SIZE]))
        has_older = bool(page) and events.filter(id__lt=page[-1].id).exists()
    else:
        if before is not None:
            events = events.filter(id__lt=before)
        page = list(events.order_by("-id")[: AUDIT_PAGE_SIZE + 1])
        has_older = len(page) > AUDIT_PAGE_SIZE
        page = page[:AUDIT_PAGE_SIZE]
        has_newer = before is not None and bool(page)
    query = request.GET.copy()
    query.pop("before", None)
    query.pop("after", None)
    context = {
        "form": form,
        "events": page,
        "older": page[-1].id if has_older else None,
        "newer": page[0].id if has_newer else None,
        "query": query.urlencode(),
        "time_zone": organization.time_zone,
    }
    template = "accounts/audit.html"
    if request.htmx and request.htmx.target == "audit-results":
        template += "#results"
    return render(request, template, context)


@organization_page(scope="org:read")
@require_http_methods(["GET", "POST"])
def organization_settings(request):
    organization = request.organization
    may_write = request.principal.has("org:write")
    if request.method == "POST" and not may_write:
        raise DjangoPermissionDenied("Changing the settings needs org:write.")
    initial = {field: getattr(organization, field) for field in services.ORGANIZATION_FIELDS}
    form = OrganizationForm(request.POST or None, initial=initial)
    if not may_write:
        for field in form.fields.values():
            field.disabled = True
    if request.method == "POST" and form.is_valid():
        changes = {f: v for f, v in form.cleaned_data.items() if v != initial[f]}
        if not changes:
            messages.info(request, "Nothing changed.")
            return redirect("org-settings", org=organization.slug)
        try:
            services.organization_update(organization=organization, actor=actor(request), **changes)
        except ApplicationError as exc:
            form_errors(form, exc)
        else:
            messages.success(request, "Settings saved.")
            return redirect("org-settings", org=organization.slug)
    return render(request, "accounts/settings.html", {"form": form, "may_write": may_write})
