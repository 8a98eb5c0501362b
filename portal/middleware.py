"""Middleware of the base layer.

- `RequestContextMiddleware` (first): the request id (`X-Request-ID`, taken when sane, else
  made, echoed in the response), the access log line, the request metrics.
- `ApiErrorFormatMiddleware`: under /api/, the error pages Django answers itself (a debug 404,
  a refused Host) in the API's error format.
- `NoStoreMiddleware`: `Cache-Control: no-store` on every response of the portal's views.
- `RejectNulMiddleware`: refuse input that no view can store: a NUL character (PostgreSQL
  refuses it in text and jsonb, which answered 500) in the path, the query string, a header or a
  submitted form field. Answers 400 before any view runs: in the API's error format under /api/,
  Django's plain 400 page elsewhere. JSON bodies of the API are checked by
  `portal.parsers.LimitedJSONParser`."""

from __future__ import annotations

import logging
import time

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest
from django.utils.deprecation import MiddlewareMixin
from django.views.defaults import bad_request

from .errors import ValidationFailed, json_error_response
from .logs import key_prefix_var, organization_var, request_id_from, request_id_var
from .metrics import HTTP_LATENCY, HTTP_REQUESTS

access_log = logging.getLogger("portal.access")

# Probes and scrapes: counted in the metrics, never written to the access log.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# URL parameters that are credentials: never in a logged path.
SECRET_KWARGS = frozenset({"token", "uidb64"})


def _logged_path(request: HttpRequest) -> str:
    """The path, without its query string, with credential segments masked."""
    path = request.path
    match = request.resolver_match
    if match is not None:
        for name in SECRET_KWARGS & set(match.kwargs):
            path = path.replace(str(match.kwargs[name]), "[redacted]")
    return path


class RequestContextMiddleware:
    """Gives each request an id and its log context, then writes one access log line
    (`portal.access`, INFO: method, route, path, status, duration_ms, and the request id,
    organization and key prefix of `portal.logs`) and counts the request in
    `portal_http_requests_total` and `portal_http_request_duration_seconds`. Unresolved paths
    count under the route `unmatched`. Sync and async (ASGI: no thread hop of its own)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if iscoroutinefunction(self):
            return self._acall(request)
        tokens, started = self._start(request)
        try:
            return self._finish(request, self.get_response(request), started)
        finally:
            self._reset(tokens)

    async def _acall(self, request: HttpRequest):
        tokens, started = self._start(request)
        try:
            return self._finish(request, await self.get_response(request), started)
        finally:
            self._reset(tokens)

    @staticmethod
    def _start(request: HttpRequest):
        request.request_id = request_id_from(request.headers.get("X-Request-ID"))
        tokens = (
            request_id_var.set(request.request_id),
            organization_var.set(None),
            key_prefix_var.set(None),
        )
        return tokens, time.perf_counter()

    @staticmethod
    def _reset(tokens) -> None:
        for var, token in zip(
            (request_id_var, organization_var, key_prefix_var), tokens, strict=True
        ):
            var.reset(token)

    @staticmethod
    def _finish(request: HttpRequest, response, started: float):
        elapsed = time.perf_counter() - started
        match = request.resolver_match
        route = match.route if match is not None else "unmatched"
        HTTP_REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        HTTP_LATENCY.labels(route, request.method).observe(elapsed)
        response["X-Request-ID"] = request.request_id
        if request.path not in QUIET_PATHS:
            path = _logged_path(request)
            access_log.info(
                "%s %s %s",
                request.method,
                path,
                response.status_code,
                extra={
                    "method": request.method,
                    "route": route,
                    "path": path,
                    "status": response.status_code,
                    "duration_ms": round(elapsed * 1000, 1),
                },
            )
        return response


class NoStoreMiddleware(MiddlewareMixin):
    """`Cache-Control: no-store` on every response that sets no Cache-Control of its own: pages
    and API answers may carry secrets (a new API key, a webhook signing secret, an invitation
    link) or one organization's data, which no shared or browser cache may keep. Static files
    (WhiteNoise, before this middleware) keep their long cache lifetimes. Sync and async
    (Django's `MiddlewareMixin`)."""

    def process_response(self, request: HttpRequest, response):
        if not response.has_header("Cache-Control"):
            response["Cache-Control"] = "no-store"
        return response


NUL = "\x00"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _nul_in(request: HttpRequest) -> str | None:
    """Where a NUL is, or None."""
    if NUL in request.path or NUL in request.path_info:
        return "path"
    for name, values in request.GET.lists():
        if NUL in name or any(NUL in v for v in values):
            return f"query.{name.replace(NUL, '?')}"
    for name, value in request.META.items():
        if name.startswith("HTTP_") and isinstance(value, str) and NUL in value:
            return f"header.{name[5:].replace('_', '-').title()}"
    if request.method == "POST" and request.content_type in FORM_TYPES:
        if request.path.startswith("/api/"):
            return None  # the API takes JSON only (415 for forms); DRF reads the body itself
        for name, values in request.POST.lists():
            if NUL in name or any(isinstance(v, str) and NUL in v for v in values):
                return f"form.{name.replace(NUL, '?')}"
    return None


# Errors Django answers itself, not a view, as the API's error format calls them.
_DJANGO_ERRORS = {
    400: ("Bad request.", "bad_request"),
    403: ("Forbidden.", "forbidden"),
    404: ("Not found.", "not_found"),
    405: ("Method not allowed.", "method_not_allowed"),
    413: ("The request body is too large.", "payload_too_large"),
    500: ("Internal error; it was logged.", "internal_error"),
}
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


class ApiErrorFormatMiddleware:
    """Under /api/, an error that Django answered itself rather than a view, in the API's error
    format with its status: an unknown path or a path parameter of the wrong type with `DEBUG`
    on (Django's debug 404 page; `handler404` serves it with `DEBUG` off), a Host that
    `ALLOWED_HOSTS` refuses (Django's plain 400 page), and any other HTML error page. The views'
    own errors are JSON already and pass as they are."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        response = self.get_response(request)
        if (
            response.status_code < 400
            or not request.path.startswith("/api/")
            or response.streaming
            or response.get("Content-Type", "").startswith("application/json")
        ):
            return response
        message, type_ = _DJANGO_ERRORS.get(
            response.status_code, (f"{response.reason_phrase}.", "error")
        )
        converted = json_error_response(response.status_code, message, type_)
        for header in _KEPT_HEADERS:
            if header in response:
                converted[header] = response[header]
        return converted


class RejectNulMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        where = _nul_in(request)
        if where is None:
            return self.get_response(request)
        if request.path.startswith("/api/"):
            error = ValidationFailed({where: ["NUL characters are not allowed."]})
            return json_error_response(400, error.message, error.type, **error.metadata)
        return bad_request(request, ValueError(f"NUL character in {where}"))
