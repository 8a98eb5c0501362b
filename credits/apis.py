"""REST endpoints of the ledger: balance, accounts and their history, lots, allocations. Metering
(usage, authorizations, report) is in `credits.apis_usage`; the OpenRouter-compatible reads
(`/credits`, `/key`, `/generation`) are in `credits.apis_openrouter`."""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import (
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.response import Response

from portal.api import (
    IdFilter,
    OrganizationAPIView,
    OrganizationListAPIView,
    StrictSerializer,
    error_responses,
    serializer_shared,
)

from . import selectors, services
from .models import CreditLot, LedgerAccount, LedgerEntry


def Credits(**kwargs):  # noqa: N802 - a field factory, named like the field it makes
    """Credits (USD) in responses: a decimal string, exact."""
    return serializers.DecimalField(max_digits=28, decimal_places=12, **kwargs)


# Balance -----------------------------------------------------------------------------------------


class TeamBalanceOutput(serializers.Serializer):
    team = serializers.CharField(source="team.slug")
    funding = serializers.CharField()
    balance = Credits()
    held = Credits()
    available = Credits()
    used = Credits()
    used_today = Credits()
    used_this_month = Credits()


class BalanceOutput(serializers.Serializer):
    total_credited = Credits(
        allow_null=True,
        help_text="Every credit that entered (grants, purchases). Null for a key or member "
        "bound to a team or member (as the other organization-only figures).",
    )
    total_used = Credits(help_text="Usage the caller may see.")
    total_expired = Credits(allow_null=True)
    balance = Credits(help_text="Pool and team accounts together.")
    held = Credits(help_text="Reserved by pending authorizations.")
    available = Credits(help_text="balance - held")
    used_today = Credits(help_text="UTC day, by occurred_at.")
    used_this_month = Credits()
    expiring_30_days = Credits(allow_null=True)
    pool_balance = Credits(allow_null=True)
    pool_available = Credits(allow_null=True)
    teams = TeamBalanceOutput(many=True)


class BalanceApi(OrganizationAPIView):
    scope_map = {"GET": "credits:read"}

    @extend_schema(operation_id="credits_balance", responses={200: BalanceOutput})
    def get(self, request):
        summary = selectors.balance_for(self.principal)
        return Response(serializer_shared(BalanceOutput).to_representation(summary))


# Accounts and lots -------------------------------------------------------------------------------


class AccountOutput(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=LedgerAccount.Kind.choices)
    team = serializers.CharField(source="team.slug", allow_null=True, default=None)
    balance = Credits()
    held = Credits()
    available = Credits()
    low_balance = Credits(
        allow_null=True, help_text="balance.low is told below this (credits); null: never."
    )


class AccountUpdateInput(StrictSerializer):
    low_balance = serializers.DecimalField(
        max_digits=28, decimal_places=12, min_value=0, allow_null=True
    )


class AccountDetailApi(OrganizationAPIView):
    scope_map = {"GET": "credits:read", "PATCH": "credits:read"}

    @extend_schema(operation_id="credits_accounts_get", responses={200: AccountOutput})
    def get(self, request, pk: int):
        account = selectors.account_visible_get(principal=self.principal, pk=pk)
        account.balance = selectors.account_balance(account)
        return Response(AccountOutput(account).data)

    @extend_schema(
        operation_id="credits_accounts_update",
        request=AccountUpdateInput,
        responses={200: AccountOutput},
        description="Set the account's low balance (credits; null: no alert): below it, "
        "`balance.low` is told once a day. Needs credits:write for the whole organization, or "
        "the team manager's right on the team's account.",
    )
    def patch(self, request, pk: int):
        from .services.watch import account_low_balance_set

        account = selectors.account_visible_get(principal=self.principal, pk=pk)
        data = self.parse(AccountUpdateInput)
        self.principal.check_account_settings(account.team)
        account = account_low_balance_set(
            account=account, low_balance=data["low_balance"], actor=self.actor
        )
        return Response(AccountOutput(account).data)


class AccountListApi(OrganizationListAPIView):
    scope_map = {"GET": "credits:read"}
    model = LedgerAccount

    def selector(self, organization):
        return selectors.accounts_visible(self.principal)

    @extend_schema(operation_id="credits_accounts_list", responses={200: AccountOutput(many=True)})
    def get(self, request):
        return self.list_response(AccountOutput)

    def list_response(self, serializer_class):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        for account in page:
            account.balance = selectors.account_balance(account)
        return self.get_paginated_response(serializer_class(page, many=True).data)


class EntryOutput(serializers.Serializer):
    id = serializers.IntegerField()
    transaction = serializers.IntegerField(source="transaction_id")
    kind = serializers.CharField(source="transaction.kind")
    memo = serializers.CharField(source="transaction.memo")
    amount = Credits(help_text="Signed: what the entry added to the balance.")
    running_balance = Credits(help_text="The account's balance right after this entry.")
    lot = serializers.IntegerField(source="lot_id", allow_null=True)
    created_at = serializers.DateTimeField()


class AccountEntriesApi(OrganizationListAPIView):
    scope_map = {"GET": "credits:read"}
    model = LedgerEntry

    def selector(self, organization):
        return selectors.account_history(principal=self.principal, account_id=self.kwargs["pk"])

    @extend_schema(
        operation_id="credits_account_entries",
        responses={200: EntryOutput(many=True)},
        description="An account's history, newest first, with the running balance.",
    )
    def get(self, request, pk: int):
        page = self.paginate_queryset(self.get_queryset())
        selectors.with_running_balance(page)
        return self.get_paginated_response(EntryOutput(page, many=True).data)


class LotOutput(serializers.Serializer):
    id = serializers.IntegerField()
    account = serializers.IntegerField(source="account_id")
    team = serializers.CharField(source="account.team.slug", allow_null=True, default=None)
    source = serializers.ChoiceField(choices=CreditLot.Source.choices)
    origin = serializers.IntegerField(source="origin_id", allow_null=True)
    original_amount = Credits()
    remaining = Credits()
    priority = serializers.IntegerField()
    expires_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


class LotFilter(django_filters.FilterSet):
    account = IdFilter(field_name="account_id")
    active = django_filters.BooleanFilter(method="filter_active")

    class Meta:
        model = CreditLot
        fields = ["account", "source"]

    def filter_active(self, qs, name, value):
        return qs.filter(remaining__gt=0) if value else qs.filter(remaining=0)


class LotListApi(OrganizationListAPIView):
    scope_map = {"GET": "credits:read"}
    model = CreditLot
    filterset_class = LotFilter

    def selector(self, organization):
        return selectors.lots_visible(self.principal)

    @extend_schema(operation_id="credits_lots_list", responses={200: LotOutput(many=True)})
    def get(self, request):
        return self.list_response(LotOutput)


# Allocations -------------------------------------------------------------------------------------


class AllocationInput(StrictSerializer):
    team = serializers.CharField(max_length=50)
    amount = serializers.CharField(max_length=40, help_text="Credits, a decimal string.")
    direction = serializers.ChoiceField(choices=["allocate", "reclaim"], default="allocate")
    idempotency_key = serializers.CharField(max_length=200, required=False)
    memo = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


class AllocationApi(OrganizationAPIView):
    scope_map = {"POST": "credits:read"}

    @extend_schema(
        operation_id="credits_allocations_create",
        request=AllocationInput,
        responses={
            201: inline_serializer(
                "Allocation",
                {
                    "transaction": serializers.IntegerField(),
                    "kind": serializers.CharField(),
                    "team": serializers.CharField(),
                    "amount": Credits(),
                    "team_balance": Credits(),
                    "pool_balance": Credits(),
                    "idempotency_key": serializers.CharField(),
                },
            ),
            **error_responses(402, 409),
        },
        description="Allocate credits from the pool to a team, or reclaim them (`direction`). "
        "Allocating needs `credits:write` for the whole organization; reclaiming needs it or a "
        "team manager's `allocate_team_credits` right on the team. "
        "Idempotent by `idempotency_key` (or the `Idempotency-Key` header).",
    )
    def post(self, request):
        data = self.parse(AllocationInput)
        if data["direction"] == "allocate":
            self.principal.check_allocate()
        team = self.principal.team(data["team"])
        if data["direction"] == "reclaim":
            self.principal.check_reclaim(team)
        key = data.get("idempotency_key") or request.headers.get("Idempotency-Key")
        service = (
            services.credits_allocate
            if data["direction"] == "allocate"
            else services.credits_reclaim
        )
        txn = service(
            team=team,
            amount=data["amount"],
            idempotency_key=key,
            memo=data["memo"],
            actor=self.actor,
        )
        team_acc = services.team_account(team)
        pool = services.system_account(self.organization, LedgerAccount.Kind.POOL)
        return Response(
            {
                "transaction": txn.pk,
                "kind": txn.kind,
                "team": team.slug,
                "amount": str(sum(e.amount for e in txn.entries.filter(account=team_acc))),
                "team_balance": str(team_acc.balance),
                "pool_balance": str(pool.balance),
                "idempotency_key": txn.idempotency_key,
            },
            status=status.HTTP_201_CREATED,
        )


# Forecast ----------------------------------------------------------------------------------------


class RateOutput(serializers.Serializer):
    window = serializers.CharField(source="name", help_text="24h, 7d or 30d")
    spent = Credits(help_text="Credits spent in the trailing window.")
    hours = serializers.IntegerField(help_text="Hours of it with usage history (≤ the window).")
    per_hour = Credits()
    per_day = Credits()
    partial = serializers.BooleanField(help_text="The usage history is shorter than the window.")


class ProjectionOutput(serializers.Serializer):
    rate = serializers.CharField(source="rate.name", allow_null=True, default=None)
    reason = serializers.CharField()
    days = Credits(allow_null=True, help_text="How long the available credits last.")
    depletes_on = serializers.DateField(allow_null=True, help_text="In the organization's zone.")


class HourOutput(serializers.Serializer):
    hour = serializers.IntegerField(help_text="0-23 in the organization's time zone.")
    events = serializers.IntegerField()
    cost = Credits()


class AccountForecastOutput(serializers.Serializer):
    id = serializers.IntegerField(source="account.pk")
    kind = serializers.CharField(source="account.kind")
    team = serializers.CharField(source="account.team.slug", allow_null=True, default=None)
    available = Credits()
    rates = RateOutput(many=True)
    projection = ProjectionOutput()


class BudgetForecastOutput(serializers.Serializer):
    id = serializers.UUIDField(source="budget.public_id", help_text="The budget's public id.")
    scope = serializers.CharField(source="budget.scope")
    period = serializers.CharField(source="budget.period")
    mode = serializers.CharField(source="budget.mode")
    window_start = serializers.DateTimeField(help_text="UTC.")
    window_end = serializers.DateTimeField(allow_null=True, help_text="UTC; null: lifetime.")
    spent = Credits(help_text="Spent in the window so far.")
    held = Credits(help_text="Reserved by pending holds in the window.")
    limit = Credits()
    rate_per_hour = Credits(
        allow_null=True, help_text="Spent over the hours of the window passed (a tenth at least)."
    )
    projected = Credits(
        allow_null=True, help_text="spent + held + rate_per_hour x hours left: at the window end."
    )
    exceeds = serializers.BooleanField(help_text="projected > limit.")


class ForecastOutput(serializers.Serializer):
    generated_at = serializers.DateTimeField()
    time_zone = serializers.CharField()
    available = Credits(help_text="What the caller can draw on.")
    rates = RateOutput(many=True)
    projection = ProjectionOutput()
    hours = HourOutput(many=True)
    accounts = AccountForecastOutput(many=True)
    budgets = BudgetForecastOutput(many=True, help_text="The budgets the caller sees.")


class ForecastApi(OrganizationAPIView):
    scope_map = {"GET": "credits:read"}

    @extend_schema(
        operation_id="credits_forecast",
        responses={200: ForecastOutput},
        description="Run rates per hour and per day over the last 24 hours, 7 and 30 days, "
        "spend by hour of day (organization time zone), and the projected depletion date of "
        "what the caller can draw on and of each of those accounts, with the rate it uses and "
        "why (the 7-day rate unless the last 24 hours run at twice it or more); and for each "
        "budget the caller sees, its current window and the projected spend at the window's "
        "end: spent + held + (spent / hours passed, at least a tenth of the window) x hours "
        "left, and whether that exceeds the limit.",
    )
    def get(self, request):
        from .forecast import forecast_for

        data = ForecastOutput(forecast_for(self.principal)).data
        return Response(data)
