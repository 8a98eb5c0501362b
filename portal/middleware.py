"""Refuse input that no view can store: a NUL character (PostgreSQL refuses it in text and jsonb,
which answered 500) in the path, the query string, a header or a submitted form field.

Answers 400 before any view runs: in the API's error format under /api/, Django's plain 400 page
elsewhere. JSON bodies of the API are checked by `portal.parsers.LimitedJSONParser`."""

from __future__ import annotations

from django.http import HttpRequest
from django.views.defaults import bad_request

from .errors import ValidationFailed, json_error_response

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
