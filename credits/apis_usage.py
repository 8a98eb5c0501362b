"""REST endpoints of metering: usage events (record, list), authorizations (hold, capture,
void) and the usage report. Keep these names: integrations rely on them."""

from __future__ import annotations

from datetime import timedelta

import django_filters
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.response import Response

from portal.api import (
    OrganizationAPIView,
    OrganizationListAPIView,
    StrictSerializer,
    UTCDateTimeFilter,
    decimals_as_strings,
    error_responses,
    serializer_shared,
)
from portal.errors import (
    ApplicationError,
    BudgetExceeded,
    IdempotencyConflict,
    InsufficientCredits,
    PayloadTooLarge,
    ValidationFailed,
    _drf_field_errors,
    error_body,
)
from portal.money import decimal_text, parse_credits
from portal.spreadsheet import csv_lines

from . import selectors, services
from .apis import Credits
from .metrics import usage_refused
from .models import UsageEvent
from .periods import window_end, window_start
from .services.refusals import authorization_refused_record
from .services.usage import Attribution, UsageInput

MAX_BATCH = 1000


# Usage -------------------------------------------------------------------------------------------


MAX_TOKENS = 2_000_000_000


class TokenCount(serializers.IntegerField):
    """A token count: a JSON integer (not 1.5, "100", true or null), 0 to 2,000,000,000."""

    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", 0)
        kwargs.setdefault("max_value", MAX_TOKENS)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            raise serializers.ValidationError("A whole number is required.")
        return super().to_internal_value(data)


class ReportedCost(serializers.DecimalField):
    """`usage.cost` as OpenRouter sends it (a JSON number of USD = credits): more decimals than
    the credit quantum (1e-12) are rounded to it instead of refused, so a forwarded usage object
    is never refused for a float's last digits. Parsed by `portal.money.parse_credits`, which
    refuses a negative cost before rounding (-4e-13 is not a cost of "-0")."""

    def __init__(self, **kwargs):
        super().__init__(max_digits=28, decimal_places=12, min_value=0, **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, float):  # a JSON number: its shortest decimal text
            data = str(data)
        elif isinstance(data, bool) or not isinstance(data, int | str):
            self.fail("invalid")
        try:
            return parse_credits(data, field="cost", allow_zero=True, round_to_quantum=True)
        except ValidationFailed as refused:
            raise serializers.ValidationError(refused.metadata["errors"]["cost"]) from None


class PromptTokensDetails(serializers.Serializer):
    """`usage.prompt_tokens_details`; its other counts (audio, cache writes, ...) are ignored."""

    cached_tokens = TokenCount(
        required=False,
        allow_null=True,
        help_text="Input tokens read from the prompt cache; part of `prompt_tokens`.",
    )


class CompletionTokensDetails(serializers.Serializer):
    """`usage.completion_tokens_details`; its other counts (audio, images, ...) are ignored."""

    reasoning_tokens = TokenCount(
        required=False,
        allow_null=True,
        help_text="Reasoning tokens; part of `completion_tokens`.",
    )


class ProviderUsage(serializers.Serializer):
    """The `usage` object of an OpenAI or OpenRouter response, forwarded unchanged. Keys not
    listed here (`total_tokens`, `is_byok`, `cost_details`, ...) are accepted and ignored."""

    prompt_tokens = TokenCount(help_text="All input tokens, cached ones included.")
    completion_tokens = TokenCount(
        required=False, help_text="All output tokens, reasoning ones included (default 0)."
    )
    prompt_tokens_details = PromptTokensDetails(required=False, allow_null=True)
    completion_tokens_details = CompletionTokensDetails(required=False, allow_null=True)
    cost = ReportedCost(
        required=False,
        allow_null=True,
        help_text="OpenRouter's cost of the request in credits (USD): charged as reported.",
    )


# The flat field each part of `usage` spells, and where it sits in `usage`.
_USAGE_PATHS = {
    "prompt_tokens": ("prompt_tokens",),
    "completion_tokens": ("completion_tokens",),
    "cached_tokens": ("prompt_tokens_details", "cached_tokens"),
    "reasoning_tokens": ("completion_tokens_details", "reasoning_tokens"),
    "cost": ("cost",),
}

