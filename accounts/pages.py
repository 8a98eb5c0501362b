"""What every organization page shares: the tenant and the principal from the URL and the
session (`organization_page`), links to the pages the principal may open (`page_url`), who writes
(`actor`), the confirmation step of destructive actions (`confirm`), and how a page runs a write
(`perform`)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.urls import NoReverseMatch, get_script_prefix, resolve, reverse
from django.utils import timezone

from portal.api import SESSION_ORGANIZATION
from portal.errors import ApplicationError
from portal.logs import log_context_set
from portal.throttling import write_throttled

from .access import Principal
from .models import Organization
from .selectors import membership_get


def organization_page(view=None, *, scope: str | None = None):
    """A page of one organization: resolve `org` from the URL and the user's membership (404 for
    non-members), set `request.organization`, `request.membership` and `request.principal`
    (`accounts.access.Principal`, the same layer the API asks), and remember the organization
    for the API's session authentication. With `scope`, a member whose role lacks it gets 404:
    the page does not exist for them, as its API answers nothing they may read; the view keeps
    it as `page_scope`, so that links to the page follow the same rule (`page_url`). The view
    runs in the organization's time zone: templates show times in it."""

    def decorate(view):
        @login_required
        @wraps(view)
        def wrapper(request, org: str, *args, **kwargs):
            organization = Organization.objects.filter(slug=org).first()
            membership = organization and membership_get(
                organization=organization, user=request.user
            )
            if not membership:
                raise Http404("No such organization")
            membership.organization, membership.user = organization, request.user  # loaded
            principal = Principal.for_membership(membership)
            if scope is not None and not principal.has(scope):
                raise Http404("No such page")
            request.organization, request.membership = organization, membership
            log_context_set(organization=organization)
            request.principal = principal
            if request.session.get(SESSION_ORGANIZATION) != organization.slug:
                request.session[SESSION_ORGANIZATION] = organization.slug  # no write per poll
            # Times on the page (and naive times in its forms) are the organization's.
            with timezone.override(organization.zone):
                return view(request, *args, **kwargs)

        wrapper.page_scope = scope
        return wrapper

    return decorate(view) if view is not None else decorate


def page_url(request, name: str, **kwargs) -> str | None:
    """The URL of the organization page `name` (in `request.organization`, with `kwargs`) when
    `request.principal` may open it, else None. The page's own rule decides: the scope its
    `organization_page` names, asked of the one permission layer (`Principal.has`); so a page
    shows a link exactly to those the linked page lets in. None too for a page that does not
    exist. (A page that decides inside its view, as the teams pages do, is not known here.)"""
    try:
        url = reverse(name, kwargs={"org": request.organization.slug, **kwargs})
    except NoReverseMatch:
        return None
    path = url.removeprefix(get_script_prefix().rstrip("/"))
    scope = getattr(resolve(path).func, "page_scope", None)
    if scope is not None and not request.principal.has(scope):
        return None
    return url


def actor(request):
    """Who writes: the signed-in member, with the request's address and user agent."""
    from .audit import Actor

    return Actor.from_request(request)


def confirm(request, *, title: str, question: str, action: str, cancel: str, danger=True):
    """The confirmation step of a destructive action: a page with one button that POSTs back to
    the same URL, and a way back (no JavaScript `confirm`)."""
    from django.shortcuts import render

    return render(
        request,
        "accounts/confirm.html",
        {
            "title": title,
            "question": question,
            "action": action,
            "cancel": cancel,
            "danger": danger,
        },
    )


def perform(
    request, write: Callable[[], Any], *, done: str | Callable[[Any], str], then: str
) -> HttpResponseRedirect:
    """Run one write of a page (the permission layer's checks and a service call, in `write`):
    say `done` (a message, or a function of what `write` returned) when it went through, the
    refusal's own message when the layer or the service refused (`ApplicationError`); redirect
    to `then` either way (redirect after POST)."""
    try:
        result = write()
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, done(result) if callable(done) else done)
    return redirect(then)


def throttled(request, scope: str) -> HttpResponse | None:
    """A 429 page with `Retry-After` when this page write is over the organization's `scope`
    limit (the API's throttle: `portal.throttling.write_throttled`), else None."""
    from django.shortcuts import render

    wait = write_throttled(request, scope)
    if wait is None:
        return None
    response = render(request, "throttled.html", {"seconds": wait}, status=429)
    response["Retry-After"] = str(wait)
    return response
