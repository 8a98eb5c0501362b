"""The upstream sync page (`/o/<org>/billing/openrouter/`): OpenRouter's credits beside the
portal's own totals, the drift over the last 30 days (a chart, and the same figures as a table),
and for billing members and owners (`billing:write`) the connection form, the "Sync now" button
and disconnecting after a confirmation step. Seeing it needs `billing:read`. The writes are the
services the API uses (`billing.services.sync`)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.forms import form_errors
from accounts.pages import actor, confirm, organization_page, perform, throttled
from credits.reports import organization_tz
from credits.selectors import balance_summary, credit_totals
from portal.errors import ApplicationError
from portal.money import format_credits

from . import selectors_sync as selectors
from .forms_sync import OpenRouterConnectionForm
from .services import sync as services

RECENT = 50  # snapshots listed on the page


def _page(request) -> str:
    return reverse("billing-openrouter", kwargs={"org": request.organization.slug})


def _connection(request):
    connection = selectors.connection_get(organization=request.organization)
    if connection is None:
        raise Http404("No OpenRouter connection")
    return connection


def _chart(history, threshold) -> dict:
    """The charts' series (exact decimal strings; the same figures are in the table), and the
    time zone their times are shown in."""
    return {
        "time_zone": str(timezone.get_current_timezone()),
        "labels": [s.fetched_at.isoformat() for s in history],
        "upstream": [str(s.upstream_remaining) for s in history],
        "portal": [str(s.portal_remaining) for s in history],
        "drift": [str(s.drift) for s in history],
        "threshold": str(threshold) if threshold is not None else None,
    }


@require_GET
@organization_page(scope="billing:read")
def openrouter_page(request):
    organization = request.organization
    connection = selectors.connection_get(organization=organization)
    with timezone.override(organization_tz(organization)):
        recent = [
            selectors.with_usage_drift(s)
            for s in selectors.snapshot_list(organization=organization)[:RECENT]
        ]
        history = selectors.snapshot_history(organization=organization)
        latest = recent[0] if recent else None
        latest_ok = next((s for s in recent if s.status == "ok"), None)
        threshold = connection.drift_threshold if connection else None
        return render(
            request,
            "billing/sync.html",
            {
                "connection": connection,
                "recent": recent,
                "latest": latest,
                "latest_ok": latest_ok,
                "over": bool(
                    latest_ok and threshold is not None and abs(latest_ok.drift) > threshold
                ),
                "portal": credit_totals(balance_summary(organization=organization)),
                "chart": _chart(history, threshold),
                "points": len(history),
                "can_write": request.principal.has("billing:write"),
                "sync_minutes": settings.OPENROUTER_SYNC_MINUTES,
                "time_zone": str(timezone.get_current_timezone()),
            },
        )


@organization_page(scope="billing:write")
@require_http_methods(["GET", "POST"])
def openrouter_connection(request):
    """Connect, or change the key (write-only), the threshold and the periodic sync."""
    connection = selectors.connection_get(organization=request.organization)
    initial = {
        "drift_threshold": connection.drift_threshold
        if connection
        else services.DEFAULT_DRIFT_THRESHOLD,
        "enabled": connection.enabled if connection else True,
    }
    form = OpenRouterConnectionForm(
        request.POST or None,
        initial=initial,
        connected=connection is not None,
        mask=connection.key_mask if connection else "",
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            _, created = services.openrouter_connection_set(
                organization=request.organization,
                actor=actor(request),
                key=data["key"] or None,
                drift_threshold=data["drift_threshold"],
                enabled=data["enabled"],
            )
        except ApplicationError as exc:
            form_errors(form, exc)
        else:
            messages.success(
                request,
                "Connected to OpenRouter: sync now to compare."
                if created
                else "OpenRouter connection saved.",
            )
            return redirect(_page(request))
    return render(request, "billing/sync_connection.html", {"form": form, "connection": connection})


@organization_page(scope="billing:write")
@require_POST
def openrouter_sync_now(request):
    connection = _connection(request)
    if (refused := throttled(request, "openrouter_sync")) is not None:
        return refused
    try:
        snapshot = services.openrouter_sync(connection=connection, actor=actor(request))
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        if snapshot.status == "ok":
            messages.success(
                request, f"Synced with OpenRouter: drift {format_credits(snapshot.drift)} credits."
            )
        else:
            messages.error(request, f"The sync failed: {snapshot.error}")
    return redirect(_page(request))


@organization_page(scope="billing:write")
@require_http_methods(["GET", "POST"])
def openrouter_disconnect(request):
    connection = _connection(request)
    if request.method == "GET":
        return confirm(
            request,
            title="Disconnect OpenRouter?",
            question=f"The key {connection.key_mask} is deleted from the portal and syncs stop; "
            "the snapshots so far stay. Revoke the key at OpenRouter too if it is no longer used.",
            action="Disconnect",
            cancel=_page(request),
        )
    return perform(
        request,
        lambda: services.openrouter_connection_delete(connection=connection, actor=actor(request)),
        done="OpenRouter disconnected: the key is deleted.",
        then=_page(request),
    )
