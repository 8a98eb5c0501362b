"""The gateway's API: the organization's upstreams (`org:write`: owners, admins and org-wide
management keys, as webhook endpoints, since both hold credentials of the organization), the
OpenRouter-compatible chat completions (`usage:write`: whoever may record usage and hold credits)
and the models reachable through the upstreams (`usage:read`).

Shapes of `/chat/completions` and `/models`: OpenRouter's API reference (its OpenAPI document),
so that its official SDKs work with only their server URL changed."""

from __future__ import annotations

import uuid
from decimal import Decimal

from asgiref.sync import async_to_sync
from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from portal.api import ErrorSerializer, OrganizationAPIView, StrictSerializer, error_responses
from portal.errors import ApplicationError, NotFound

from . import gateway
from .apis_openrouter import Number
from .models import ModelPrice, Upstream
from .services.group_commit import connection_release
from .services.prices import model_context_window, price_for
from .services.upstreams import (
    MAX_TIMEOUT,
    MIN_TIMEOUT,
    upstream_create,
    upstream_delete,
    upstream_match,
    upstream_update,
)
from .services.usage import Attribution

# Upstreams --------------------------------------------------------------------------------------


class UpstreamOutput(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=Upstream.Kind.choices)
    base_url = serializers.CharField()
    models = serializers.ListField(child=serializers.CharField())
    timeout = serializers.IntegerField(help_text="Seconds.")
    enabled = serializers.BooleanField()
    api_key_set = serializers.SerializerMethodField(help_text="The key itself is never shown.")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_api_key_set(self, obj) -> bool:
        return bool(obj.api_key_encrypted)


_MODELS = serializers.ListField(
    child=serializers.CharField(max_length=200, trim_whitespace=False),
    allow_empty=False,
    help_text="Exact model ids ('gpt-4o') or provider prefixes ending in '/' ('openai/').",
)


class UpstreamCreateInput(StrictSerializer):
    name = serializers.CharField(max_length=100)
    kind = serializers.ChoiceField(choices=Upstream.Kind.choices)
    base_url = serializers.CharField(max_length=2000)
    api_key = serializers.CharField(
        max_length=4000, allow_blank=True, required=False, write_only=True
    )
    models = _MODELS
    timeout = serializers.IntegerField(
        min_value=MIN_TIMEOUT, max_value=MAX_TIMEOUT, required=False, help_text="Seconds."
    )
    enabled = serializers.BooleanField(required=False)


class UpstreamUpdateInput(StrictSerializer):
    name = serializers.CharField(max_length=100, required=False)
    kind = serializers.ChoiceField(choices=Upstream.Kind.choices, required=False)
    base_url = serializers.CharField(max_length=2000, required=False)
    api_key = serializers.CharField(
        max_length=4000, allow_blank=True, required=False, write_only=True,
        help_text="A new key; an empty string removes it.",
    )  # fmt: skip
    models = serializers.ListField(
        child=serializers.CharField(max_length=200, trim_whitespace=False),
        allow_empty=False,
        required=False,
    )
    timeout = serializers.IntegerField(min_value=MIN_TIMEOUT, max_value=MAX_TIMEOUT, required=False)
    enabled = serializers.BooleanField(required=False)


UpstreamListOutput = inline_serializer("UpstreamList", {"data": UpstreamOutput(many=True)})


def _upstream(organization, id) -> Upstream:
    try:
        public_id = uuid.UUID(str(id))
    except ValueError:
        public_id = None
    upstream = (
        Upstream.objects.filter(organization=organization, public_id=public_id).first()
        if public_id
        else None
    )
    if upstream is None:
        raise NotFound("No such upstream.", resource="upstream")
    return upstream


class UpstreamListApi(OrganizationAPIView):
    scope_map = {"GET": "org:write", "POST": "org:write"}

    @extend_schema(operation_id="upstreams_list", responses={200: UpstreamListOutput})
    def get(self, request):
        rows = Upstream.objects.filter(organization=self.organization)
        return Response({"data": UpstreamOutput(rows, many=True).data})

    @extend_schema(
        operation_id="upstreams_create",
        request=UpstreamCreateInput,
        responses={201: UpstreamOutput, **error_responses(409)},
    )
    def post(self, request):
        data = self.parse(UpstreamCreateInput)
        upstream = upstream_create(organization=self.organization, actor=self.actor, **data)
        return Response(UpstreamOutput(upstream).data, status=status.HTTP_201_CREATED)


