"""Error handlers: the API's error format under /api/, plain pages elsewhere; the login page and
its lockout page; the password reset form, its e-mails limited."""

import logging

from django.contrib.auth import views as auth_views
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.views.defaults import page_not_found
from django.views.defaults import server_error as html_server_error

from .errors import json_error_response
from .net import client_ip
from .throttling import CACHE_DOWN, password_reset_refused

logger = logging.getLogger(__name__)
LOGINS_PAUSED_SECONDS = 30


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


class LoginView(auth_views.LoginView):
    """Django's login view; while the shared cache that counts failed logins (django-axes) is
    unreachable, a login is refused with 503, `Retry-After` and a page saying so: it fails closed
    (portal/throttling.py)."""

    def post(self, request, *args, **kwargs):
        try:
            return super().post(request, *args, **kwargs)
        except CACHE_DOWN:
            logger.error("Login refused: the shared cache (login lockouts) is unreachable.")
            page = render(request, "registration/logins_paused.html", status=503)
            page["Retry-After"] = str(LOGINS_PAUSED_SECONDS)
            return page


class PasswordResetView(auth_views.PasswordResetView):
    """Django's password reset form, its e-mails limited per client IP and per e-mail address
    (`portal.throttling.password_reset_refused`; the rates `THROTTLE_PASSWORD_RESET_IP` and
    `THROTTLE_PASSWORD_RESET_EMAIL`). Over a limit no e-mail is sent, a warning is logged, and
    the visitor is sent to the same "check your e-mail" page as always: the answer says nothing
    about the address, nor that it was limited."""

    def form_valid(self, form):
        limit = password_reset_refused(self.request, form.cleaned_data["email"])
        if limit is not None:
            logger.warning(
                "Password reset e-mail not sent: over the limit per %s (client %s).",
                limit,
                client_ip(self.request) or "unknown",
            )
            return HttpResponseRedirect(self.get_success_url())
        return super().form_valid(form)
