"""OpenRouter-compatible reads, so that the official `openrouter` SDKs work against the portal
with only their server URL changed (`https://<portal>/api/v1`):

- `GET /credits` (`client.credits.get_credits()`): the organization's credits, management keys.
- `GET /key` (`client.api_keys.get_current_key_metadata()`): the calling key.
- `GET /generation?id=` (`client.generations.get_generation(id=)`): one usage event.
- `GET /activity` (`client.analytics.get_user_activity()`): usage by UTC day and model over the
  last 30 completed days.

Shapes: OpenRouter's API reference, with every field that the response models of its Python
(`openrouter`) and TypeScript (`@openrouter/sdk`) SDKs require. Amounts are JSON numbers there, as
OpenRouter sends them.
"""

from __future__ import annotations

from django.db.models import prefetch_related_objects
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from accounts.models import ApiKey
from accounts.roles import KeyKind
from portal.api import OrganizationAPIView
from portal.errors import NotFound, PermissionDenied

from . import selectors
from .activity import activity_days, activity_for
from .apis_keys import KeyOutput, key_document
from .services.budgets import budget_current_windows, budgets_applying


def Number(**kwargs):  # noqa: N802 - a field factory
    return serializers.DecimalField(
        max_digits=28, decimal_places=12, coerce_to_string=False, **kwargs
    )


CreditsOutput = inline_serializer(
    "OpenRouterCredits",
    {
        "data": inline_serializer(
            "OpenRouterCreditsData", {"total_credits": Number(), "total_usage": Number()}
        )
    },
)


class CreditsApi(OrganizationAPIView):
    scope_map = {"GET": "credits:read"}

    @extend_schema(
        operation_id="openrouter_credits",
        responses={200: CreditsOutput},
        description="Total credits and usage of the organization (management keys).",
    )
    def get(self, request):
        if self.key is not None and self.key.kind != KeyKind.MANAGEMENT:
            raise PermissionDenied("Only management keys can read the credits.")
        totals = selectors.credit_totals(selectors.balance_for(self.principal))
        return Response(
            {
                "data": {  # JSON numbers, as OpenRouter sends them
                    "total_credits": totals.total_credits,
                    "total_usage": totals.total_usage,
                }
            }
        )


class KeyBudgetOutput(serializers.Serializer):
    """A budget that applies to the calling key (OpenRouter's `KeyBudget`): its current window."""

    budget_id = serializers.CharField(allow_null=True)
    guardrail_id = serializers.CharField(allow_null=True)
    scope = serializers.CharField(
        help_text="workspace (the organization), team, member, api_key, key_limit (the key's "
        "own OpenRouter limit, UTC windows)."
    )
    limit_usd = Number()
    spend_usd = Number(help_text="Spent in the current window.")
    remaining_usd = Number(help_text="Limit minus spent and pending holds, at least 0.")
    reset_interval = serializers.CharField(allow_null=True, help_text="null: lifetime.")
    resets_at = serializers.DateTimeField(allow_null=True)
    include_byok = serializers.BooleanField()


class CurrentKeyOutput(KeyOutput):
    is_provisioning_key = serializers.BooleanField()
    is_free_tier = serializers.BooleanField()
    allowed_data_regions = serializers.ListField(child=serializers.CharField())
    budgets = KeyBudgetOutput(many=True)
    effective_budget = KeyBudgetOutput(allow_null=True)
    free_model_daily_requests = serializers.DictField()
    rate_limit = serializers.DictField()
    organization_id = serializers.CharField(allow_null=True)


CurrentKeyEnvelope = inline_serializer("CurrentKey", {"data": CurrentKeyOutput()})


class CurrentKeyApi(OrganizationAPIView):
    scope_map = {"GET": "usage:read"}

    def get_permissions(self):  # any valid key may read itself, whatever its scopes
        return [_KeyAuthenticated()]

    @extend_schema(
        operation_id="openrouter_key",
        responses={200: CurrentKeyEnvelope},
        description="The calling key: label, limit, limit_remaining, limit_reset, "
        "usage (total, daily, weekly, monthly), is_management_key, expires_at.",
    )
    def get(self, request):
        key = self.key
        usage = selectors.key_usage_totals([key])[key.pk]
        budgets = budgets_applying(
            key.organization_id,
            team_id=key.team_id,
            member_id=key.user_id,
            api_key_id=key.pk,
        )
        for budget in budgets:
            budget.organization = self.organization
        prefetch_related_objects([b for b in budgets if b.guardrail_id], "guardrail")
        windows = budget_current_windows(budgets)
        limit = key.limit_budget
        document = key_document(
            key, usage, self.principal.role, windows.get(limit.pk) if limit else None
        )
        listed = [_budget_item(b, windows[b.pk]) for b in budgets]
        effective = min(listed, key=lambda b: b["remaining_usd"], default=None)
        document.update(
            {
                "is_provisioning_key": document["is_management_key"],
                "is_free_tier": False,
                "allowed_data_regions": ["global"],
                "budgets": listed,
                "effective_budget": effective,
                "free_model_daily_requests": {"limit": 0, "remaining": 0, "used": 0},
                "rate_limit": {"interval": "10s", "note": "not enforced per key", "requests": -1},
                "organization_id": self.organization.slug,
            }
        )
        return Response({"data": CurrentKeyOutput(document).data})


