"""`/api/v1/budgets` and `/api/v1/budgets/{id}`: spending limits per period on the organization,
a team, a member or an API key (`credits.services.budgets`). Reading needs `credits:read` and
shows the budgets the principal sees (`selectors.budgets_visible`, by `Principal.budget_filter`;
others answer 404); setting, changing and deleting needs `credits:write` organization-wide, or a
team manager's right over a member of the team (`Principal.check_budget`). Amounts are credits
(USD) as strings; windows are in the organization's time zone (ISO 8601 with the offset), or UTC
for an API key's OpenRouter limit."""

from __future__ import annotations

import uuid

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from accounts.models import ApiKey, Membership
from portal.api import (
    OrganizationAPIView,
    OrganizationListAPIView,
    StrictSerializer,
    error_responses,
)
from portal.errors import Conflict, NotFound, ValidationFailed

from . import selectors
from .models import Alert, Budget, UsageEvent
from .services import alerts as alert_services
from .services import budgets as services
from .services.budgets import budget_current_windows


def _amount(**kwargs):
    return serializers.DecimalField(max_digits=28, decimal_places=12, **kwargs)


class BudgetOutput(serializers.Serializer):
    id = serializers.UUIDField(help_text="The budget's public id.")
    scope = serializers.ChoiceField(choices=Budget.Scope.choices)
    team = serializers.CharField(allow_null=True, help_text="Team slug (scope team).")
    member = serializers.EmailField(allow_null=True, help_text="Member e-mail (scope member).")
    api_key = serializers.CharField(allow_null=True, help_text="Key hash (scope api_key).")
    period = serializers.ChoiceField(choices=Budget.Period.choices)
    limit = _amount(help_text="Credits (USD) per window.")
    mode = serializers.ChoiceField(choices=Budget.Mode.choices)
    grace = _amount(help_text="Soft budgets: credits allowed past the limit.")
    thresholds = serializers.ListField(child=serializers.IntegerField(), help_text="Percents.")
    operation = serializers.CharField(allow_null=True)
    model = serializers.CharField(allow_null=True)
    utc_windows = serializers.BooleanField(help_text="An API key's OpenRouter limit (UTC).")
    spent = _amount(help_text="Spent in the current window.")
    held = _amount(help_text="Reserved by pending holds in the current window.")
    remaining = _amount(help_text="limit - spent - held, at least 0.")
    window_start = serializers.DateTimeField()
    window_end = serializers.DateTimeField(allow_null=True, help_text="null: lifetime.")


class _BudgetFilters(StrictSerializer):
    """What usage a budget counts, as created and as updated."""

    operation = serializers.ChoiceField(
        choices=UsageEvent.Operation.choices, required=False, allow_blank=True, allow_null=True,
        help_text="Only usage of this operation counts; null or empty: any.",
    )  # fmt: skip
    model = serializers.CharField(
        max_length=200, required=False, allow_blank=True, allow_null=True,
        help_text="Only usage of this model counts (a provider prefix ending in '/': its "
        "models); a model of the price table or one used in the organization. Null or empty: any.",
    )  # fmt: skip


class BudgetCreateInput(_BudgetFilters):
    scope = serializers.ChoiceField(choices=Budget.Scope.choices)
    team = serializers.CharField(max_length=50, required=False)
    member = serializers.EmailField(required=False)
    api_key = serializers.CharField(max_length=64, required=False)
    period = serializers.ChoiceField(choices=Budget.Period.choices)
    limit = _amount(min_value=0)
    mode = serializers.ChoiceField(choices=Budget.Mode.choices, default=Budget.Mode.HARD)
    grace = _amount(min_value=0, required=False, default=0)
    thresholds = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=1000), required=False
    )


class BudgetUpdateInput(_BudgetFilters):
    period = serializers.ChoiceField(choices=Budget.Period.choices, required=False)
    limit = _amount(min_value=0, required=False)
    mode = serializers.ChoiceField(choices=Budget.Mode.choices, required=False)
    grace = _amount(min_value=0, required=False)
    thresholds = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=1000), required=False
    )


BudgetListOutput = inline_serializer("BudgetList", {"data": BudgetOutput(many=True)})