_DETAIL_OF = {"cached_tokens": "prompt_tokens", "reasoning_tokens": "completion_tokens"}


class UsageEventInput(StrictSerializer):
    """One usage event. Token counts are the provider's: `prompt_tokens` includes
    `cached_tokens` and `completion_tokens` includes `reasoning_tokens`. Give them flat, or
    forward the provider's `usage` object whole (OpenRouter's `usage.cost` is then the cost);
    a count given both ways must be equal."""

    id = serializers.CharField(
        max_length=255, help_text="Unique per organization; retries reuse it."
    )
    model = serializers.CharField(max_length=200)
    operation = serializers.ChoiceField(choices=UsageEvent.Operation.choices, default="chat")
    prompt_tokens = TokenCount(default=0, help_text="All input tokens, cached ones included.")
    completion_tokens = TokenCount(
        default=0, help_text="All output tokens, reasoning ones included."
    )
    cached_tokens = TokenCount(default=0, help_text="Part of `prompt_tokens` read from cache.")
    reasoning_tokens = TokenCount(default=0, help_text="Part of `completion_tokens`.")
    images = TokenCount(max_value=100_000, default=0)
    cost = serializers.DecimalField(
        max_digits=28,
        decimal_places=12,
        min_value=0,
        required=False,
        allow_null=True,
        help_text="Upstream-reported cost in credits (OpenRouter's usage.cost), stored as given.",
    )
    usage = ProviderUsage(
        required=False,
        help_text="The provider's `usage` object (OpenAI, OpenRouter), instead of the flat "
        "counts and cost.",
    )
    occurred_at = serializers.DateTimeField(required=False, help_text="ISO 8601; default now.")
    conversation_id = serializers.CharField(
        max_length=255, required=False, default="", allow_blank=True
    )
    metadata = serializers.DictField(required=False, default=dict)

    def validate_occurred_at(self, value):
        if value > timezone.now() + timedelta(minutes=5):
            raise serializers.ValidationError("Must not be in the future.")
        return value

    def validate_metadata(self, value):
        if len(str(value)) > 8000:
            raise serializers.ValidationError("At most 8,000 characters.")
        return value

    def to_internal_value(self, data):
        self._raw = data if isinstance(data, dict) else {}  # `validate` tells given from default
        return super().to_internal_value(data)

    def validate(self, attrs):
        """Fold `usage` into the flat fields (refusing a count given both ways with two
        values), then check that each detail is within its total."""
        usage = attrs.pop("usage", None)
        raw = self._raw
        source = {field: field for field in _USAGE_PATHS}
        errors = {}
        for field, path in _USAGE_PATHS.items() if usage is not None else ():
            value = usage
            for part in path:
                value = (value or {}).get(part)
            if value is None:
                continue
            name = "usage." + ".".join(path)
            if raw.get(field) is not None and attrs.get(field) != value:
                errors[name] = [
                    f"Contradicts `{field}` ({attrs.get(field)}): give it once, or the same."
                ]
            attrs[field] = value
            source[field] = name
        for part, whole in _DETAIL_OF.items():
            if attrs.get(part, 0) > attrs.get(whole, 0):
                errors[source[part]] = [
                    f"{attrs[part]} exceeds `{source[whole]}` ({attrs.get(whole, 0)}), which "
                    "includes it."
                ]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs

    @classmethod
    def parse_many(cls, items: list) -> list[UsageInput | ValidationFailed]:
        """Each of `items` validated as one event (the same rules and errors), by this thread's
        instance (`serializer_shared`)."""
        one = serializer_shared(cls)
        parsed: list[UsageInput | ValidationFailed] = []
        for raw in items:
            try:
                parsed.append(UsageInput(**one.validated(raw)))
            except serializers.ValidationError as exc:
                parsed.append(ValidationFailed(_drf_field_errors(exc.detail)))
        return parsed

    def validated(self, raw) -> dict:
        """`run_validation(raw)`: by `_plain` when it can, else by DRF. Raises ValidationError."""
        plain = self._plain(raw)
        return plain if plain is not None else self.run_validation(raw)

    # The fields `_plain` takes: text, whole numbers, the operation, metadata and a time.
    _TEXT = ("id", "model", "conversation_id")
    _COUNTS = ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "images")
    _PLAIN = frozenset((*_TEXT, *_COUNTS, "operation", "metadata", "occurred_at"))

    def _plain(self, raw) -> dict | None:
        """`run_validation(raw)` for an event of plain values, without DRF's machinery per field
        (a third of a batch's time): text DRF keeps as it is (ASCII, no whitespace at either
        end, no NUL, within the field's `max_length`, not blank unless allowed), whole numbers
        within the field's bounds, one of the operation's choices, a metadata object (checked
        by `validate_metadata`), a time (parsed by its field); then `validate`. The limits are
        the fields' own. None for anything else (a `usage` object, a `cost`, other types, an
        invalid value): DRF then decides and words the errors. The same result as DRF's
        (tests/credits/test_usage_input.py compares them on generated events)."""
        if type(raw) is not dict or not raw.keys() <= self._PLAIN:
            return None
        fields = self.fields
        data: dict = {}
        for name in self._TEXT:
            field = fields[name]
            value = raw.get(name, "" if field.allow_blank else None)
            if (
                type(value) is not str
                or len(value) > field.max_length
                or not value.isascii()
                or "\x00" in value
                or value.strip() != value
                or not (value or field.allow_blank)
            ):
                return None
            data[name] = value
        for name in self._COUNTS:
            value = raw.get(name, 0)
            if type(value) is not int or not 0 <= value <= fields[name].max_value:
                return None
            data[name] = value
        operation = raw.get("operation", fields["operation"].default)
        if type(operation) is not str or operation not in fields["operation"].choices:
            return None
        data["operation"] = operation
        try:
            metadata = raw.get("metadata")
            if metadata is None:
                metadata = {} if "metadata" not in raw else None
            if type(metadata) is not dict:
                return None
            data["metadata"] = self.validate_metadata(dict(metadata))
            if "occurred_at" in raw:
                at = fields["occurred_at"].run_validation(raw["occurred_at"])
                data["occurred_at"] = self.validate_occurred_at(at)
            self._raw = raw
            return self.validate(data)
        except serializers.ValidationError:
            return None