_SCOPES = {"organization": "workspace", "team": "team", "member": "member", "api_key": "api_key"}
_RESET_INTERVAL = {"daily": "daily", "weekly": "weekly", "monthly": "monthly", "lifetime": None}


def _budget_item(budget, window) -> dict:
    """One budget as OpenRouter's key endpoint lists it (amounts as JSON numbers)."""
    used = window.spent + window.held
    return {
        "budget_id": str(budget.public_id),
        "guardrail_id": str(budget.guardrail.public_id) if budget.guardrail_id else None,
        "scope": "key_limit" if budget.utc_windows else _SCOPES[budget.scope],
        "limit_usd": budget.limit,
        "spend_usd": window.spent,
        "remaining_usd": max(budget.limit - used, 0),
        "reset_interval": _RESET_INTERVAL[budget.period],
        "resets_at": window.window_end,
        "include_byok": False,
    }


class _KeyAuthenticated:
    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, ApiKey)

    def has_object_permission(self, request, view, obj) -> bool:
        return True


GenerationOutput = inline_serializer(
    "Generation",
    {
        "data": inline_serializer(
            "GenerationData",
            {
                "id": serializers.CharField(),
                "model": serializers.CharField(),
                "total_cost": Number(),
                "usage": Number(),
                "upstream_inference_cost": Number(allow_null=True),
                "cache_discount": Number(allow_null=True),
                "tokens_prompt": serializers.IntegerField(),
                "tokens_completion": serializers.IntegerField(),
                "native_tokens_prompt": serializers.IntegerField(),
                "native_tokens_completion": serializers.IntegerField(),
                "native_tokens_cached": serializers.IntegerField(),
                "native_tokens_reasoning": serializers.IntegerField(),
                "native_tokens_completion_images": serializers.IntegerField(allow_null=True),
                "num_media_completion": serializers.IntegerField(),
                "created_at": serializers.DateTimeField(),
                "api_type": serializers.CharField(),
                "origin": serializers.CharField(),
                "data_region": serializers.CharField(),
                "is_byok": serializers.BooleanField(),
                "session_id": serializers.CharField(allow_null=True),
            },
        )
    },
)

_NULL_FIELDS = (
    "app_id",
    "cancelled",
    "external_user",
    "finish_reason",
    "generation_time",
    "http_referer",
    "latency",
    "moderation_latency",
    "native_finish_reason",
    "num_fetches",
    "num_input_audio_prompt",
    "num_media_prompt",
    "num_search_results",
    "preset_id",
    "provider_name",
    "provider_responses",
    "router",
    "service_tier",
    "streamed",
    "upstream_id",
    "user_agent",
    "web_search_engine",
    "workspace_id",
)
_API_TYPES = {
    "chat": "completions",
    "completion": "completions",
    "embedding": "embeddings",
    "image": "image",
    "audio": "tts",
}


class GenerationParams(serializers.Serializer):
    id = serializers.CharField(max_length=255)


