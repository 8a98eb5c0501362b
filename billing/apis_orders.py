"""REST endpoints of purchases: buy credits (`POST /api/v1/credits/purchase`), the organization's
orders (`/api/v1/billing/orders`), and the payment providers' webhooks
(`/api/v1/billing/webhooks/stripe`, `/api/v1/billing/webhooks/coinbase`).

Buying needs `billing:write`, reading orders `billing:read` (owners and billing members, and
keys of the whole organization that hold them). The webhooks carry no API key: the provider's
signature is their credential (`billing.services.payments`).
"""

from __future__ import annotations

import logging

import django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.api import (
    ErrorSerializer,
    OrganizationAPIView,
    OrganizationListAPIView,
    StrictSerializer,
    error_responses,
)
from portal.errors import error_body

from . import selectors_orders as selectors
from .models import Order
from .providers import WebhookInvalid
from .services import payments

logger = logging.getLogger("billing.webhooks")


def Usd(**kwargs):  # noqa: N802 - a field factory, named like the field it makes
    """USD at whole cents in responses: a decimal string, exact."""
    return serializers.DecimalField(max_digits=14, decimal_places=2, **kwargs)


class OrderOutput(serializers.Serializer):
    id = serializers.UUIDField(source="public_id", help_text="The order's public id.")
    status = serializers.ChoiceField(choices=Order.Status.choices)
    amount = Usd(help_text="Credits bought (1 credit = 1 USD, before tax).")
    tax_rate = serializers.DecimalField(max_digits=5, decimal_places=2, help_text="Percent.")
    tax = Usd()
    total = Usd(help_text="USD charged: amount + tax.")
    currency = serializers.CharField()
    provider = serializers.ChoiceField(choices=Order.Provider.choices)
    purpose = serializers.ChoiceField(choices=Order.Purpose.choices)
    checkout_url = serializers.CharField(
        help_text="Where to pay: the provider's checkout page, or the order's page in the "
        "portal for a bank transfer."
    )
    refunded_amount = Usd(help_text="USD refunded so far.")
    invoice = serializers.CharField(
        source="invoice.number", allow_null=True, default=None, help_text="Once paid."
    )
    created_at = serializers.DateTimeField()
    paid_at = serializers.DateTimeField(allow_null=True)


class DecimalString(serializers.CharField):
    """A decimal amount sent as a JSON string (a JSON number could have been a float)."""

    default_error_messages = {"invalid": 'A decimal string, e.g. "25.00".'}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class PurchaseInput(StrictSerializer):
    amount = DecimalString(
        max_length=40,
        help_text="Credits to buy (= USD before tax), a decimal string in whole cents, between "
        "BILLING_PURCHASE_MIN and BILLING_PURCHASE_MAX.",
    )
    provider = serializers.ChoiceField(choices=Order.Provider.values)
    idempotency_key = serializers.CharField(max_length=255, required=False)


class PurchaseApi(OrganizationAPIView):
    scope_map = {"POST": "billing:write"}

    @extend_schema(
        operation_id="credits_purchase",
        request=PurchaseInput,
        responses={
            201: OrderOutput,
            **error_responses(409),
            503: OpenApiResponse(ErrorSerializer, description="The payment provider is down"),
        },
        description="Buy credits: a pending order and its checkout (`checkout_url`). The order "
        "becomes paid on the provider's verified webhook (or, for `manual` bank transfer, a "
        "billing member's confirmation in the portal); that grants the credits once and issues "
        "the invoice. A provider that is down answers 503 `provider_unavailable` and leaves no "
        "order. Idempotent by `idempotency_key` (or the `Idempotency-Key` header): a retry "
        "answers the first order.",
    )
    def post(self, request):
        data = self.parse(PurchaseInput)
        key = data.get("idempotency_key") or request.headers.get("Idempotency-Key")
        order, _ = payments.purchase_start(
            organization=self.organization,
            amount=data["amount"],
            provider=data["provider"],
            idempotency_key=key,
            actor=self.actor,
        )
        order = selectors.order_get(organization=self.organization, public_id=order.public_id)
        return Response(OrderOutput(order).data, status=status.HTTP_201_CREATED)


class OrderFilter(django_filters.FilterSet):
    class Meta:
        model = Order
        fields = ["status", "provider"]


