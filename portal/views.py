"""Error handlers: the API's error format under /api/, plain pages elsewhere; the login lockout
page."""

from django.shortcuts import render
from django.views.defaults import page_not_found
from django.views.defaults import server_error as html_server_error

from .errors import json_error_response


def not_found(request, exception=None):
    if request.path.startswith("/api/"):
        return json_error_response(404, "Not found.", "not_found")
    return page_not_found(request, exception)


def server_error(request):
    if request.path.startswith("/api/"):
        return json_error_response(500, "Internal error; it was logged.", "internal_error")
    return html_server_error(request)


def login_locked_out(request, response=None, credentials=None):
    """django-axes' lockout answer (`AXES_LOCKOUT_CALLABLE`): too many failed logins for this
    account or from this address. 429 with `Retry-After` (the cool-off, which every further
    attempt restarts) and a page saying how long to wait."""
    from axes.helpers import get_cool_off

    seconds = int(get_cool_off(request).total_seconds())
    minutes = max(1, -(-seconds // 60))
    page = render(request, "registration/locked_out.html", {"minutes": minutes}, status=429)
    page["Retry-After"] = str(seconds)
    return page