def budgets_data(budgets: list[Budget], principal) -> list[dict]:
    """The API documents of `budgets` with their current windows (one query for the windows);
    members and keys the principal may not identify are null."""
    windows = budget_current_windows(budgets)
    out = []
    for b in budgets:
        w = windows[b.pk]
        out.append(
            BudgetOutput(
                {
                    "id": b.public_id,
                    "scope": b.scope,
                    "team": b.team.slug if b.team_id else None,
                    "member": b.member.email
                    if b.member_id and principal.sees_member(b.member_id)
                    else None,
                    "api_key": b.api_key.hash
                    if b.api_key_id and principal.sees_key(b.api_key)
                    else None,
                    "period": b.period,
                    "limit": b.limit,
                    "mode": b.mode,
                    "grace": b.grace,
                    "thresholds": b.thresholds,
                    "operation": b.operation or None,
                    "model": b.model or None,
                    "utc_windows": b.utc_windows,
                    "spent": w.spent,
                    "held": w.held,
                    "remaining": max(b.limit - w.spent - w.held, 0),
                    "window_start": w.window_start,
                    "window_end": w.window_end,
                }
            ).data
        )
    return out


def _in_zone(data: list[dict], budgets: list[Budget]) -> list[dict]:
    """Window times in the organization's time zone (UTC for key limits), with the offset."""
    from zoneinfo import ZoneInfo

    from django.utils.dateparse import parse_datetime

    for document, budget in zip(data, budgets, strict=True):
        zone = ZoneInfo("UTC" if budget.in_utc else budget.organization.time_zone)
        for name in ("window_start", "window_end"):
            if document[name]:
                document[name] = parse_datetime(document[name]).astimezone(zone).isoformat()
    return data


class BudgetListApi(OrganizationAPIView):
    # Writes are decided by Principal.check_budget (credits:write, or a team manager's right).
    scope_map = {"GET": "credits:read", "POST": "credits:read"}

    @extend_schema(operation_id="budgets_list", responses={200: BudgetListOutput})
    def get(self, request):
        budgets = list(selectors.budgets_visible(self.principal).order_by("id")[:1000])
        return Response({"data": _in_zone(budgets_data(budgets, self.principal), budgets)})

    @extend_schema(
        operation_id="budgets_create", request=BudgetCreateInput, responses={201: BudgetOutput}
    )
    def post(self, request):
        data = self.parse(BudgetCreateInput)
        scope = data["scope"]
        targets = {"team": None, "member": None, "api_key": None}
        for name in targets:
            if name in data and name != scope:
                raise ValidationFailed({name: [f"Only for scope {name}."]})
        if scope != "organization" and scope not in data:
            raise ValidationFailed({scope: ["Required for this scope."]})
        org = self.organization
        if scope == "team":
            targets["team"] = org.teams.filter(slug=data["team"]).first()
            if targets["team"] is None:
                raise ValidationFailed({"team": ["No such team in this organization."]})
        elif scope == "member":
            membership = (
                Membership.objects.filter(organization=org, user__email=data["member"].lower())
                .select_related("user")
                .first()
            )
            if membership is None:
                raise ValidationFailed({"member": ["Not a member of this organization."]})
            targets["member"] = membership.user
        elif scope == "api_key":
            key = ApiKey.objects.filter(
                organization=org, hash=data["api_key"], deleted_at__isnull=True
            ).first()
            if key is None:
                raise ValidationFailed({"api_key": ["No such API key in this organization."]})
            targets["api_key"] = key
        self.principal.check_budget(scope, targets[scope] if scope != "organization" else None)
        budget = services.budget_create(
            organization=org,
            scope=scope,
            period=data["period"],
            limit=data["limit"],
            mode=data["mode"],
            grace=data["grace"],
            thresholds=data.get("thresholds"),
            operation=data.get("operation", ""),
            model=data.get("model", ""),
            actor=self.actor,
            **targets,
        )
        return Response(
            _in_zone(budgets_data([budget], self.principal), [budget])[0], status.HTTP_201_CREATED
        )


def _not_a_guardrails(budget: Budget) -> None:
    """A guardrail's budget changes with its guardrail (`/api/v1/guardrails`), not here."""
    if budget.guardrail_id is not None:
        raise Conflict(
            "This budget belongs to a guardrail: change or unassign the guardrail instead.",
            guardrail_id=str(budget.guardrail.public_id),
        )