class UsageEventOutput(serializers.Serializer):
    id = serializers.CharField(source="event_id")
    model = serializers.CharField()
    operation = serializers.CharField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    cached_tokens = serializers.IntegerField()
    reasoning_tokens = serializers.IntegerField()
    images = serializers.IntegerField()
    cost = Credits()
    cost_source = serializers.CharField()
    team = serializers.CharField(source="team.slug", allow_null=True, default=None)
    member = serializers.CharField(source="member.email", allow_null=True, default=None)
    key = serializers.CharField(source="api_key.label", allow_null=True, default=None)
    conversation_id = serializers.CharField()
    metadata = serializers.DictField()
    occurred_at = serializers.DateTimeField()
    recorded_at = serializers.DateTimeField()

    def to_representation(self, instance):
        """Members and keys the principal (`context["principal"]`) may not identify show as
        the report's "(other members)" and "(other keys)"."""
        data = super().to_representation(instance)
        principal = self.context.get("principal")
        if principal is not None:
            if data["member"] is not None and not principal.sees_member(instance.member_id):
                data["member"] = selectors.OTHERS["member"]
            if data["key"] is not None and not principal.sees_key(instance.api_key):
                data["key"] = selectors.OTHERS["key"]
        return data


UsageRecorded = inline_serializer(
    "UsageRecorded",
    {
        "event": UsageEventOutput(),
        "cost": Credits(),
        "balance_after": Credits(help_text="Available credits of the account paid from, after."),
    },
)
UsageBatchInput = inline_serializer(
    "UsageBatchInput",
    {
        "events": UsageEventInput(many=True, help_text=f"At most {MAX_BATCH}."),
    },
)
UsageBatchResult = inline_serializer(
    "UsageBatchResult",
    {
        "results": serializers.ListField(
            child=serializers.DictField(),
            help_text=(
                "Per event, in order: {id, status (201 recorded, 200 retry, 4xx), cost, "
                "balance_after} or {id, status, error}."
            ),
        ),
        "accepted": serializers.IntegerField(),
        "refused": serializers.IntegerField(),
    },
)


