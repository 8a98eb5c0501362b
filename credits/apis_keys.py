"""`/api/v1/keys` and `/api/v1/keys/{hash}`: API keys, shaped as OpenRouter's key API so that its
official SDKs (`client.api_keys.list/create/get/update/delete`) work against the portal.

Source of the shapes: OpenRouter's API reference ("API Keys") as implemented by the `openrouter`
Python SDK 1.3: create answers 201 with `{"data": key, "key": secret}`, delete answers 200 with
`{"deleted": true}`, lists are `{"data": [...]}` with `offset` paging. Portal extensions on create:
`kind`, `team`, `member`, `scopes`.

In `credits`, not `accounts`: a key's `usage` and `limit_remaining` are credits' figures (the
usage rollups, the key's budget windows), and imports point from credits to accounts."""

from __future__ import annotations

from django.db.models import Q, prefetch_related_objects
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from accounts import services
from accounts.access import key_scopes, member_roles
from accounts.models import ApiKey
from accounts.roles import SCOPES, KeyKind
from accounts.selectors import member_by_email
from portal.api import OrganizationAPIView, StrictSerializer

from .selectors import key_usage_totals
from .services.budgets import budget_current_windows

LIST_PAGE_SIZE = 100
_OPENROUTER_IGNORED = frozenset(
    {"include_byok_in_limit", "workspace_id", "creator_user_id", "external"}
)


class KeyOutput(serializers.Serializer):
    """OpenRouter's key object (every field its SDK requires), plus the portal's own."""

    hash = serializers.CharField()
    name = serializers.CharField()
    label = serializers.CharField()
    disabled = serializers.BooleanField()
    limit = serializers.DecimalField(
        max_digits=28,
        decimal_places=12,
        coerce_to_string=False,
        allow_null=True,
        help_text="Credit limit (credits, USD).",
    )
    limit_remaining = serializers.DecimalField(
        max_digits=28, decimal_places=12, coerce_to_string=False, allow_null=True
    )
    limit_reset = serializers.CharField(allow_null=True)
    include_byok_in_limit = serializers.BooleanField()
    usage = serializers.DecimalField(
        max_digits=28, decimal_places=12, coerce_to_string=False, help_text="Credits used in total."
    )
    usage_daily = serializers.DecimalField(
        max_digits=28, decimal_places=12, coerce_to_string=False, help_text="UTC day."
    )
    usage_weekly = serializers.DecimalField(
        max_digits=28, decimal_places=12, coerce_to_string=False, help_text="UTC week, Monday."
    )
    usage_monthly = serializers.DecimalField(
        max_digits=28, decimal_places=12, coerce_to_string=False, help_text="UTC month."
    )
    byok_usage = serializers.IntegerField()
    byok_usage_daily = serializers.IntegerField()
    byok_usage_weekly = serializers.IntegerField()
    byok_usage_monthly = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField(allow_null=True)
    last_used_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    creator_user_id = serializers.CharField(allow_null=True)
    external_user = serializers.CharField(allow_null=True)
    workspace_id = serializers.CharField()
    is_management_key = serializers.BooleanField()
    kind = serializers.ChoiceField(choices=KeyKind.choices)
    team = serializers.CharField(allow_null=True)
    member = serializers.EmailField(allow_null=True)
    scopes = serializers.ListField(child=serializers.CharField())


def key_document(key: ApiKey, usage, member_role: str | None, window=None) -> dict:
    """The key object of OpenRouter's API for `key`, with `usage` from `key_usage_totals` and
    `window` the current window of its limit (`credits.services.budgets`): `limit_remaining`
    counts pending holds, as enforcement does."""
    budget = key.limit_budget
    remaining = None
    if budget is not None:
        used = (window.spent + window.held) if window is not None else 0
        remaining = max(budget.limit - used, 0)
    return {
        "hash": key.hash,
        "name": key.name,
        "label": key.label,
        "disabled": key.disabled,
        "limit": None if budget is None else budget.limit,
        "limit_remaining": remaining,
        "limit_reset": key.limit_reset or None,
        "include_byok_in_limit": False,
        "usage": usage.total,
        "usage_daily": usage.daily,
        "usage_weekly": usage.weekly,
        "usage_monthly": usage.monthly,
        "byok_usage": 0,
        "byok_usage_daily": 0,
        "byok_usage_weekly": 0,
        "byok_usage_monthly": 0,
        "created_at": key.created_at,
        "updated_at": key.updated_at,
        "last_used_at": key.last_used_at,
        "expires_at": key.expires_at,
        "creator_user_id": str(key.created_by_id) if key.created_by_id else None,
        "external_user": None,
        "workspace_id": key.organization.slug,
        "is_management_key": key.kind == KeyKind.MANAGEMENT,
        "kind": key.kind,
        "team": key.team.slug if key.team_id else None,
        "member": key.user.email if key.user_id else None,
        "scopes": sorted(key_scopes(key, member_role=member_role)),
    }


def keys_data(keys: list[ApiKey]) -> list[dict]:
    """The key objects of `keys`, in a constant number of queries (usage totals, member roles)."""
    totals = key_usage_totals(keys)
    roles = member_roles(keys)
    windows = key_limit_windows(keys)
    return [
        KeyOutput(key_document(k, totals[k.pk], roles.get(k.user_id), windows.get(k.pk))).data
        for k in keys
    ]