class UpstreamDetailApi(OrganizationAPIView):
    scope_map = {"GET": "org:write", "PATCH": "org:write", "DELETE": "org:write"}

    @extend_schema(operation_id="upstreams_get", responses=UpstreamOutput)
    def get(self, request, id):
        return Response(UpstreamOutput(_upstream(self.organization, id)).data)

    @extend_schema(
        operation_id="upstreams_update",
        request=UpstreamUpdateInput,
        responses={200: UpstreamOutput, **error_responses(409)},
    )
    def patch(self, request, id):
        upstream = _upstream(self.organization, id)
        data = self.parse(UpstreamUpdateInput)
        upstream = upstream_update(upstream=upstream, actor=self.actor, **data)
        return Response(UpstreamOutput(upstream).data)

    @extend_schema(operation_id="upstreams_delete", responses={204: None})
    def delete(self, request, id):
        upstream_delete(upstream=_upstream(self.organization, id), actor=self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


# Chat completions -------------------------------------------------------------------------------

ChatUsageOutput = inline_serializer(
    "GatewayChatUsage",
    {
        "prompt_tokens": serializers.IntegerField(),
        "completion_tokens": serializers.IntegerField(),
        "total_tokens": serializers.IntegerField(),
        "cost": Number(help_text="Credits (USD) charged."),
        "is_byok": serializers.BooleanField(),
    },
)
ChatResultOutput = inline_serializer(
    "GatewayChatResult",
    {
        "id": serializers.CharField(help_text="The generation id (GET /api/v1/generation?id=)."),
        "object": serializers.CharField(),
        "created": serializers.IntegerField(),
        "model": serializers.CharField(help_text="The model that served the request."),
        "choices": serializers.ListField(child=serializers.DictField()),
        "system_fingerprint": serializers.CharField(allow_null=True),
        "usage": ChatUsageOutput,
    },
)
ChatRequestInput = inline_serializer(
    "GatewayChatRequest",
    {
        "model": serializers.CharField(required=False),
        "models": serializers.ListField(child=serializers.CharField(), required=False),
        "route": serializers.ChoiceField(choices=["fallback"], required=False),
        "messages": serializers.ListField(child=serializers.DictField()),
        "max_tokens": serializers.IntegerField(required=False, min_value=1),
        "max_completion_tokens": serializers.IntegerField(required=False, min_value=1),
        "stream": serializers.BooleanField(required=False),
        "user": serializers.CharField(required=False),
        "session_id": serializers.CharField(required=False),
    },
)


class ChatCompletionsApi(OrganizationAPIView):
    scope_map = {"POST": "usage:write"}

    def perform_content_negotiation(self, request, force=False):
        """JSON whatever the Accept header: streaming clients send `text/event-stream`, and an
        error (402 before the stream starts) must still be the JSON error format, which is what
        the SDKs parse. Streams are not rendered by DRF."""
        return (JSONRenderer(), JSONRenderer.media_type)

    @extend_schema(
        operation_id="chat_completions",
        request=ChatRequestInput,
        responses={
            200: OpenApiResponse(
                ChatResultOutput,
                description="A chat completion; with `stream: true`, server-sent events of "
                "chat.completion.chunk objects ending with the usage chunk and `[DONE]`.",
            ),
            **error_responses(402),
            502: OpenApiResponse(ErrorSerializer, description="The upstream failed."),
            504: OpenApiResponse(ErrorSerializer, description="The upstream timed out."),
        },
        description="OpenAI's and OpenRouter's chat completions through the organization's "
        "upstreams: the worst case is held first (402 when the credits, a budget or the key's "
        "limit do not allow it; with a `models` list, the next model that fits is used), the "
        "actual cost is captured from the reported usage.",
    )
    def post(self, request):
        chat = gateway.chat_parse(organization_id=self.organization.pk, body=request.data)
        held = gateway.chat_hold(attribution=Attribution.of_principal(self.principal), request=chat)
        # The upstream may take minutes: the request gives its pooled database connection back
        # while it waits, and takes one again for the capture.
        connection_release()
        if not chat.stream:
            return Response(gateway.chat_complete(held))
        # Under ASGI the stream runs on the event loop (httpx's async client): an open stream holds
        # neither a worker nor a thread. Under WSGI (runserver, gthread workers) it is a thread.
        on_loop = isinstance(request._request, ASGIRequest)
        try:
            if on_loop:
                upstream_response = async_to_sync(gateway.upstream_send_async)(held)
            else:
                upstream_response = gateway.upstream_send(held)
        except ApplicationError:
            gateway.chat_void(held)
            raise
        relay = gateway.chat_stream_async if on_loop else gateway.chat_stream
        response = StreamingHttpResponse(
            relay(held, upstream_response), content_type="text/event-stream"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx: pass chunks through as they come
        return response


# Models -----------------------------------------------------------------------------------------


def _price(value) -> str:
    if value is None:
        return "0"
    text = format(Decimal(value).normalize(), "f")
    return text


def _or(value, default):
    return default if value is None else value


def model_document(model: str, price: ModelPrice) -> dict:
    """One model in OpenRouter's models-list shape, priced from the price table."""
    window = model_context_window(model)
    return {
        "id": model,
        "canonical_slug": model,
        "hugging_face_id": None,
        "name": model,
        "created": int(price.effective_from.timestamp()),
        "description": "",
        "pricing": {
            "prompt": _price(price.input_per_token),
            "completion": _price(price.output_per_token),
            "input_cache_read": _price(_or(price.cache_read_per_token, price.input_per_token)),
            "internal_reasoning": _price(_or(price.reasoning_per_token, price.output_per_token)),
            "request": _price(price.per_request),
            "image": _price(price.input_per_image),
        },
        "context_length": window,
        "architecture": {
            "modality": "text->text",
            "input_modalities": ["text"],
            "output_modalities": ["text"],
            "tokenizer": "Other",
            "instruct_type": None,
        },
        "top_provider": {
            "context_length": window,
            "max_completion_tokens": window,
            "is_moderated": False,
        },
        "per_request_limits": None,
        "supported_parameters": ["max_tokens", "temperature", "top_p", "stop", "stream"],
        "default_parameters": None,
        "supported_voices": None,
        "expiration_date": None,
        "knowledge_cutoff": None,
        "links": {"details": f"/api/v1/models/{model}/endpoints"},
    }


def models_reachable(organization_id: int) -> list[str]:
    """Model ids the organization's enabled upstreams serve and the price table prices: exact
    ids as listed, prefixes expanded to the price table's ids under them; sorted."""
    upstreams = list(Upstream.objects.filter(organization_id=organization_id, enabled=True))
    if not upstreams:
        return []
    keys = set(ModelPrice.objects.values_list("model", flat=True).distinct())
    found = set()
    for upstream in upstreams:
        for entry in upstream.models:
            if entry.endswith("/"):
                found |= {k for k in keys if upstream_match([entry], k)}
            else:
                found.add(entry)
    return sorted(found)


ModelsOutput = inline_serializer(
    "GatewayModels",
    {
        "data": serializers.ListField(child=serializers.DictField()),
        "total_count": serializers.IntegerField(),
        "links": inline_serializer(
            "GatewayModelsLinks", {"next": serializers.CharField(allow_null=True)}
        ),
    },
)


class ModelsApi(OrganizationAPIView):
    scope_map = {"GET": "usage:read"}

    @extend_schema(
        operation_id="models_list",
        responses={200: ModelsOutput},
        description="The models the organization reaches through its upstreams, with the price "
        "table's prices (USD per token, as strings), in OpenRouter's models-list shape.",
    )
    def get(self, request):
        from django.utils import timezone

        now = timezone.now()
        data = []
        for model in models_reachable(self.organization.pk):
            price = price_for(model, now)
            if price is not None:
                data.append(model_document(model, price))
        return Response({"data": data, "total_count": len(data), "links": {"next": None}})
