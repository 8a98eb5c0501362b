"""`/api/v1/billing/topup`: the organization's automatic top-up rule (`billing.services.topup`),
the card it charges (saved through a Stripe Checkout Session in `setup` mode) and its attempts.
Reading needs `billing:read`, changing `billing:write` (billing members and owners; a key of the
whole organization with the scope). Amounts are USD (= credits) as decimal strings in whole
cents; times are UTC."""

from __future__ import annotations

from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from credits.periods import window_bounds
from portal.api import (
    OrganizationAPIView,
    OrganizationListAPIView,
    StrictSerializer,
    error_responses,
)

from .models import TopUp, TopUpRule
from .services import topup as services
from .services.documents import billing_profile_of


def _usd(**kwargs):
    return serializers.DecimalField(max_digits=14, decimal_places=2, **kwargs)


class TopUpRuleOutput(serializers.Serializer):
    enabled = serializers.BooleanField()
    threshold = _usd(allow_null=True, help_text="Credits: top up below this available balance.")
    amount = _usd(allow_null=True, help_text="USD per top-up (fixed), or null.")
    target_balance = _usd(allow_null=True, help_text="Credits to top up to, or null.")
    monthly_cap = _usd(allow_null=True, help_text="USD charged at most per calendar month.")
    requires_approval = serializers.BooleanField()
    failures = serializers.IntegerField(help_text="Declines in a row.")
    next_attempt_at = serializers.DateTimeField(
        allow_null=True, help_text="Back-off: no top-up before this time (UTC)."
    )
    card_saved = serializers.BooleanField(help_text="A card is saved for off-session charges.")
    month_charged = _usd(help_text="USD of this month's pending and paid top-ups (the cap's use).")
    month_start = serializers.DateTimeField(help_text="The cap's month (organization time zone).")


class DecimalString(serializers.CharField):
    """A decimal as a string (or an integer); a float is refused, as everywhere for money."""

    def to_internal_value(self, data):
        if isinstance(data, float | bool):
            raise serializers.ValidationError("Give amounts as a decimal string, not a float.")
        return super().to_internal_value(data)


class TopUpRuleInput(StrictSerializer):
    enabled = serializers.BooleanField()
    threshold = DecimalString(max_length=40, help_text='Credits, e.g. "50.00".')
    amount = DecimalString(
        max_length=40, required=False, allow_null=True, help_text="USD per top-up, or null."
    )
    target_balance = DecimalString(
        max_length=40, required=False, allow_null=True, help_text="Credits to top up to, or null."
    )
    monthly_cap = DecimalString(max_length=40, help_text="USD per calendar month.")
    requires_approval = serializers.BooleanField(required=False, default=False)


class PaymentMethodInput(StrictSerializer):
    session_id = serializers.CharField(
        max_length=255,
        required=False,
        help_text="A completed setup Checkout Session to take the card from (after the member "
        "came back); without it, a new session is started.",
    )


PaymentMethodStarted = inline_serializer(
    "TopUpCardCheckout",
    {
        "checkout_url": serializers.URLField(help_text="Send the member there to save a card."),
        "session_id": serializers.CharField(),
    },
)
PaymentMethodSaved = inline_serializer(
    "TopUpCardSaved", {"payment_method": serializers.CharField(help_text="Stripe's pm_ id.")}
)


def rule_document(organization) -> dict:
    rule = TopUpRule.objects.filter(organization=organization).first()
    profile = billing_profile_of(organization)
    now = timezone.now()
    return TopUpRuleOutput(
        {
            "enabled": bool(rule and rule.enabled),
            "threshold": rule.threshold if rule else None,
            "amount": rule.amount if rule else None,
            "target_balance": rule.target_balance if rule else None,
            "monthly_cap": rule.monthly_cap if rule else None,
            "requires_approval": bool(rule and rule.requires_approval),
            "failures": rule.failures if rule else 0,
            "next_attempt_at": rule.next_attempt_at if rule else None,
            "card_saved": bool(profile.stripe_payment_method_id),
            "month_charged": services.month_charged(organization, now),
            "month_start": window_bounds("monthly", now, organization.time_zone)[0],
        }
    ).data


def topup_return_url(organization) -> str:
    """Where Stripe sends the member back: the top-up page, with the session id."""
    path = reverse("billing-topup", kwargs={"org": organization.slug})
    return settings.PORTAL_BASE_URL.rstrip("/") + path


class TopUpRuleApi(OrganizationAPIView):
    scope_map = {"GET": "billing:read", "PUT": "billing:write"}

    @extend_schema(operation_id="billing_topup_get", responses={200: TopUpRuleOutput})
    def get(self, request):
        return Response(rule_document(self.organization))

    @extend_schema(
        operation_id="billing_topup_set", request=TopUpRuleInput, responses={200: TopUpRuleOutput}
    )
    def put(self, request):
        data = self.parse(TopUpRuleInput)
        services.topup_rule_set(
            organization=self.organization, data=services.RuleInput(**data), actor=self.actor
        )
        return Response(rule_document(self.organization))


class TopUpPaymentMethodApi(OrganizationAPIView):
    scope_map = {"POST": "billing:write"}

    @extend_schema(
        operation_id="billing_topup_payment_method",
        request=PaymentMethodInput,
        responses={201: PaymentMethodStarted, 200: PaymentMethodSaved, **error_responses(409)},
    )
    def post(self, request):
        data = self.parse(PaymentMethodInput)
        if "session_id" in data:
            method = services.topup_card_save(
                organization=self.organization, session_id=data["session_id"], actor=self.actor
            )
            return Response({"payment_method": method})
        back = topup_return_url(self.organization)
        session_id, url = services.topup_card_checkout(
            organization=self.organization,
            success_url=back + "?session_id={CHECKOUT_SESSION_ID}",
            cancel_url=back,
            actor=self.actor,
        )
        return Response({"checkout_url": url, "session_id": session_id}, status.HTTP_201_CREATED)


class TopUpAttemptOutput(serializers.Serializer):
    id = serializers.UUIDField(source="order.public_id", help_text="The order's public id.")
    state = serializers.ChoiceField(choices=TopUp.State.choices)
    amount = _usd(source="order.amount", help_text="Credits granted when paid.")
    total = _usd(source="order.total", help_text="USD charged (tax included).")
    currency = serializers.CharField(source="order.currency")
    order_status = serializers.CharField(source="order.status")
    available_before = _usd(help_text="The pool's available credits that started it.")
    attempts = serializers.IntegerField(help_text="Charge requests sent.")
    failure_code = serializers.CharField()
    failure_message = serializers.CharField()
    created_at = serializers.DateTimeField()
    decided_at = serializers.DateTimeField(allow_null=True, help_text="Approved or rejected.")


class TopUpAttemptListApi(OrganizationListAPIView):
    model = TopUp
    scope_map = {"GET": "billing:read"}
    filter_backends = []

    def selector(self, organization):
        return TopUp.objects.filter(organization=organization).select_related("order")

    @extend_schema(
        operation_id="billing_topup_attempts", responses={200: TopUpAttemptOutput(many=True)}
    )
    def get(self, request):
        return self.list_response(TopUpAttemptOutput)
