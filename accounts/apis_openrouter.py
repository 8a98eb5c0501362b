"""OpenRouter-compatible `GET /organization/members` (`client.organization.list_members()` in the
Python SDK, `listMembers` in the TypeScript one): the organization's members in OpenRouter's
shape, with every field both SDKs require.

A member's `id` is its user id (a string), as `creator_user_id` on keys and `user_id` of
`GET /activity`. OpenRouter knows two roles: owners and admins are `org:admin`, every other role
`org:member`."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from portal.api import OrganizationAPIView

from . import selectors
from .roles import Role

OPENROUTER_ADMIN_ROLES = frozenset({Role.OWNER, Role.ADMIN})

MEMBER_FIELDS = {
    "id": serializers.CharField(help_text="The member's user id."),
    "email": serializers.CharField(),
    "first_name": serializers.CharField(allow_null=True),
    "last_name": serializers.CharField(allow_null=True),
    "role": serializers.ChoiceField(choices=["org:admin", "org:member"]),
}
MembersOutput = inline_serializer(
    "OpenRouterMembers",
    {
        "data": inline_serializer("OpenRouterMember", MEMBER_FIELDS, many=True),
        "total_count": serializers.IntegerField(),
    },
)


class MembersParams(serializers.Serializer):
    offset = serializers.IntegerField(min_value=0, max_value=2_000_000_000, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=100, required=False)

    def to_internal_value(self, data):
        # An empty value (`?offset=`, how a client spells null) means the default.
        data = {k: v for k, v in data.items() if k in self.fields and v != ""}
        return super().to_internal_value(data)


def member_document(membership) -> dict:
    user = membership.user
    return {
        "id": str(user.pk),
        "email": user.email,
        "first_name": user.first_name or None,
        "last_name": user.last_name or None,
        "role": "org:admin" if membership.role in OPENROUTER_ADMIN_ROLES else "org:member",
    }


class OrganizationMembersApi(OrganizationAPIView):
    scope_map = {"GET": "members:read"}

    @extend_schema(
        operation_id="openrouter_organization_members",
        parameters=[
            OpenApiParameter("offset", int, description="Members to skip; default 0."),
            OpenApiParameter("limit", int, description="At most 100; default 50."),
        ],
        responses={200: MembersOutput},
        description="The organization's members, oldest first, in OpenRouter's shape.",
    )
    def get(self, request):
        params = self.parse(MembersParams, data=request.query_params)
        offset, limit = params.get("offset", 0), params.get("limit", 50)
        members = selectors.membership_list(organization=self.organization).order_by("pk")
        page = list(members[offset : offset + limit])
        return Response(
            {"data": [member_document(m) for m in page], "total_count": members.count()}
        )