class OrderListApi(OrganizationListAPIView):
    scope_map = {"GET": "billing:read"}
    model = Order
    filterset_class = OrderFilter

    def selector(self, organization):
        return selectors.orders_of(organization)

    @extend_schema(
        operation_id="billing_orders_list",
        responses={200: OrderOutput(many=True)},
        description="The organization's orders, newest first.",
    )
    def get(self, request):
        return self.list_response(OrderOutput)


class OrderDetailApi(OrganizationAPIView):
    scope_map = {"GET": "billing:read"}

    @extend_schema(operation_id="billing_orders_get", responses={200: OrderOutput})
    def get(self, request, id):
        order = selectors.order_get(organization=self.organization, public_id=id)
        return Response(OrderOutput(order).data)


# Webhooks ----------------------------------------------------------------------------------------


class WebhookReceipt(serializers.Serializer):
    received = serializers.BooleanField()
    event = serializers.CharField(help_text="The provider's event id.")
    outcome = serializers.ChoiceField(
        choices=["applied", "ignored", "refused"],
        help_text="What the event did (a replay answers the first outcome).",
    )
    replay = serializers.BooleanField()


class _WebhookApi(APIView):
    """A provider's webhook: no API key or session (the signature is the credential), the raw
    body read as sent (signatures cover its bytes)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    signature_header = ""
    provider = ""

    def receive(self, payload: bytes, signature: str | None):
        raise NotImplementedError

    def post(self, request):
        payload = request.body
        signature = request.headers.get(self.signature_header)
        try:
            event, new = self.receive(payload, signature)
        except WebhookInvalid as exc:
            logger.warning("%s webhook refused (400): %s", self.provider, exc)
            return Response(error_body(400, str(exc), "invalid_webhook"), status=400)
        return Response(
            {"received": True, "event": event.event_id, "outcome": event.outcome, "replay": not new}
        )


_WEBHOOK_DESCRIPTION = (
    "Verified with the `{header}` header. 400 `invalid_webhook` for a missing or wrong "
    "signature or a body that is not an event (nothing stored). Every verified event answers "
    "200 with its outcome, refused ones too (an unknown order, a mismatched amount, an event "
    "out of order: logged, nothing granted), so the provider does not retry a final answer; "
    "a replay of the same event id changes nothing."
)
_WEBHOOK_SCHEMA = {
    "request": OpenApiTypes.OBJECT,
    "responses": {
        200: WebhookReceipt,
        400: OpenApiResponse(ErrorSerializer, description="Not a verified event"),
        503: OpenApiResponse(ErrorSerializer, description="Webhooks are not configured"),
    },
    "auth": [],
}


class StripeWebhookApi(_WebhookApi):
    signature_header = "Stripe-Signature"
    provider = "stripe"

    def receive(self, payload, signature):
        return payments.stripe_webhook_receive(payload=payload, signature=signature)

    @extend_schema(
        operation_id="billing_webhooks_stripe",
        parameters=[OpenApiParameter("Stripe-Signature", str, OpenApiParameter.HEADER)],
        description="Stripe's events: `checkout.session.completed` (paid), "
        "`checkout.session.async_payment_succeeded` / `_failed`, `checkout.session.expired`, "
        "`payment_intent.succeeded` / `payment_failed` (orders named by `metadata.order_id`), "
        "`charge.refunded` (a credit note; unspent credits taken back). "
        + _WEBHOOK_DESCRIPTION.format(header="Stripe-Signature"),
        **_WEBHOOK_SCHEMA,
    )
    def post(self, request):
        return super().post(request)


class CoinbaseWebhookApi(_WebhookApi):
    signature_header = "X-CC-Webhook-Signature"
    provider = "coinbase"

    def receive(self, payload, signature):
        return payments.coinbase_webhook_receive(payload=payload, signature=signature)

    @extend_schema(
        operation_id="billing_webhooks_coinbase",
        parameters=[OpenApiParameter("X-CC-Webhook-Signature", str, OpenApiParameter.HEADER)],
        description="Coinbase Commerce's events: `charge:confirmed` (paid), `charge:failed`, "
        "`charge:pending` (no change). "
        + _WEBHOOK_DESCRIPTION.format(header="X-CC-Webhook-Signature"),
        **_WEBHOOK_SCHEMA,
    )
    def post(self, request):
        return super().post(request)