def _taken_by_others(principal, outcomes) -> set[int]:
    """The events among retried `outcomes` that `principal` may not see: ids that another
    team's or member's request took (one query)."""
    retried = {o.event.pk for o in outcomes if not o.created}
    if not retried:
        return set()
    visible = selectors.usage_visible(principal).filter(pk__in=retried).values_list("pk", flat=True)
    return retried - set(visible)


def _taken(event) -> IdempotencyConflict:
    return IdempotencyConflict(
        f"Usage event '{event.event_id}' was recorded by another request.", event_id=event.event_id
    )


def recorded_response(result, principal) -> Response:
    """201 for a newly recorded event, 200 with the first result for a retry. The first result
    of another's request it may not see is not shown: the id is taken (409)."""
    if _taken_by_others(principal, [result]):
        raise _taken(result.event)
    return Response(
        {
            "event": serializer_shared(
                UsageEventOutput, {"principal": principal}
            ).to_representation(result.event),
            "cost": decimal_text(result.event.cost),
            "balance_after": decimal_text(result.balance_after),
        },
        status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
    )


class UsageFilter(django_filters.FilterSet):
    since = UTCDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    until = UTCDateTimeFilter(field_name="occurred_at", lookup_expr="lt")
    team = django_filters.CharFilter(field_name="team__slug")
    member = django_filters.CharFilter(field_name="member__email")
    key = django_filters.CharFilter(field_name="api_key__hash", label="key hash")
    model = django_filters.CharFilter()
    operation = django_filters.ChoiceFilter(choices=UsageEvent.Operation.choices)
    conversation = django_filters.CharFilter(field_name="conversation_id")

    class Meta:
        model = UsageEvent
        fields = ["model", "operation"]


def _error_of(exc) -> dict:
    return error_body(exc.status_code, exc.message, exc.type, **exc.metadata)["error"]


class UsageApi(OrganizationListAPIView):
    scope_map = {"GET": "usage:read", "POST": "usage:write"}
    model = UsageEvent
    filterset_class = UsageFilter

    def selector(self, organization):
        return selectors.usage_visible(self.principal)

    @extend_schema(operation_id="credits_usage_list", responses={200: UsageEventOutput(many=True)})
    def get(self, request):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        context = {"principal": self.principal}
        return self.get_paginated_response(UsageEventOutput(page, many=True, context=context).data)

    @extend_schema(
        operation_id="credits_usage_record",
        request=PolymorphicProxySerializer(
            component_name="UsageRecordInput",
            serializers=[UsageEventInput, UsageBatchInput],
            resource_type_field_name=None,
        ),
        responses={
            201: UsageRecorded,
            200: UsageRecorded,
            207: UsageBatchResult,
            **error_responses(402, 409),
        },
        description='Record one usage event, or `{"events": [...]}` (at most 1,000). One '
        "event answers 201 (recorded), 200 (a retry of the same id: the first result), 409 "
        "(same id, other body), 402 (insufficient credits or key limit; nothing recorded). A "
        "batch answers 207 with a result per event.",
    )
    def post(self, request):
        body = request.data
        attribution = Attribution.of_principal(self.principal)
        if isinstance(body, dict) and "events" in body:
            return self._batch(body, attribution)
        try:
            event = UsageInput(**serializer_shared(UsageEventInput).validated(body))
        except serializers.ValidationError:
            usage_refused(ValidationFailed.type)  # the service counts its own refusals
            raise
        result = services.usage_record(attribution=attribution, event=event)
        return recorded_response(result, self.principal)

    def _batch(self, body: dict, attribution: Attribution) -> Response:
        events = body["events"]
        if set(body) != {"events"} or not isinstance(events, list):
            raise ValidationFailed({"events": ['Send {"events": [...]} and nothing else.']})
        if len(events) > MAX_BATCH:
            raise PayloadTooLarge(
                f"At most {MAX_BATCH} events per batch; got {len(events)}.", limit=MAX_BATCH
            )
        outcomes: list = [None] * len(events)
        valid: list[tuple[int, UsageInput]] = []
        for index, parsed in enumerate(UsageEventInput.parse_many(events)):
            if isinstance(parsed, ValidationFailed):
                outcomes[index] = parsed
                usage_refused(parsed)
            else:
                valid.append((index, parsed))
        recorded = services.usage_record_many(
            attribution=attribution, events=[event for _, event in valid]
        )
        taken = _taken_by_others(
            self.principal, [o for o in recorded if not isinstance(o, ApplicationError)]
        )
        for (index, _), outcome in zip(valid, recorded, strict=True):
            if not isinstance(outcome, ApplicationError) and outcome.event.pk in taken:
                outcome = _taken(outcome.event)
            outcomes[index] = outcome
        results = []
        for raw, outcome in zip(events, outcomes, strict=True):
            event_id = raw.get("id") if isinstance(raw, dict) else None
            if isinstance(outcome, ApplicationError):
                results.append(
                    {"id": event_id, "status": outcome.status_code, "error": _error_of(outcome)}
                )
            else:
                results.append(
                    {
                        "id": event_id,
                        "status": 201 if outcome.created else 200,
                        "cost": decimal_text(outcome.event.cost),
                        "balance_after": decimal_text(outcome.balance_after),
                    }
                )
        accepted = sum(1 for r in results if r["status"] in (200, 201))
        return Response(
            {"results": results, "accepted": accepted, "refused": len(results) - accepted},
            status=207,
        )