def key_limit_windows(keys: list[ApiKey]) -> dict:
    """{key id: current window of its limit budget} (two queries for any number of keys)."""
    prefetch_related_objects(keys, "budgets")
    limited = {k.pk: k.limit_budget for k in keys if k.limit_budget is not None}
    windows = budget_current_windows(limited.values())
    return {pk: windows[b.pk] for pk, b in limited.items()}


class KeyCreateInput(StrictSerializer):
    ignored_fields = _OPENROUTER_IGNORED
    name = serializers.CharField(max_length=200)
    limit = serializers.DecimalField(
        max_digits=28, decimal_places=12, min_value=0, allow_null=True, required=False
    )
    limit_reset = serializers.ChoiceField(
        choices=ApiKey.LimitReset.choices, allow_null=True, required=False
    )
    expires_at = serializers.DateTimeField(allow_null=True, required=False)
    kind = serializers.ChoiceField(choices=KeyKind.choices, default=KeyKind.USAGE)
    team = serializers.CharField(max_length=50, required=False, allow_null=True)
    member = serializers.EmailField(required=False, allow_null=True)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(SCOPES)), required=False
    )


class KeyUpdateInput(StrictSerializer):
    ignored_fields = _OPENROUTER_IGNORED
    name = serializers.CharField(max_length=200, required=False)
    disabled = serializers.BooleanField(required=False)
    limit = serializers.DecimalField(
        max_digits=28, decimal_places=12, min_value=0, allow_null=True, required=False
    )
    limit_reset = serializers.ChoiceField(
        choices=ApiKey.LimitReset.choices, allow_null=True, required=False
    )
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(SCOPES)), required=False
    )


KeyListOutput = inline_serializer("KeyList", {"data": KeyOutput(many=True)})
KeyEnvelope = inline_serializer("KeyEnvelope", {"data": KeyOutput()})
KeyCreatedOutput = inline_serializer(
    "KeyCreated", {"data": KeyOutput(), "key": serializers.CharField(help_text="Shown once.")}
)


class KeyListApi(OrganizationAPIView):
    scope_map = {"GET": "keys:read", "POST": "keys:write"}
    throttle_scope = "keys"  # creation, per organization (portal.throttling)

    @extend_schema(
        operation_id="keys_list",
        parameters=[
            OpenApiParameter("offset", int, description="Skip this many keys (pages of 100)."),
            OpenApiParameter("include_disabled", bool),
            OpenApiParameter("include_expired", bool),
        ],
        responses={200: KeyListOutput},
    )
    def get(self, request):
        params = self.parse(_KeyListParams, data=request.query_params)
        keys = self.principal.keys().order_by("id")
        if not params.get("include_disabled"):
            keys = keys.filter(disabled=False)
        if not params.get("include_expired"):
            keys = keys.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))
        offset = params.get("offset", 0)
        return Response({"data": keys_data(list(keys[offset : offset + LIST_PAGE_SIZE]))})

    @extend_schema(
        operation_id="keys_create", request=KeyCreateInput, responses={201: KeyCreatedOutput}
    )
    def post(self, request):
        data = self.parse(KeyCreateInput)
        team = data.get("team")
        team = self.principal.team(team) if team else None
        member = data.get("member")
        member = member_by_email(organization=self.organization, email=member) if member else None
        team, member, scopes = self.principal.key_terms(
            kind=data["kind"], team=team, member=member, scopes=data.get("scopes")
        )
        key, secret = services.apikey_create(
            organization=self.organization,
            name=data["name"],
            kind=data["kind"],
            team=team,
            user=member,
            scopes=scopes,
            limit=data.get("limit"),
            limit_reset=data.get("limit_reset"),
            expires_at=data.get("expires_at"),
            actor=self.actor,
        )
        return Response(
            {"data": keys_data([key])[0], "key": secret}, status=status.HTTP_201_CREATED
        )


class _KeyListParams(serializers.Serializer):
    offset = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False, default=0)
    include_disabled = serializers.BooleanField(required=False, default=False)
    include_expired = serializers.BooleanField(required=False, default=False)


class KeyDetailApi(OrganizationAPIView):
    scope_map = {"GET": "keys:read", "PATCH": "keys:write", "DELETE": "keys:write"}

    @extend_schema(operation_id="keys_get", responses={200: KeyEnvelope})
    def get(self, request, hash: str):
        return Response({"data": keys_data([self.principal.key_get(hash)])[0]})

    @extend_schema(operation_id="keys_update", request=KeyUpdateInput, responses={200: KeyEnvelope})
    def patch(self, request, hash: str):
        key = self.principal.key_get(hash)
        data = self.parse(KeyUpdateInput)
        self.principal.check_key_manage(key)
        if "scopes" in data:
            data["scopes"] = self.principal.scopes_within(data["scopes"], key.kind)
        key = services.apikey_update(key=key, actor=self.actor, **data)
        return Response({"data": keys_data([key])[0]})

    @extend_schema(
        operation_id="keys_delete",
        responses={200: inline_serializer("KeyDeleted", {"deleted": serializers.BooleanField()})},
    )
    def delete(self, request, hash: str):
        key = self.principal.key_get(hash)
        self.principal.check_key_manage(key)
        services.apikey_delete(key=key, actor=self.actor)
        return Response({"deleted": True})
