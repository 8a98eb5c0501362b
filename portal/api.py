"""Building blocks of every API view: the tenant, the actor, strict input parsing, and the
schema's error responses."""

from __future__ import annotations

import threading
from datetime import UTC
from typing import Any

import django_filters
from django import forms
from django.db import models
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema_field, inline_serializer
from rest_framework import generics, serializers
from rest_framework.metadata import SimpleMetadata
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.access import Principal
from accounts.audit import Actor
from accounts.models import ApiKey, Organization

from .logs import log_context_set


class StrictSerializer(serializers.Serializer):
    """A plain input serializer that refuses unknown fields (400 naming them)."""

    ignored_fields: frozenset[str] = frozenset()

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        unknown = set(data) - set(self.fields) - set(self.ignored_fields)
        if unknown:
            raise serializers.ValidationError({f: ["Unknown field."] for f in sorted(unknown)})
        return super().to_internal_value(data)


_per_thread = threading.local()


def serializer_shared(cls: type[serializers.Serializer], context: dict | None = None):
    """This thread's instance of serializer `cls`, built once, with `context`: for
    `run_validation` and `to_representation` on hot paths. DRF deep-copies a serializer's
    declared fields for every instance it builds, which for the usage event's input and output
    cost more than recording the event. Not for `is_valid`/`data`/`errors` (the state of whoever
    called them last)."""
    instances = _per_thread.__dict__.setdefault("serializers", {})
    one = instances.get(cls)
    if one is None:
        one = instances[cls] = cls()
    one._context = context or {}
    return one


class UTCIsoDateTimeField(django_filters.fields.IsoDateTimeField):
    """ISO 8601, converted to UTC: Python accepts offsets up to 24 h, PostgreSQL only up to
    15:59 (an offset like +19:02 answered 500); out-of-range times are a 400."""

    def to_python(self, value):
        value = super().to_python(value)
        if value is None:
            return value
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise forms.ValidationError("Out of range.", code="invalid") from None


class UTCDateTimeFilter(django_filters.IsoDateTimeFilter):
    """`IsoDateTimeFilter` for every time filter of the API (see `UTCIsoDateTimeField`)."""

    field_class = UTCIsoDateTimeField


@extend_schema_field(OpenApiTypes.INT64)
class IdFilter(django_filters.NumberFilter):
    """A filter on an integer id (a row's primary key): a whole number from 1 to 2^63 - 1
    (PostgreSQL's bigint, SQLite's INTEGER), else a 400. `NumberFilter` took any decimal, and
    an id beyond 64 bits reached the database (SQLite: OverflowError, a 500)."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", 2**63 - 1)
        super().__init__(*args, **kwargs)


class OptionsMetadata(SimpleMetadata):
    """OPTIONS without DRF's `actions` (which it derives from a generic view's
    `serializer_class`, which these views do not set: it answered 500). The OpenAPI schema
    documents the inputs."""

    def determine_actions(self, request, view) -> dict:
        return {}


class OrganizationAPIView(APIView):
    """Base of every tenant API view. `self.principal` (`accounts.access.Principal`) is who acts:
    the calling API key, or the logged-in member of a browser session (the organization of the
    `X-Organization` header, else the one last opened in the pages, else the user's only one).
    `self.organization` is its organization, and every read goes through a selector given it or
    the principal. `scope_map` names the scope per HTTP method (`portal.permissions.HasScope`)."""

    scope_map: dict[str, str] = {}
    metadata_class = OptionsMetadata

    def perform_authentication(self, request):
        super().perform_authentication(request)
        request.principal = _principal(request)

    @property
    def principal(self) -> Principal:
        return self.request.principal

    @property
    def key(self) -> ApiKey | None:
        return self.principal.key

    @property
    def organization(self) -> Organization:
        return self.principal.organization

    @property
    def actor(self) -> Actor:
        return Actor.from_request(self.request)

    def parse(self, serializer_class, data: Any = None, **kwargs) -> dict:
        serializer = serializer_class(data=self.request.data if data is None else data, **kwargs)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


SESSION_ORGANIZATION = "organization"  # the session key the pages set to the open organization


def _principal(request) -> Principal | None:
    """The API key's principal, or the session member's in the organization the request names."""
    if isinstance(request.auth, ApiKey):
        return Principal.for_key(request.auth)
    user = request.user
    if user is None or not user.is_authenticated:
        return None
    organizations = Organization.objects.filter(memberships__user=user)
    slug = request.headers.get("X-Organization") or request.session.get(SESSION_ORGANIZATION)
    organization = organizations.filter(slug=slug).first() if slug else None
    if organization is None and not slug:
        only = list(organizations[:2])
        organization = only[0] if len(only) == 1 else None
    if organization is None:
        return None
    log_context_set(organization=organization)
    return Principal.for_session(organization=organization, user=user)


class OrganizationListAPIView(OrganizationAPIView, generics.GenericAPIView):
    """Base of list endpoints: cursor-paginated, filtered with `filterset_class`. Rows come only
    from `selector(organization)`; subclasses may not override `get_queryset` (PostHog's guard),
    so no list can forget the tenant filter."""

    model: type[models.Model]
    pagination_class = None  # set from settings below
    filter_backends = [DjangoFilterBackend]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "get_queryset" in cls.__dict__:
            raise TypeError(f"{cls.__name__}: implement selector(), not get_queryset()")

    def selector(self, organization: Organization) -> models.QuerySet:
        raise NotImplementedError

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request, no tenant
            return self.model.objects.none()
        return self.selector(self.organization)

    def list_response(self, serializer_class) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(serializer_class(page, many=True).data)


from portal.pagination import CursorPagination  # noqa: E402

OrganizationListAPIView.pagination_class = CursorPagination


ErrorSerializer = inline_serializer(
    name="Error",
    fields={
        "error": inline_serializer(
            name="ErrorDetail",
            fields={
                "code": serializers.IntegerField(help_text="The HTTP status."),
                "message": serializers.CharField(),
                "metadata": serializers.DictField(
                    help_text="`type` is the stable reason (validation_error, "
                    "insufficient_credits, budget_exceeded, idempotency_conflict, ...)."
                ),
            },
        )
    },
)

_ERROR_DESCRIPTIONS = {
    400: "Invalid input",
    401: "Missing, invalid, expired or disabled API key",
    402: "Insufficient credits or exhausted budget",
    403: "The key lacks the scope",
    404: "Not found in this organization",
    409: "Conflict (idempotency key reused for another request, state)",
    413: "Request body too large",
    429: "Throttled",
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    return {c: OpenApiResponse(ErrorSerializer, description=_ERROR_DESCRIPTIONS[c]) for c in codes}


def add_error_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: document the error format on every operation."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    if "Error" not in components:
        return result
    for path in result.get("paths", {}).values():
        for method, operation in path.items():
            codes = [400, 401, 403, 404, 429]
            if method in ("post", "put", "patch"):
                codes.append(413)
            for code in codes:
                operation.setdefault("responses", {}).setdefault(
                    str(code),
                    {
                        "description": _ERROR_DESCRIPTIONS[code],
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                        },
                    },
                )
    return result


def decimals_as_strings(value: Any) -> Any:
    """Credits in our own JSON are exact decimal strings (DRF's encoder would make floats), as
    `portal.money.decimal_text` writes them ("0.000000000000", not "0E-12")."""
    from decimal import Decimal

    from .money import decimal_text

    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, dict):
        return {k: decimals_as_strings(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [decimals_as_strings(v) for v in value]
    return value