class GenerationApi(OrganizationAPIView):
    scope_map = {"GET": "usage:read"}

    @extend_schema(
        operation_id="openrouter_generation",
        parameters=[
            OpenApiParameter("id", str, required=True, description="The usage event's id.")
        ],
        responses={200: GenerationOutput},
    )
    def get(self, request):
        event_id = self.parse(GenerationParams, data=request.query_params)["id"]
        event = selectors.usage_event_get(principal=self.principal, event_id=event_id)
        data = {f: None for f in _NULL_FIELDS}
        data.update(
            {
                "id": event.event_id,
                "model": event.model,
                "total_cost": event.cost,
                "usage": event.cost,
                "upstream_inference_cost": event.cost if event.cost_source == "reported" else None,
                "cache_discount": None,
                # Counts as the provider reported them: prompt includes cached input, completion
                # includes reasoning (as OpenRouter's native_tokens_*).
                "tokens_prompt": event.prompt_tokens,
                "tokens_completion": event.completion_tokens,
                "native_tokens_prompt": event.prompt_tokens,
                "native_tokens_completion": event.completion_tokens,
                "native_tokens_cached": event.cached_tokens,
                "native_tokens_reasoning": event.reasoning_tokens,
                "native_tokens_completion_images": event.images or None,
                "num_media_completion": event.images,
                "created_at": event.occurred_at,
                "api_type": _API_TYPES.get(event.operation, "other"),
                "origin": "",
                "data_region": "global",
                "is_byok": False,
                "session_id": event.conversation_id or None,
            }
        )
        return Response({"data": data})


ACTIVITY_ITEM_FIELDS = {
    "date": serializers.CharField(help_text="UTC day, YYYY-MM-DD."),
    "model": serializers.CharField(),
    "model_permaslug": serializers.CharField(),
    "endpoint_id": serializers.CharField(),
    "provider_name": serializers.CharField(),
    "usage": Number(help_text="Credits (USD) spent."),
    "byok_usage_inference": Number(),
    "requests": serializers.IntegerField(),
    "prompt_tokens": serializers.IntegerField(help_text="Cached input included."),
    "completion_tokens": serializers.IntegerField(help_text="Reasoning included."),
    "reasoning_tokens": serializers.IntegerField(),
    "cached_tokens": serializers.IntegerField(),
    "workspace_id": serializers.CharField(
        required=False, help_text="With group_by=workspace: the organization's slug."
    ),
}
ActivityOutput = inline_serializer(
    "OpenRouterActivity",
    {"data": inline_serializer("OpenRouterActivityItem", ACTIVITY_ITEM_FIELDS, many=True)},
)


class ActivityParams(serializers.Serializer):
    date = serializers.DateField(required=False, input_formats=["%Y-%m-%d"])
    api_key_hash = serializers.CharField(required=False, max_length=255)
    user_id = serializers.CharField(required=False, max_length=255)
    group_by = serializers.ChoiceField(choices=["workspace"], required=False)
    workspace_id = serializers.CharField(required=False, max_length=255)

    def validate_date(self, value):
        first, last = activity_days()
        if not first <= value <= last:
            raise serializers.ValidationError(
                f"One of the last 30 completed UTC days: {first} to {last}."
            )
        return value


class ActivityApi(OrganizationAPIView):
    scope_map = {"GET": "usage:read"}

    @extend_schema(
        operation_id="openrouter_activity",
        parameters=[
            OpenApiParameter("date", str, description="One UTC day of the window, YYYY-MM-DD."),
            OpenApiParameter("api_key_hash", str, description="Only this key's usage."),
            OpenApiParameter("user_id", str, description="Only this member's usage (user id)."),
            OpenApiParameter("group_by", str, enum=["workspace"]),
            OpenApiParameter("workspace_id", str, description="The organization's slug."),
        ],
        responses={200: ActivityOutput},
        description="Usage the key may see, by UTC day and model, over the last 30 completed "
        "UTC days (today excluded), newest first.",
    )
    def get(self, request):
        params = self.parse(ActivityParams, data=request.query_params)
        workspace = self.organization.slug
        if params.get("workspace_id", workspace) != workspace:
            raise NotFound("No such workspace in this organization.", resource="workspace")
        user_id = params.get("user_id")
        known_form = user_id is None or (
            user_id.isascii() and user_id.isdigit() and len(user_id) < 19
        )
        rows = (
            activity_for(
                self.principal,
                day=params.get("date"),
                api_key_hash=params.get("api_key_hash"),
                member_id=int(user_id) if user_id is not None else None,
            )
            if known_form
            else []  # not one of our user ids: no member has it
        )
        data = []
        for row in rows:
            item = {
                "date": row.date.isoformat(),
                "model": row.model,
                "model_permaslug": row.model,
                "endpoint_id": row.endpoint_id,
                "provider_name": row.provider,
                "usage": row.usage,
                "byok_usage_inference": 0,
                "requests": row.requests,
                "prompt_tokens": row.prompt_tokens,
                "completion_tokens": row.completion_tokens,
                "reasoning_tokens": row.reasoning_tokens,
                "cached_tokens": row.cached_tokens,
            }
            if params.get("group_by") == "workspace":
                item["workspace_id"] = workspace
            data.append(item)
        return Response({"data": data})
