"""Throttles and login lockouts. Their counters live in the shared cache (Redis through
django-redis, `CACHES["default"]`), never in process memory, so every web process sees the same
counts.

- API writes: `ScopedRateThrottle` (DRF) for views that name a `throttle_scope`
  (`invitations`, `keys`), counted per organization; 429 in the error format with `Retry-After`.
  The pages' forms for the same writes count in the same buckets (`write_throttled`).
- Browser logins: django-axes with its cache handler, per account and per client IP; a locked-out
  login answers 429 with `Retry-After` (`portal.views.login_locked_out`).
- Password reset e-mails: per client IP and per e-mail address (`password_reset_refused`, the
  scopes `password_reset_ip` and `password_reset_email` of the same rates). Over either limit the
  visitor sees the usual "check your e-mail" page and no e-mail is sent
  (`portal.views.PasswordResetView`): the answer never tells whether an account exists.
Client IPs come from `portal.net.client_ip` (X-Forwarded-For only behind trusted proxies).

When the shared cache is unreachable (Redis down: `CACHE_DOWN`), a write throttle lets the write
through (logged): it only counts, and none of the writes it limits moves money; so does the
password reset's (its e-mail goes to the address's owner only, with a link that expires). A login
is refused instead (503 with `Retry-After`, `portal.views.LoginView`): its lockout counter guards
the accounts, so a login it cannot count is not let through. Usage, holds and the ledger never
read the cache (docs/faults.md).
"""

from __future__ import annotations

import hashlib
import logging
import math
from types import SimpleNamespace

import redis
from axes.backends import AxesStandaloneBackend
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django_redis.exceptions import ConnectionInterrupted
from rest_framework import throttling
from rest_framework.settings import api_settings

from .net import client_ip

logger = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# What the shared cache raises when Redis cannot be reached (django-redis wraps redis-py's errors).
CACHE_DOWN = (ConnectionInterrupted, redis.ConnectionError, redis.TimeoutError)


class ScopedRateThrottle(throttling.ScopedRateThrottle):
    """DRF's scoped throttle with three changes: it counts writes only (reads of the same view
    are not throttled), per organization (the tenant the request acts in, whoever calls; per
    client IP without one), and it reads its rates from the settings at each request."""

    def allow_request(self, request, view):
        if request.method in SAFE_METHODS:
            return True
        try:
            return super().allow_request(request, view)
        except CACHE_DOWN:  # fails open: it only counts (module docstring)
            logger.warning("Throttle %r not counted: the shared cache is unreachable.", self.scope)
            return True

    def get_rate(self):
        try:
            return api_settings.DEFAULT_THROTTLE_RATES[self.scope]
        except KeyError:
            raise throttling.ImproperlyConfigured(
                f"No default throttle rate set for '{self.scope}' scope"
            ) from None

    def get_ident(self, request):
        return client_ip(request) or "unknown"

    def get_cache_key(self, request, view):
        # The organization the request acts in: its principal's (API key or member session).
        organization = getattr(getattr(request, "principal", None), "organization", None)
        organization_id = getattr(organization, "pk", None) or getattr(
            getattr(request, "auth", None), "organization_id", None
        )
        if organization_id is not None:
            ident = f"org:{organization_id}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


def write_throttled(request, scope: str) -> int | None:
    """Count one write of a page against the API's `scope` bucket (the same counter: a form and
    the API share one limit per organization). Seconds to wait when over the limit, else None."""
    throttle = ScopedRateThrottle()
    if throttle.allow_request(request, SimpleNamespace(throttle_scope=scope)):
        return None
    return max(1, math.ceil(throttle.wait() or 1))


class _IdentityThrottle(ScopedRateThrottle):
    """The scoped throttle's count for an identity the caller names (an e-mail address, a client
    IP) rather than the request's organization."""

    def __init__(self, ident: str):
        self.ident = ident

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.ident}


def password_reset_refused(request, email: str) -> str | None:
    """Count one password reset e-mail asked for `email` by the request's client: per client IP
    (scope `password_reset_ip`), then per address (`password_reset_email`; lower-cased as
    accounts store it, and hashed: no address in the cache's keys). The limit that refuses it
    (`"client IP"` or `"address"`), else None: the e-mail may go. A refused request is not
    counted against the address, so a client over its own limit uses up no one's allowance."""
    address = hashlib.sha256(email.strip().lower().encode()).hexdigest()
    counts = (
        ("password_reset_ip", f"ip:{client_ip(request) or 'unknown'}", "client IP"),
        ("password_reset_email", f"email:{address}", "address"),
    )
    for scope, ident, limit in counts:
        view = SimpleNamespace(throttle_scope=scope)
        if not _IdentityThrottle(ident).allow_request(request, view):
            return limit
    return None


class LoginAttemptsBackend(AxesStandaloneBackend):
    """django-axes' lockout check for logins made over HTTP. Authentication without a request
    (management commands, `Client.login` in tests) is not an attempt from a client: skipped."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def login_username(request, credentials: dict | None) -> str:
    """The account a login attempt counts against (`AXES_USERNAME_CALLABLE`): the e-mail address,
    lower-cased as accounts store it, so that case variants share one counter. Anything that is
    not an e-mail address counts against one shared bucket: axes hashes the bare value into its
    cache key, and a "username" spelled like an IP address must not lock out that address."""
    credentials = credentials or {}
    value = credentials.get("username", credentials.get("email"))
    if value is None and request is not None:
        value = request.POST.get("username")
    value = value.strip().lower() if isinstance(value, str) else ""
    try:
        validate_email(value)
    except ValidationError:
        return "not-an-email-address"
    return value
