"""The OpenRouter credit sync over the API (`billing.services.sync`):

- `GET /api/v1/billing/openrouter`: the organization's connection (the key's mask only, never the
  key), with its latest snapshot; 404 when there is none.
- `PUT /api/v1/billing/openrouter`: connect (`key` required) or change the key, the drift
  threshold, `enabled`; 201 when connected, 200 when changed.
- `DELETE /api/v1/billing/openrouter`: forget the key (the snapshots stay).
- `POST /api/v1/billing/openrouter/sync`: sync now; 201 with the snapshot, whose `status` is
  `error` with a message when OpenRouter refused the key (401, 403), failed (5xx), did not answer
  in time or answered something else than its credits.
- `GET /api/v1/billing/openrouter/snapshots`: the snapshots, newest first (cursor-paginated).

Reading needs `billing:read` (owners, admins, billing members, organization-wide management keys);
changing and syncing `billing:write` (owners, billing members). Credits are decimal strings.
"""

from __future__ import annotations

from django.db.models import F
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from portal.api import OrganizationAPIView, OrganizationListAPIView, StrictSerializer
from portal.errors import NotFound

from . import selectors_sync as selectors
from .models import OpenRouterSnapshot
from .services import sync as services


def _credits(**kwargs):
    return serializers.DecimalField(max_digits=28, decimal_places=12, **kwargs)


class OpenRouterSnapshotOutput(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    fetched_at = serializers.DateTimeField()
    trigger = serializers.ChoiceField(choices=OpenRouterSnapshot.Trigger.choices)
    status = serializers.ChoiceField(choices=OpenRouterSnapshot.Status.choices)
    error = serializers.CharField(help_text="Why the sync failed (empty when ok).")
    http_status = serializers.IntegerField(
        allow_null=True, help_text="OpenRouter's HTTP status; null: no answer (timeout, down)."
    )
    upstream_total_credits = _credits(allow_null=True, help_text="OpenRouter's total_credits.")
    upstream_total_usage = _credits(allow_null=True, help_text="OpenRouter's total_usage.")
    portal_total_credits = _credits(help_text="The portal's total_credits (GET /credits).")
    portal_total_usage = _credits(help_text="The portal's total_usage (GET /credits).")
    drift = _credits(
        allow_null=True,
        help_text="(upstream total_credits - total_usage) - (portal total_credits - "
        "total_usage): what OpenRouter has left minus what the portal has left.",
    )
    usage_drift = _credits(allow_null=True, help_text="upstream total_usage - portal total_usage.")
    alerted = serializers.BooleanField(help_text="This sync raised credits.sync_drift.")


class OpenRouterConnectionOutput(serializers.Serializer):
    key_mask = serializers.CharField(help_text="The key is never shown again: only this.")
    drift_threshold = _credits(help_text="Credits: a larger drift (either way) alerts.")
    enabled = serializers.BooleanField(help_text="Synced by the periodic task.")
    sync_every_minutes = serializers.IntegerField(help_text="The periodic task's interval.")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    latest = OpenRouterSnapshotOutput(allow_null=True, help_text="The latest snapshot.")


class _Text(serializers.CharField):
    """A JSON string only (DRF's CharField takes numbers too)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class OpenRouterConnectionInput(StrictSerializer):
    key = _Text(
        required=False,
        trim_whitespace=True,
        max_length=500,
        help_text="An OpenRouter management key (sk-or-v1-...); required to connect. "
        "Write-only: stored encrypted, never returned.",
    )
    drift_threshold = _credits(
        required=False, min_value=0, help_text="Credits, a decimal string; default 1."
    )
    enabled = serializers.BooleanField(required=False)


def _connection_document(connection) -> dict:
    from django.conf import settings

    latest = selectors.snapshot_list(organization=connection.organization).first()
    document = {
        "key_mask": connection.key_mask,
        "drift_threshold": connection.drift_threshold,
        "enabled": connection.enabled,
        "sync_every_minutes": settings.OPENROUTER_SYNC_MINUTES,
        "created_at": connection.created_at,
        "updated_at": connection.updated_at,
        "latest": selectors.with_usage_drift(latest) if latest else None,
    }
    return OpenRouterConnectionOutput(document).data


class _ConnectionView(OrganizationAPIView):
    def connection(self):
        connection = selectors.connection_get(organization=self.organization)
        if connection is None:
            raise NotFound(
                "No OpenRouter connection: PUT /api/v1/billing/openrouter with a management key.",
                resource="openrouter",
            )
        return connection


class OpenRouterConnectionApi(_ConnectionView):
    scope_map = {"GET": "billing:read", "PUT": "billing:write", "DELETE": "billing:write"}

    @extend_schema(
        operation_id="billing_openrouter_get",
        responses={200: OpenRouterConnectionOutput},
        description="The organization's OpenRouter connection (the key's mask only) and its "
        "latest snapshot; 404 when none is set.",
    )
    def get(self, request):
        return Response(_connection_document(self.connection()))

    @extend_schema(
        operation_id="billing_openrouter_set",
        request=OpenRouterConnectionInput,
        responses={200: OpenRouterConnectionOutput, 201: OpenRouterConnectionOutput},
        description="Connect (201; `key` required) or change the connection (200).",
    )
    def put(self, request):
        data = self.parse(OpenRouterConnectionInput)
        connection, created = services.openrouter_connection_set(
            organization=self.organization, actor=self.actor, **data
        )
        return Response(
            _connection_document(connection),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(
        operation_id="billing_openrouter_delete",
        responses={204: None},
        description="Forget the key; the snapshots stay.",
    )
    def delete(self, request):
        services.openrouter_connection_delete(connection=self.connection(), actor=self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


class OpenRouterSyncApi(_ConnectionView):
    scope_map = {"POST": "billing:write"}
    throttle_scope = "openrouter_sync"  # each sync calls OpenRouter (portal.throttling)

    @extend_schema(
        operation_id="billing_openrouter_sync",
        request=None,
        responses={201: OpenRouterSnapshotOutput},
        description="Fetch OpenRouter's credits now. A failed fetch is a snapshot too "
        "(`status` error, `error` says why).",
    )
    def post(self, request):
        snapshot = services.openrouter_sync(connection=self.connection(), actor=self.actor)
        return Response(
            OpenRouterSnapshotOutput(selectors.with_usage_drift(snapshot)).data,
            status=status.HTTP_201_CREATED,
        )


class OpenRouterSnapshotListApi(OrganizationListAPIView):
    scope_map = {"GET": "billing:read"}
    model = OpenRouterSnapshot
    filter_backends = []

    def selector(self, organization):
        return selectors.snapshot_list(organization=organization).annotate(
            usage_drift=F("upstream_total_usage") - F("portal_total_usage")
        )

    @extend_schema(
        operation_id="billing_openrouter_snapshots",
        responses={200: OpenRouterSnapshotOutput(many=True)},
        description="Every sync, newest first: upstream and portal totals, drift, or why it "
        "failed.",
    )
    def get(self, request):
        return self.list_response(OpenRouterSnapshotOutput)
