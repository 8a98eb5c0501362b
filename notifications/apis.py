"""The notifications API: the caller's own in-app notifications and preferences (any member),
and the organization's webhook endpoints with their deliveries (`org:write`: owners, admins and
organization-wide management keys; see docs/permissions.md)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from portal.api import OrganizationAPIView, OrganizationListAPIView, StrictSerializer
from portal.errors import NotFound, PermissionDenied

from . import selectors, services
from .events import EVENT_TYPES, WEBHOOK_EVENT_TYPES
from .models import Notification, OutboxMessage, WebhookEndpoint

# Notifications ----------------------------------------------------------------------------------


class NotificationOutput(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    type = serializers.CharField()
    title = serializers.CharField()
    body = serializers.CharField()
    data = serializers.DictField()
    budget = serializers.SerializerMethodField()
    threshold = serializers.SerializerMethodField()
    window_start = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    read_at = serializers.DateTimeField(allow_null=True)

    def get_budget(self, obj) -> str | None:
        value = (obj.data or {}).get("budget")
        return None if value is None else str(value)

    def get_threshold(self, obj) -> int | None:
        value = (obj.data or {}).get("threshold")
        try:
            return None if value is None else int(value)
        except (TypeError, ValueError):
            return None

    def get_window_start(self, obj) -> str | None:
        value = (obj.data or {}).get("window_start")
        return None if value is None else str(value)


class _NotificationFilter(StrictSerializer):
    ignored_fields = frozenset({"cursor", "limit"})
    unread = serializers.BooleanField(required=False)
    type = serializers.ChoiceField(choices=sorted(EVENT_TYPES), required=False)


def _member(principal):
    if principal.user is None:
        raise PermissionDenied("This key acts for no member: notifications are a member's own.")
    return principal.user


class NotificationListApi(OrganizationListAPIView):
    scope_map = {"GET": "org:read"}
    model = Notification
    filter_backends = []

    def selector(self, organization):
        params = self.parse(_NotificationFilter, data=self.request.query_params)
        rows = selectors.notification_list(organization=organization, user=self.principal.user)
        if params.get("unread"):
            rows = rows.filter(read_at__isnull=True)
        if params.get("type"):
            rows = rows.filter(type=params["type"])
        return rows

    @extend_schema(
        operation_id="notifications_list",
        parameters=[
            OpenApiParameter("unread", bool, description="Only those not read yet."),
            OpenApiParameter("type", str, enum=sorted(EVENT_TYPES)),
        ],
        responses={200: NotificationOutput(many=True)},
    )
    def get(self, request):
        return self.list_response(NotificationOutput)


class NotificationReadApi(OrganizationAPIView):
    scope_map = {"POST": "org:read"}

    @extend_schema(operation_id="notifications_read", request=None, responses=NotificationOutput)
    def post(self, request, id):
        notification = selectors.notification_get(
            organization=self.organization, user=self.principal.user, id=id
        )
        if notification is None:
            raise NotFound("No such notification.", resource="notification")
        notification = services.notification_mark_read(notification=notification)
        return Response(NotificationOutput(notification).data)


ReadAllOutput = inline_serializer("NotificationsReadAll", {"marked": serializers.IntegerField()})


class NotificationReadAllApi(OrganizationAPIView):
    scope_map = {"POST": "org:read"}

    @extend_schema(operation_id="notifications_read_all", request=None, responses=ReadAllOutput)
    def post(self, request):
        user = _member(self.principal)
        marked = services.notifications_mark_all_read(organization=self.organization, user=user)
        return Response({"marked": marked})


# Preferences ------------------------------------------------------------------------------------


class ChannelsSerializer(StrictSerializer):
    in_app = serializers.BooleanField(required=False)
    email = serializers.BooleanField(required=False)
    sms = serializers.BooleanField(required=False)


class PreferencesInput(StrictSerializer):
    phone = serializers.CharField(max_length=20, allow_blank=True, required=False)
    preferences = serializers.DictField(child=ChannelsSerializer(), required=False)


PreferencesOutput = inline_serializer(
    "NotificationPreferences",
    {
        "phone": serializers.CharField(),
        "preferences": serializers.DictField(
            child=inline_serializer(
                "NotificationChannels",
                {
                    "in_app": serializers.BooleanField(),
                    "email": serializers.BooleanField(),
                    "sms": serializers.BooleanField(),
                },
            ),
            help_text="Per event type.",
        ),
    },
)


def preferences_document(organization, user) -> dict:
    return {
        "phone": user.phone,
        "preferences": {
            type: services.preferences_of(organization=organization, user_ids=[user.pk], type=type)[
                user.pk
            ]
            for type in EVENT_TYPES
        },
    }


class NotificationPreferencesApi(OrganizationAPIView):
    scope_map = {"GET": "org:read", "PUT": "org:read"}

    @extend_schema(operation_id="notification_preferences_get", responses=PreferencesOutput)
    def get(self, request):
        user = _member(self.principal)
        return Response(preferences_document(self.organization, user))

    @extend_schema(
        operation_id="notification_preferences_set",
        request=PreferencesInput,
        responses=PreferencesOutput,
    )
    def put(self, request):
        user = _member(self.principal)
        data = self.parse(PreferencesInput)
        services.notification_preferences_set(
            organization=self.organization,
            user=user,
            preferences=data.get("preferences", {}),
            phone=data.get("phone"),
            actor=self.actor,
        )
        return Response(preferences_document(self.organization, user))


# Webhooks ---------------------------------------------------------------------------------------


class WebhookOutput(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    url = serializers.URLField()
    description = serializers.CharField()
    events = serializers.ListField(child=serializers.CharField(), source="event_types")
    enabled = serializers.BooleanField()
    disabled_at = serializers.DateTimeField(allow_null=True)
    failing_since = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class WebhookCreatedOutput(WebhookOutput):
    secret = serializers.CharField(help_text="The signing secret (whsec_...): shown only here.")


class WebhookSecretOutput(serializers.Serializer):
    id = serializers.UUIDField()
    secret = serializers.CharField(help_text="The new signing secret: shown only here.")


_EVENTS = serializers.ListField(
    child=serializers.ChoiceField(choices=list(WEBHOOK_EVENT_TYPES)), allow_empty=False
)


class WebhookCreateInput(StrictSerializer):
    url = serializers.CharField(max_length=2000)
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=list(WEBHOOK_EVENT_TYPES)), allow_empty=False
    )
    description = serializers.CharField(max_length=200, allow_blank=True, required=False)


class WebhookUpdateInput(StrictSerializer):
    url = serializers.CharField(max_length=2000, required=False)
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=list(WEBHOOK_EVENT_TYPES)),
        allow_empty=False,
        required=False,
    )
    description = serializers.CharField(max_length=200, allow_blank=True, required=False)
    enabled = serializers.BooleanField(required=False)


class DeliveryAttemptOutput(serializers.Serializer):
    started_at = serializers.DateTimeField()
    duration_ms = serializers.IntegerField()
    status_code = serializers.IntegerField(allow_null=True)
    error = serializers.CharField()
    success = serializers.BooleanField()


class DeliveryOutput(serializers.Serializer):
    message_id = serializers.CharField()
    type = serializers.CharField(source="event_type")
    status = serializers.ChoiceField(choices=OutboxMessage.Status.choices)
    attempts = serializers.IntegerField()
    next_attempt_at = serializers.DateTimeField()
    created_at = serializers.DateTimeField()
    delivered_at = serializers.DateTimeField(allow_null=True)
    last_error = serializers.CharField()
    payload = serializers.DictField()
    deliveries = DeliveryAttemptOutput(many=True)


WebhookListOutput = inline_serializer("WebhookList", {"data": WebhookOutput(many=True)})
DeliveryListOutput = inline_serializer("WebhookDeliveryList", {"data": DeliveryOutput(many=True)})


class _WebhookView(OrganizationAPIView):
    def endpoint(self, id) -> WebhookEndpoint:
        endpoint = selectors.webhook_endpoint_get(organization=self.organization, id=id)
        if endpoint is None:
            raise NotFound("No such webhook endpoint.", resource="webhook")
        return endpoint


class WebhookListApi(OrganizationAPIView):
    scope_map = {"GET": "org:write", "POST": "org:write"}

    @extend_schema(operation_id="webhooks_list", responses={200: WebhookListOutput})
    def get(self, request):
        rows = selectors.webhook_endpoint_list(organization=self.organization)
        return Response({"data": WebhookOutput(rows, many=True).data})

    @extend_schema(
        operation_id="webhooks_create",
        request=WebhookCreateInput,
        responses={201: WebhookCreatedOutput},
    )
    def post(self, request):
        data = self.parse(WebhookCreateInput)
        endpoint, secret = services.webhook_endpoint_create(
            organization=self.organization,
            url=data["url"],
            events=data["events"],
            description=data.get("description", ""),
            actor=self.actor,
        )
        body = {**WebhookOutput(endpoint).data, "secret": secret}
        return Response(body, status=status.HTTP_201_CREATED)


class WebhookDetailApi(_WebhookView):
    scope_map = {"GET": "org:write", "PATCH": "org:write", "DELETE": "org:write"}

    @extend_schema(operation_id="webhooks_get", responses=WebhookOutput)
    def get(self, request, id):
        return Response(WebhookOutput(self.endpoint(id)).data)

    @extend_schema(
        operation_id="webhooks_update", request=WebhookUpdateInput, responses=WebhookOutput
    )
    def patch(self, request, id):
        endpoint = self.endpoint(id)
        data = self.parse(WebhookUpdateInput)
        endpoint = services.webhook_endpoint_update(endpoint=endpoint, actor=self.actor, **data)
        return Response(WebhookOutput(endpoint).data)

    @extend_schema(operation_id="webhooks_delete", responses={204: None})
    def delete(self, request, id):
        services.webhook_endpoint_delete(endpoint=self.endpoint(id), actor=self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookRotateSecretApi(_WebhookView):
    scope_map = {"POST": "org:write"}

    @extend_schema(
        operation_id="webhooks_rotate_secret", request=None, responses=WebhookSecretOutput
    )
    def post(self, request, id):
        endpoint = self.endpoint(id)
        secret = services.webhook_endpoint_rotate_secret(endpoint=endpoint, actor=self.actor)
        return Response({"id": str(endpoint.public_id), "secret": secret})


class WebhookTestApi(_WebhookView):
    scope_map = {"POST": "org:write"}

    @extend_schema(operation_id="webhooks_test", request=None, responses={202: DeliveryOutput})
    def post(self, request, id):
        message = services.webhook_endpoint_test(endpoint=self.endpoint(id), actor=self.actor)
        message = selectors.delivery_get(endpoint=message.endpoint, message_id=message.message_id)
        return Response(DeliveryOutput(message).data, status=status.HTTP_202_ACCEPTED)


class WebhookDeliveriesApi(_WebhookView):
    scope_map = {"GET": "org:write"}

    @extend_schema(
        operation_id="webhooks_deliveries",
        parameters=[OpenApiParameter("status", str, enum=OutboxMessage.Status.values)],
        responses={200: DeliveryListOutput},
    )
    def get(self, request, id):
        rows = selectors.delivery_list(endpoint=self.endpoint(id))
        wanted = request.query_params.get("status")
        if wanted is not None:
            if wanted not in OutboxMessage.Status.values:
                from portal.errors import ValidationFailed

                raise ValidationFailed(
                    {"status": [f"One of: {', '.join(OutboxMessage.Status.values)}."]}
                )
            rows = rows.filter(status=wanted)
        return Response({"data": DeliveryOutput(rows[:100], many=True).data})


class WebhookResendApi(_WebhookView):
    scope_map = {"POST": "org:write"}

    @extend_schema(operation_id="webhooks_resend", request=None, responses={202: DeliveryOutput})
    def post(self, request, id, message_id):
        endpoint = self.endpoint(id)
        message = selectors.delivery_get(endpoint=endpoint, message_id=message_id)
        if message is None:
            raise NotFound("No such delivery of this endpoint.", resource="delivery")
        services.outbox_message_resend(message=message, actor=self.actor)
        message = selectors.delivery_get(endpoint=endpoint, message_id=message_id)
        return Response(DeliveryOutput(message).data, status=status.HTTP_202_ACCEPTED)