# Authorizations ----------------------------------------------------------------------------------


class AuthorizationInput(StrictSerializer):
    id = serializers.CharField(max_length=255, help_text="Idempotency key of the hold.")
    amount = serializers.DecimalField(
        max_digits=28, decimal_places=12, min_value=0, required=False, help_text="Credits to hold."
    )
    model = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)
    prompt_tokens = serializers.IntegerField(min_value=0, max_value=2_000_000_000, default=0)
    max_tokens = serializers.IntegerField(min_value=0, max_value=2_000_000_000, default=0)
    timeout_seconds = serializers.IntegerField(min_value=1, max_value=86400, default=600)


class AuthorizationOutput(serializers.Serializer):
    id = serializers.UUIDField(source="public_id", help_text="The hold's public id.")
    idempotency_key = serializers.CharField(help_text="The client's `id`; addresses it too.")
    status = serializers.CharField()
    amount = Credits()
    captured_amount = Credits(allow_null=True)
    model = serializers.CharField()
    expires_at = serializers.DateTimeField()
    created_at = serializers.DateTimeField()


class AuthorizationCreateApi(OrganizationAPIView):
    scope_map = {"POST": "usage:write"}

    @extend_schema(
        operation_id="credits_authorizations_create",
        request=AuthorizationInput,
        responses={201: AuthorizationOutput, 200: AuthorizationOutput, **error_responses(402, 409)},
        description="Hold the worst case of a request: an `amount`, or a `model` "
        "with `prompt_tokens` and `max_tokens`. 402 when it cannot be covered.",
    )
    def post(self, request):
        data = self.parse(AuthorizationInput)
        try:
            hold, created = services.authorization_create(
                attribution=Attribution.of_principal(self.principal),
                id=data["id"],
                amount=data.get("amount"),
                model=data["model"],
                prompt_tokens=data["prompt_tokens"],
                max_tokens=data["max_tokens"],
                timeout=timedelta(seconds=data["timeout_seconds"]),
            )
        except (InsufficientCredits, BudgetExceeded) as refused:
            # The refusal wrote nothing; the notice is its own (once per key/hour).
            authorization_refused_record(
                organization=self.organization, api_key=self.principal.key, error=refused
            )
            raise
        return Response(
            AuthorizationOutput(hold).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class CaptureInput(UsageEventInput):
    id = serializers.CharField(
        max_length=255, required=False, help_text="Usage event id; default `authorization-<id>`."
    )
    model = serializers.CharField(max_length=200, required=False)


class AuthorizationCaptureApi(OrganizationAPIView):
    scope_map = {"POST": "usage:write"}

    @extend_schema(
        operation_id="credits_authorizations_capture",
        request=CaptureInput,
        responses={201: UsageRecorded, 200: UsageRecorded, **error_responses(402, 409)},
        description="Capture with the actual usage: records the usage event, posts "
        "its cost and releases the rest of the hold.",
    )
    def post(self, request, id: str):
        hold = selectors.hold_get(principal=self.principal, id=id)
        serializer = CaptureInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        data.setdefault("id", f"authorization-{hold.public_id}")
        data.setdefault("model", hold.model)
        if not data["model"]:
            raise ValidationFailed({"model": ["Required (the authorization named none)."]})
        result = services.authorization_capture(hold=hold, event=UsageInput(**data))
        return recorded_response(result, self.principal)


class AuthorizationVoidApi(OrganizationAPIView):
    scope_map = {"POST": "usage:write"}

    @extend_schema(
        operation_id="credits_authorizations_void",
        request=None,
        responses={200: AuthorizationOutput, **error_responses(409)},
    )
    def post(self, request, id: str):
        hold = selectors.hold_get(principal=self.principal, id=id)
        return Response(AuthorizationOutput(services.hold_void(hold=hold)).data)


# Report ------------------------------------------------------------------------------------------


class ReportParams(serializers.Serializer):
    period = serializers.ChoiceField(choices=["daily", "weekly", "monthly"], default="daily")
    format = serializers.ChoiceField(choices=["json", "csv"], default="json")
    start = serializers.DateTimeField(required=False)
    end = serializers.DateTimeField(required=False)
    breakdowns = serializers.CharField(required=False)

    def validate_breakdowns(self, value: str) -> list[str]:
        names = [n.strip() for n in value.split(",") if n.strip()]
        unknown = [n for n in names if n not in selectors.REPORT_DIMENSIONS]
        if unknown:
            raise serializers.ValidationError(
                f"Unknown breakdown {', '.join(unknown)}; choose among "
                f"{', '.join(selectors.REPORT_DIMENSIONS)}."
            )
        return list(dict.fromkeys(names))


class ReportApi(OrganizationAPIView):
    scope_map = {"GET": "usage:read"}

    @extend_schema(
        operation_id="credits_report",
        parameters=[
            OpenApiParameter("period", str, enum=["daily", "weekly", "monthly"]),
            OpenApiParameter("format", str, enum=["json", "csv"]),
            OpenApiParameter("start", str, description="ISO 8601; default: the period's start"),
            OpenApiParameter("end", str, description="ISO 8601, exclusive; default: its end"),
            OpenApiParameter(
                "breakdowns",
                str,
                description="Comma-separated among operation, team, member, model, key and "
                "conversation; default: all but conversation, which reads the raw events of "
                "the range (slow over millions of events), so it is made only when named.",
            ),
        ],
        responses={
            (200, "text/csv"): OpenApiResponse(str, description="with format=csv"),
            (200, "application/json"): OpenApiResponse(
                inline_serializer(
                    "UsageReport",
                    {
                        "period": serializers.CharField(),
                        "start": serializers.DateTimeField(),
                        "end": serializers.DateTimeField(),
                        "totals": serializers.DictField(),
                        "series": serializers.ListField(child=serializers.DictField()),
                        "breakdowns": serializers.DictField(),
                    },
                ),
                description="JSON, or CSV (one row per breakdown entry) with format=csv",
            ),
        },
    )
    def get(self, request):
        params = self.parse(ReportParams, data=request.query_params)
        now = timezone.now()
        start = params.get("start") or window_start(params["period"], now)
        end = params.get("end") or window_end(params["period"], now)
        if end <= start:
            raise ValidationFailed({"end": ["Must be after start."]})
        report = selectors.usage_report(
            principal=self.principal, period=params["period"], start=start, end=end,
            dimensions=params.get("breakdowns", selectors.REPORT_DEFAULT_DIMENSIONS),
        )  # fmt: skip
        if params["format"] == "csv":
            return _report_csv(report)
        return Response(decimals_as_strings(report))


def _report_csv(report: dict) -> HttpResponse:
    columns = [
        "events",
        "cost",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "reasoning_tokens",
    ]
    rows = [["total", "", *[report["totals"][c] for c in columns]]]
    for row in report["series"]:
        rows.append([report["period"], row["start"].isoformat(), *[row[c] for c in columns]])
    for dimension, breakdown in report["breakdowns"].items():
        for row in breakdown:
            rows.append([dimension, row["key"] or "", *[row[c] for c in columns]])
    body = "".join(csv_lines(["dimension", "key", *columns], rows))
    response = HttpResponse(body, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="usage-{report["period"]}-{report["start"]:%Y%m%d}.csv"'
    )
    return response