def _target(budget: Budget):
    return {"team": budget.team, "member": budget.member, "api_key": budget.api_key}.get(
        budget.scope
    )


class BudgetDetailApi(OrganizationAPIView):
    scope_map = {"GET": "credits:read", "PATCH": "credits:read", "DELETE": "credits:read"}

    @extend_schema(operation_id="budgets_get", responses={200: BudgetOutput})
    def get(self, request, id):
        budget = selectors.budget_get(principal=self.principal, id=id)
        return Response(_in_zone(budgets_data([budget], self.principal), [budget])[0])

    @extend_schema(
        operation_id="budgets_update",
        request=BudgetUpdateInput,
        responses={200: BudgetOutput, **error_responses(409)},
    )
    def patch(self, request, id):
        budget = selectors.budget_get(principal=self.principal, id=id)
        self.principal.check_budget(budget.scope, _target(budget))
        data = self.parse(BudgetUpdateInput)
        _not_a_guardrails(budget)
        budget = services.budget_update(budget=budget, actor=self.actor, **data)
        return Response(_in_zone(budgets_data([budget], self.principal), [budget])[0])

    @extend_schema(
        operation_id="budgets_delete",
        responses={
            200: inline_serializer("BudgetDeleted", {"deleted": serializers.BooleanField()}),
            **error_responses(409),
        },
    )
    def delete(self, request, id):
        budget = selectors.budget_get(principal=self.principal, id=id)
        self.principal.check_budget(budget.scope, _target(budget))
        _not_a_guardrails(budget)
        services.budget_delete(budget=budget, actor=self.actor)
        return Response({"deleted": True})


# Alerts ------------------------------------------------------------------------------------------


class AlertOutput(serializers.Serializer):
    id = serializers.UUIDField(source="public_id", help_text="The alert's public id.")
    type = serializers.ChoiceField(choices=Alert.Type.choices)
    created_at = serializers.DateTimeField()
    budget = serializers.UUIDField(source="budget.public_id", help_text="The budget's public id.")
    threshold = serializers.IntegerField(
        allow_null=True, help_text="Percent of the limit; null for a recovery or a forecast."
    )
    window_start = serializers.DateTimeField()
    spent = _amount(help_text="Spent in the window when it fired.")
    limit = _amount()
    acknowledged_at = serializers.DateTimeField(allow_null=True)


class AlertListApi(OrganizationListAPIView):
    """`/api/v1/alerts`: the alerts of the budgets the principal sees, newest first."""

    scope_map = {"GET": "credits:read"}
    model = Alert
    filter_backends = []

    def selector(self, organization):
        return alerts_visible(self.principal)

    @extend_schema(operation_id="alerts_list", responses={200: AlertOutput(many=True)})
    def get(self, request):
        return self.list_response(AlertOutput)


class AlertAcknowledgeApi(OrganizationAPIView):
    # Decided by Principal.check_alert_acknowledge (credits:write, or the team's manager).
    scope_map = {"POST": "credits:read"}

    @extend_schema(operation_id="alerts_acknowledge", request=None, responses={200: AlertOutput})
    def post(self, request, id):
        alert = alert_visible_get(self.principal, id)
        self.principal.check_alert_acknowledge(alert.budget)
        alert = alert_services.alert_acknowledge(alert=alert, actor=self.actor)
        return Response(AlertOutput(alert).data)


def alerts_visible(principal):
    """Alerts of the budgets `principal` sees (`selectors.budgets_visible`)."""
    return (
        Alert.objects.filter(
            organization=principal.organization, budget__in=selectors.budgets_visible(principal)
        )
        .select_related("budget")
        .order_by("-id")
    )


def alert_visible_get(principal, id) -> Alert:
    """An alert of a budget `principal` sees, by public id. Raises NotFound (404)."""
    try:
        public_id = uuid.UUID(str(id))
    except ValueError:
        public_id = None
    alert = alerts_visible(principal).filter(public_id=public_id).first() if public_id else None
    if alert is None:
        raise NotFound("No such alert in this organization.", resource="alert")
    return alert
