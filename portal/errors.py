"""The one error format of the whole API, and the typed errors services raise.

Shape (OpenRouter's, so its official SDKs raise their typed errors; their models need an int code):

    {"error": {"code": 402, "message": "Insufficient credits: ...",
               "metadata": {"type": "insufficient_credits", ...details}}}

`code` is the HTTP status; `metadata.type` is the stable machine-readable reason. Services raise
subclasses of `ApplicationError`; `exception_handler` (DRF) and `json_error_response` (plain
Django views under /api/) turn every error into this shape. Nothing answers a bare 500 page.
"""

from __future__ import annotations

from typing import Any

from django import db
from django.core import exceptions as django_exceptions
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response


class ApplicationError(Exception):
    """Base of every error a service raises on purpose."""

    status_code = status.HTTP_400_BAD_REQUEST
    type = "bad_request"

    def __init__(self, message: str, **metadata: Any) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = metadata


class ValidationFailed(ApplicationError):
    """400: input is malformed; `errors` maps each field to its messages."""

    type = "validation_error"

    def __init__(self, errors: dict[str, list[str]] | str, message: str | None = None) -> None:
        if isinstance(errors, str):
            errors = {"non_field_errors": [errors]}
        first = next(iter(errors.items()))
        super().__init__(message or f"Invalid input: {first[0]}: {first[1][0]}", errors=errors)


class NotFound(ApplicationError):
    status_code = status.HTTP_404_NOT_FOUND
    type = "not_found"


class PermissionDenied(ApplicationError):
    status_code = status.HTTP_403_FORBIDDEN
    type = "forbidden"


class Conflict(ApplicationError):
    status_code = status.HTTP_409_CONFLICT
    type = "conflict"


class IdempotencyConflict(Conflict):
    """409: an idempotency key (or client event id) was reused for a different request."""

    type = "idempotency_conflict"


class InsufficientCredits(ApplicationError):
    """402: `needed` credits cannot be covered by the `available` ones."""

    status_code = status.HTTP_402_PAYMENT_REQUIRED
    type = "insufficient_credits"


class BudgetExceeded(ApplicationError):
    """402: a hard budget or an API key's credit limit would be exceeded."""

    status_code = status.HTTP_402_PAYMENT_REQUIRED
    type = "budget_exceeded"


class PayloadTooLarge(ApplicationError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    type = "payload_too_large"


def error_body(code: int, message: str, type_: str, **metadata: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "metadata": {"type": type_, **metadata}}}


def _drf_field_errors(detail: Any) -> dict[str, list[str]]:
    if isinstance(detail, dict):
        out: dict[str, list[str]] = {}
        for key, value in detail.items():
            if isinstance(value, dict) and value:
                for sub, msgs in _drf_field_errors(value).items():
                    out[f"{key}.{sub}"] = msgs
            elif isinstance(value, list) and value and isinstance(value[0], dict):
                for i, item in enumerate(value):
                    for sub, msgs in _drf_field_errors(item).items():
                        out[f"{key}[{i}].{sub}"] = msgs
            else:
                out[str(key)] = [str(v) for v in (value if isinstance(value, list) else [value])]
        return out
    if isinstance(detail, list):
        return {"non_field_errors": [str(d) for d in detail]}
    return {"non_field_errors": [str(detail)]}


_DRF_TYPES = {
    drf_exceptions.ParseError: "parse_error",
    drf_exceptions.AuthenticationFailed: "unauthorized",
    drf_exceptions.NotAuthenticated: "unauthorized",
    drf_exceptions.PermissionDenied: "forbidden",
    drf_exceptions.NotFound: "not_found",
    drf_exceptions.MethodNotAllowed: "method_not_allowed",
    drf_exceptions.NotAcceptable: "not_acceptable",
    drf_exceptions.UnsupportedMediaType: "unsupported_media_type",
    drf_exceptions.Throttled: "rate_limited",
}


# The database cut the connection, refused a new one (a restart, a fail-over) or the process's
# pool had none free in time (`DATABASE_POOL_TIMEOUT`): errors of the moment, not of the request.
DATABASE_UNAVAILABLE = (db.OperationalError, db.InterfaceError)


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF `EXCEPTION_HANDLER`: map every known error to the one format."""
    headers: dict[str, str] = {}
    if isinstance(exc, ApplicationError):
        body = error_body(exc.status_code, exc.message, exc.type, **exc.metadata)
        return Response(body, status=exc.status_code)
    if isinstance(exc, Http404 | django_exceptions.ObjectDoesNotExist):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, django_exceptions.PermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    elif isinstance(exc, django_exceptions.RequestDataTooBig):
        body = error_body(413, "Request body too large.", PayloadTooLarge.type)
        return Response(body, status=413)
    elif isinstance(exc, django_exceptions.ValidationError):
        exc = drf_exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        )
    elif isinstance(exc, DATABASE_UNAVAILABLE):
        # The transaction rolled back and wrote nothing, so the client may retry (the same
        # idempotency key).
        body = error_body(
            503, "The database is unavailable for the moment; retry.", "database_unavailable"
        )
        return Response(body, status=503, headers={"Retry-After": "1"})
    if not isinstance(exc, drf_exceptions.APIException):
        return None
    if isinstance(exc, drf_exceptions.ValidationError):
        failed = ValidationFailed(_drf_field_errors(exc.detail))
        return Response(error_body(400, failed.message, failed.type, **failed.metadata), status=400)
    if isinstance(exc, drf_exceptions.NotAuthenticated | drf_exceptions.AuthenticationFailed):
        headers["WWW-Authenticate"] = 'Bearer realm="api"'
        status_code = 401
    else:
        status_code = exc.status_code
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    type_ = next((t for cls, t in _DRF_TYPES.items() if isinstance(exc, cls)), "error")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return Response(
        error_body(status_code, str(message), type_), status=status_code, headers=headers
    )


def json_error_response(code: int, message: str, type_: str, **metadata: Any) -> JsonResponse:
    """The error format for plain Django views (404/500 handlers under /api/)."""
    return JsonResponse(error_body(code, message, type_, **metadata), status=code)
