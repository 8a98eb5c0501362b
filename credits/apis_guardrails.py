"""OpenRouter-compatible `/api/v1/guardrails` (`client.guardrails.*` of the official SDKs):
guardrails, and their API key and member assignments (`credits.services.guardrails`).

Shapes: OpenRouter's API reference ("Guardrails"), with every field the SDKs' models require:
create answers 201 `{"data": guardrail}`, get and update `{"data": guardrail}`, delete
`{"deleted": true}`, lists `{"data": [...], "total_count": n}` with `offset` / `limit` paging,
bulk assign `{"assigned_count": n}`, bulk unassign `{"unassigned_count": n}`. `limit_usd` is a
JSON number. Keys are named by their hash, members by their user id (as
`GET /organization/members`); `workspace_id` is the organization's slug (as on keys).

Scopes: `keys:read` to read, `keys:write` to change. Creating, changing and deleting guardrails
and assigning members needs it for the whole organization (`Principal.check_guardrail_change`);
keys are assigned by whoever may see them (a team-bound key: its team's keys). Assignment lists
show only the keys and members the principal sees."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from accounts.models import Membership
from portal.api import OrganizationAPIView, StrictSerializer
from portal.errors import ValidationFailed

from . import selectors
from .models import Guardrail, GuardrailKeyAssignment, GuardrailMemberAssignment
from .services import guardrails as services


def Number(**kwargs):  # noqa: N802 - a field factory
    return serializers.DecimalField(
        max_digits=28, decimal_places=12, coerce_to_string=False, **kwargs
    )


def _strings(**kwargs):
    return serializers.ListField(
        child=serializers.CharField(min_length=1, max_length=200),
        min_length=1,
        max_length=1000,
        allow_null=True,
        required=False,
        **kwargs,
    )


def _flag():
    return serializers.BooleanField(allow_null=True, required=False)


def _objects():
    return serializers.ListField(
        child=serializers.DictField(), max_length=100, allow_null=True, required=False
    )


# Stored as sent, not enforced by the portal.
STORED = {
    "allowed_providers": _strings,
    "ignored_providers": _strings,
    "ignored_models": _strings,
    "allowed_data_regions": _strings,
    "content_filter_builtins": _objects,
    "content_filters": _objects,
    "enable_free_model_publication": _flag,
    "enable_free_model_training": _flag,
    "enable_paid_model_training": _flag,
    "enforce_zdr": _flag,
    "enforce_zdr_anthropic": _flag,
    "enforce_zdr_google": _flag,
    "enforce_zdr_openai": _flag,
    "enforce_zdr_other": _flag,
    "enforce_zdr_xai": _flag,
    "allow_safety_retention_google": _flag,
    "allow_safety_retention_other": _flag,
}


class GuardrailInput(StrictSerializer):
    name = serializers.CharField(min_length=1, max_length=200)
    description = serializers.CharField(
        max_length=1000, allow_null=True, allow_blank=True, required=False
    )
    limit_usd = Number(
        min_value=0, max_value=10**15, allow_null=True, required=False, help_text="USD per window."
    )
    reset_interval = serializers.ChoiceField(
        choices=Guardrail.Interval.choices,
        allow_null=True,
        required=False,
        help_text="UTC windows (weeks start on Monday); null: the limit is for all time.",
    )
    allowed_models = _strings(help_text="Model ids a request may name; null: any.")
    include_byok_in_budgets = serializers.BooleanField(required=False)
    workspace_id = serializers.CharField(
        max_length=100, required=False, help_text="Accepted and ignored: one workspace."
    )
    locals().update({name: make() for name, make in STORED.items()})

    def validate_include_byok_in_budgets(self, value):
        if not isinstance(self.initial_data.get("include_byok_in_budgets"), bool):
            raise serializers.ValidationError("Must be a JSON boolean.")
        return value


class GuardrailUpdateInput(GuardrailInput):
    name = serializers.CharField(min_length=1, max_length=200, required=False)


class GuardrailOutput(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    description = serializers.CharField(allow_null=True)
    limit_usd = Number(allow_null=True)
    reset_interval = serializers.CharField(allow_null=True)
    allowed_models = serializers.ListField(child=serializers.CharField(), allow_null=True)
    include_byok_in_budgets = serializers.BooleanField()
    workspace_id = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField(allow_null=True)
    locals().update(
        {
            name: (
                serializers.BooleanField(allow_null=True)
                if make is _flag
                else serializers.ListField(
                    child=serializers.DictField() if make is _objects else serializers.CharField(),
                    allow_null=True,
                )
            )
            for name, make in STORED.items()
        }
    )


def guardrail_document(guardrail: Guardrail) -> dict:
    document = {
        "id": guardrail.public_id,
        "name": guardrail.name,
        "description": guardrail.description,
        "limit_usd": guardrail.limit_usd,
        "reset_interval": guardrail.reset_interval,
        "allowed_models": guardrail.allowed_models,
        "include_byok_in_budgets": guardrail.include_byok_in_budgets,
        "workspace_id": guardrail.organization.slug,
        "created_at": guardrail.created_at,
        "updated_at": guardrail.updated_at,
    }
    document |= {name: guardrail.settings.get(name) for name in STORED}
    return GuardrailOutput(document).data


GuardrailEnvelope = inline_serializer("GuardrailEnvelope", {"data": GuardrailOutput()})
GuardrailList = inline_serializer(
    "GuardrailList",
    {"data": GuardrailOutput(many=True), "total_count": serializers.IntegerField()},
)
GuardrailDeleted = inline_serializer("GuardrailDeleted", {"deleted": serializers.BooleanField()})

KEY_ASSIGNMENT_FIELDS = {
    "id": serializers.UUIDField(),
    "guardrail_id": serializers.UUIDField(),
    "key_hash": serializers.CharField(),
    "key_name": serializers.CharField(),
    "key_label": serializers.CharField(),
    "assigned_by": serializers.CharField(allow_null=True),
    "created_at": serializers.DateTimeField(),
}
MEMBER_ASSIGNMENT_FIELDS = {
    "id": serializers.UUIDField(),
    "guardrail_id": serializers.UUIDField(),
    "user_id": serializers.CharField(),
    "organization_id": serializers.CharField(),
    "assigned_by": serializers.CharField(allow_null=True),
    "created_at": serializers.DateTimeField(),
}
KeyAssignmentList = inline_serializer(
    "GuardrailKeyAssignmentList",
    {
        "data": inline_serializer("GuardrailKeyAssignment", KEY_ASSIGNMENT_FIELDS, many=True),
        "total_count": serializers.IntegerField(),
    },
)
MemberAssignmentList = inline_serializer(
    "GuardrailMemberAssignmentList",
    {
        "data": inline_serializer("GuardrailMemberAssignment", MEMBER_ASSIGNMENT_FIELDS, many=True),
        "total_count": serializers.IntegerField(),
    },
)


class KeyHashesInput(StrictSerializer):
    key_hashes = serializers.ListField(
        child=serializers.CharField(min_length=1, max_length=64), min_length=1, max_length=1000
    )


class MemberIdsInput(StrictSerializer):
    member_user_ids = serializers.ListField(
        child=serializers.CharField(min_length=1, max_length=64), min_length=1, max_length=1000
    )


Assigned = inline_serializer("GuardrailAssigned", {"assigned_count": serializers.IntegerField()})
Unassigned = inline_serializer(
    "GuardrailUnassigned", {"unassigned_count": serializers.IntegerField()}
)


class PageParams(serializers.Serializer):
    offset = serializers.IntegerField(min_value=0, max_value=2_000_000_000, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=100, required=False)
    workspace_id = serializers.CharField(required=False)

    def to_internal_value(self, data):
        # An empty value (`?offset=`, how a client spells null) means the default.
        data = {k: v for k, v in data.items() if k in self.fields and v != ""}
        return super().to_internal_value(data)


PAGE_PARAMETERS = [
    OpenApiParameter("offset", int, description="Rows to skip; default 0."),
    OpenApiParameter("limit", int, description="At most 100; default 50."),
]


def _page(view, rows) -> tuple[list, int]:
    params = view.parse(PageParams, data=view.request.query_params)
    offset, limit = params.get("offset", 0), params.get("limit", 50)
    return list(rows[offset : offset + limit]), rows.count()


def _user_id(user_id) -> str | None:
    return None if user_id is None else str(user_id)


def key_assignment_document(a: GuardrailKeyAssignment) -> dict:
    return {
        "id": str(a.public_id),
        "guardrail_id": str(a.guardrail.public_id),
        "key_hash": a.api_key.hash,
        "key_name": a.api_key.name,
        "key_label": a.api_key.label,
        "assigned_by": _user_id(a.assigned_by_id),
        "created_at": serializers.DateTimeField().to_representation(a.created_at),
    }


def member_assignment_document(a: GuardrailMemberAssignment) -> dict:
    return {
        "id": str(a.public_id),
        "guardrail_id": str(a.guardrail.public_id),
        "user_id": str(a.member_id),
        "organization_id": a.organization.slug,
        "assigned_by": _user_id(a.assigned_by_id),
        "created_at": serializers.DateTimeField().to_representation(a.created_at),
    }


def _key_assignments(principal, guardrail=None):
    rows = GuardrailKeyAssignment.objects.filter(
        organization=principal.organization, api_key__in=principal.keys()
    ).select_related("guardrail", "api_key")
    if guardrail is not None:
        rows = rows.filter(guardrail=guardrail)
    return rows.order_by("pk")


def _member_assignments(principal, guardrail=None):
    rows = GuardrailMemberAssignment.objects.filter(
        organization=principal.organization
    ).select_related("guardrail", "organization")
    if guardrail is not None:
        rows = rows.filter(guardrail=guardrail)
    if not principal.has("members:read"):  # only itself (a member's session or key)
        rows = rows.filter(member_id=principal.user.pk if principal.user else None)
    return rows.order_by("pk")


def _stored_fields(data: dict) -> dict:
    data = dict(data)
    data.pop("workspace_id", None)
    return data


# Guardrails -------------------------------------------------------------------------------------


class GuardrailListApi(OrganizationAPIView):
    scope_map = {"GET": "keys:read", "POST": "keys:write"}

    @extend_schema(
        operation_id="guardrails_list",
        parameters=PAGE_PARAMETERS,
        responses={200: GuardrailList},
        description="The organization's guardrails, oldest first (OpenRouter's shape).",
    )
    def get(self, request):
        page, total = _page(self, selectors.guardrails_visible(self.principal).order_by("pk"))
        return Response({"data": [guardrail_document(g) for g in page], "total_count": total})

    @extend_schema(
        operation_id="guardrails_create",
        request=GuardrailInput,
        responses={201: GuardrailEnvelope},
        description="A guardrail; it limits nothing until keys or members are assigned.",
    )
    def post(self, request):
        data = self.parse(GuardrailInput)  # the input first, as every create
        self.principal.check_guardrail_change()
        guardrail = services.guardrail_create(
            organization=self.organization, fields=_stored_fields(data), actor=self.actor
        )
        return Response({"data": guardrail_document(guardrail)}, status=status.HTTP_201_CREATED)


class GuardrailDetailApi(OrganizationAPIView):
    scope_map = {"GET": "keys:read", "PATCH": "keys:write", "DELETE": "keys:write"}

    @extend_schema(operation_id="guardrails_get", responses={200: GuardrailEnvelope})
    def get(self, request, id):
        return Response(
            {"data": guardrail_document(selectors.guardrail_get(principal=self.principal, id=id))}
        )

    @extend_schema(
        operation_id="guardrails_update",
        request=GuardrailUpdateInput,
        responses={200: GuardrailEnvelope},
        description="Change the fields given; collections are replaced whole.",
    )
    def patch(self, request, id):
        guardrail = selectors.guardrail_get(principal=self.principal, id=id)
        self.principal.check_guardrail_change()
        data = self.parse(GuardrailUpdateInput)
        guardrail = services.guardrail_update(
            guardrail=guardrail, fields=_stored_fields(data), actor=self.actor
        )
        return Response({"data": guardrail_document(guardrail)})

    @extend_schema(operation_id="guardrails_delete", responses={200: GuardrailDeleted})
    def delete(self, request, id):
        guardrail = selectors.guardrail_get(principal=self.principal, id=id)
        self.principal.check_guardrail_change()
        services.guardrail_delete(guardrail=guardrail, actor=self.actor)
        return Response({"deleted": True})


# Assignments ------------------------------------------------------------------------------------


def _keys_named(principal, hashes: list[str], *, manage: bool) -> list:
    keys = list(principal.keys().filter(hash__in=set(hashes)))
    found = {k.hash for k in keys}
    missing = [str(i) for i, h in enumerate(hashes) if h not in found]
    if missing:  # positions, not the hashes: an error never quotes a key
        raise ValidationFailed(
            {"key_hashes": [f"No such API key in this organization: items {', '.join(missing)}."]}
        )
    if manage:
        for key in keys:
            principal.check_key_manage(key)
    return keys


def _members_named(organization, ids: list[str]) -> list:
    wanted = {i for i in ids if i.isdigit() and len(i) < 19}
    memberships = Membership.objects.filter(
        organization=organization, user_id__in=[int(i) for i in wanted]
    ).select_related("user")
    users = [m.user for m in memberships]
    found = {str(u.pk) for u in users}
    missing = [str(i) for i, m in enumerate(ids) if m not in found]
    if missing:
        raise ValidationFailed(
            {"member_user_ids": [f"Not a member of this organization: items {', '.join(missing)}."]}
        )
    return users


class GuardrailKeyAssignmentsApi(OrganizationAPIView):
    scope_map = {"GET": "keys:read", "POST": "keys:write"}

    @extend_schema(
        operation_id="guardrails_key_assignments",
        parameters=PAGE_PARAMETERS,
        responses={200: KeyAssignmentList},
        description="The keys under the guardrail that the caller sees.",
    )
    def get(self, request, id):
        guardrail = selectors.guardrail_get(principal=self.principal, id=id)
        page, total = _page(self, _key_assignments(self.principal, guardrail))
        return Response({"data": [key_assignment_document(a) for a in page], "total_count": total})

    @extend_schema(
        operation_id="guardrails_assign_keys",
        request=KeyHashesInput,
        responses={200: Assigned},
        description="Put keys under the guardrail (a key holds one: this replaces another's).",
    )
    def post(self, request, id):
        guardrail = selectors.guardrail_get(principal=self.principal, id=id)
        data = self.parse(KeyHashesInput)
        keys = _keys_named(self.principal, data["key_hashes"], manage=True)
        count = services.guardrail_assign_keys(guardrail=guardrail, keys=keys, actor=self.actor)
        return Response({"assigned_count": count})


class GuardrailKeyUnassignApi(OrganizationAPIView):
    scope_map = {"POST": "keys:write"}

    @extend_schema(
        operation_id="guardrails_unassign_keys",
        request=KeyHashesInput,
        responses={200: Unassigned},
    )
    def post(self, request, id):
        guardrail = selectors.guardrail_get(principal=self.principal, id=id)
        data = self.parse(KeyHashesInput)
        keys = _keys_named(self.principal, data["key_hashes"], manage=True)
        count = services.guardrail_unassign_keys(guardrail=guardrail, keys=keys, actor=self.actor)
        return Response({"unassigned_count": count})


class GuardrailMemberAssignmentsApi(OrganizationAPIView):
    scope_map = {"GET": "keys:read", "POST": "keys:write"}

    @extend_schema(
        operation_id="guardrails_member_assignments",
        parameters=PAGE_PARAMETERS,
        responses={200: MemberAssignmentList},
        description="The members under the guardrail (without `members:read`: only oneself).",
    )
    def get(self, request, id):
        guardrail = selectors.guardrail_get(principal=self.principal, id=id)
        page, total = _page(self, _member_assignments(self.principal, guardrail))
        return Response(
            {"data": [member_assignment_document(a) for a in page], "total_count": total}
        )

    @extend_schema(
        operation_id="guardrails_assign_members",
        request=MemberIdsInput,
        responses={200: Assigned},
        description="Put members (user ids) under the guardrail, replacing another's.",
    )
    def post(self, request, id):
        guardrail = selectors.guardrail_get(principal=self.principal, id=id)
        self.principal.check_guardrail_change()
        data = self.parse(MemberIdsInput)
        users = _members_named(self.organization, data["member_user_ids"])
        count = services.guardrail_assign_members(
            guardrail=guardrail, members=users, actor=self.actor
        )
        return Response({"assigned_count": count})


class GuardrailMemberUnassignApi(OrganizationAPIView):
    scope_map = {"POST": "keys:write"}

    @extend_schema(
        operation_id="guardrails_unassign_members",
        request=MemberIdsInput,
        responses={200: Unassigned},
    )
    def post(self, request, id):
        guardrail = selectors.guardrail_get(principal=self.principal, id=id)
        self.principal.check_guardrail_change()
        data = self.parse(MemberIdsInput)
        users = _members_named(self.organization, data["member_user_ids"])
        count = services.guardrail_unassign_members(
            guardrail=guardrail, members=users, actor=self.actor
        )
        return Response({"unassigned_count": count})


class KeyAssignmentsApi(OrganizationAPIView):
    scope_map = {"GET": "keys:read"}

    @extend_schema(
        operation_id="guardrails_all_key_assignments",
        parameters=PAGE_PARAMETERS,
        responses={200: KeyAssignmentList},
        description="Every guardrail's key assignments the caller sees.",
    )
    def get(self, request):
        page, total = _page(self, _key_assignments(self.principal))
        return Response({"data": [key_assignment_document(a) for a in page], "total_count": total})


class MemberAssignmentsApi(OrganizationAPIView):
    scope_map = {"GET": "keys:read"}

    @extend_schema(
        operation_id="guardrails_all_member_assignments",
        parameters=PAGE_PARAMETERS,
        responses={200: MemberAssignmentList},
        description="Every guardrail's member assignments (without `members:read`: oneself).",
    )
    def get(self, request):
        page, total = _page(self, _member_assignments(self.principal))
        return Response(
            {"data": [member_assignment_document(a) for a in page], "total_count": total}
        )
