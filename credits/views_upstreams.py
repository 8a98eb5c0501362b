"""The gateway's upstreams pages (`/o/<org>/upstreams/`, `org:write`, as `/api/v1/upstreams`):
the organization's provider connections (name, kind, base URL, models, timeout, enabled, and
whether an API key is stored; never the key), the create and edit forms, and delete after a
confirmation step. The writes are the services the API uses (`credits.services.upstreams`)."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from accounts.forms import form_errors
from accounts.pages import actor, confirm, organization_page, perform
from portal.errors import ApplicationError

from .forms import UpstreamEditForm, UpstreamForm
from .models import Upstream
from .services.upstreams import upstream_create, upstream_delete, upstream_update


def _upstream(request, id) -> Upstream:
    upstream = Upstream.objects.filter(organization=request.organization, public_id=id).first()
    if upstream is None:
        raise Http404("No such upstream")
    return upstream


@organization_page(scope="org:write")
def upstream_list(request):
    upstreams = Upstream.objects.filter(organization=request.organization)
    return render(request, "credits/upstreams.html", {"upstreams": upstreams})


@organization_page(scope="org:write")
@require_http_methods(["GET", "POST"])
def upstream_new(request):
    form = UpstreamForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            upstream = upstream_create(
                organization=request.organization, actor=actor(request), **form.cleaned_data
            )
        except ApplicationError as exc:
            form_errors(form, exc)
        else:
            messages.success(request, f"Upstream '{upstream.name}' created.")
            return redirect("upstreams", org=request.organization.slug)
    return render(request, "credits/upstream_form.html", {"form": form, "upstream": None})


@organization_page(scope="org:write")
@require_http_methods(["GET", "POST"])
def upstream_edit(request, id):
    upstream = _upstream(request, id)
    initial = {
        "name": upstream.name,
        "kind": upstream.kind,
        "base_url": upstream.base_url,
        "models": "\n".join(upstream.models),
        "timeout": upstream.timeout,
        "enabled": upstream.enabled,
    }
    form = UpstreamEditForm(
        request.POST or None, initial=initial, key_set=bool(upstream.api_key_encrypted)
    )
    if request.method == "POST" and form.is_valid():
        try:
            upstream_update(upstream=upstream, actor=actor(request), **form.changes())
        except ApplicationError as exc:
            form_errors(form, exc)
        else:
            messages.success(request, f"Upstream '{form.cleaned_data['name']}' saved.")
            return redirect("upstreams", org=request.organization.slug)
    return render(request, "credits/upstream_form.html", {"form": form, "upstream": upstream})


@organization_page(scope="org:write")
@require_http_methods(["GET", "POST"])
def upstream_remove(request, id):
    upstream = _upstream(request, id)
    back = reverse("upstreams", kwargs={"org": request.organization.slug})
    if request.method == "GET":
        return confirm(
            request,
            title="Delete the upstream?",
            question=f"The models that only '{upstream.name}' serves stop being reachable "
            "through the gateway at once; its stored API key is deleted.",
            action="Delete the upstream",
            cancel=back,
        )
    return perform(
        request,
        lambda: upstream_delete(upstream=upstream, actor=actor(request)),
        done=f"Upstream '{upstream.name}' deleted.",
        then=back,
    )
