"""REST endpoints of the accounts app: organization, teams, members, invitations, audit events.
The OpenRouter-compatible key endpoints are in `credits.apis_keys` (a key's usage and limit
figures are credits')."""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from portal.api import (
    OrganizationAPIView,
    OrganizationListAPIView,
    StrictSerializer,
    UTCDateTimeFilter,
    error_responses,
)
from portal.errors import NotFound

from . import selectors, services
from .models import AuditEvent, Invitation, Membership, Team
from .roles import Role, TeamRole

# Organization ------------------------------------------------------------------------------------


class OrganizationOutput(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    currency = serializers.CharField()
    time_zone = serializers.CharField(help_text="IANA time zone; days of budgets and statements.")
    billing_email = serializers.EmailField(allow_blank=True)
    billing_address = serializers.CharField(allow_blank=True)
    tax_id = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()


class OrganizationUpdateInput(StrictSerializer):
    name = serializers.CharField(required=False, max_length=200)
    billing_email = serializers.EmailField(required=False, allow_blank=True)
    billing_address = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    tax_id = serializers.CharField(required=False, allow_blank=True, max_length=64)
    currency = serializers.ChoiceField(choices=services.CURRENCIES, required=False)
    time_zone = serializers.CharField(
        required=False, max_length=64, help_text="IANA time zone, e.g. 'Europe/Berlin'."
    )


class OrganizationApi(OrganizationAPIView):
    scope_map = {"GET": "org:read", "PATCH": "org:write"}

    @extend_schema(operation_id="organization_get", responses={200: OrganizationOutput})
    def get(self, request):
        return Response(OrganizationOutput(self.organization).data)

    @extend_schema(
        operation_id="organization_update",
        request=OrganizationUpdateInput,
        responses={200: OrganizationOutput},
    )
    def patch(self, request):
        data = self.parse(OrganizationUpdateInput)
        org = services.organization_update(organization=self.organization, actor=self.actor, **data)
        return Response(OrganizationOutput(org).data)


# Teams -------------------------------------------------------------------------------------------


class TeamOutput(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    funding = serializers.ChoiceField(choices=Team.Funding.choices)
    created_at = serializers.DateTimeField()


class TeamCreateInput(StrictSerializer):
    slug = serializers.CharField(max_length=50)
    name = serializers.CharField(max_length=200)
    funding = serializers.ChoiceField(choices=Team.Funding.choices, default=Team.Funding.ALLOCATION)


class TeamUpdateInput(StrictSerializer):
    name = serializers.CharField(max_length=200, required=False)
    funding = serializers.ChoiceField(choices=Team.Funding.choices, required=False)


class TeamListApi(OrganizationListAPIView):
    scope_map = {"GET": "members:read", "POST": "members:write"}
    model = Team

    def selector(self, organization):
        return self.principal.teams()

    @extend_schema(operation_id="teams_list", responses={200: TeamOutput(many=True)})
    def get(self, request):
        return self.list_response(TeamOutput)

    @extend_schema(
        operation_id="teams_create",
        request=TeamCreateInput,
        responses={201: TeamOutput, **error_responses(409)},
    )
    def post(self, request):
        team = services.team_create(
            organization=self.organization, actor=self.actor, **self.parse(TeamCreateInput)
        )
        return Response(TeamOutput(team).data, status=status.HTTP_201_CREATED)


class TeamDetailApi(OrganizationAPIView):
    scope_map = {"GET": "members:read", "PATCH": "members:write"}

    @extend_schema(operation_id="teams_get", responses={200: TeamOutput})
    def get(self, request, slug: str):
        return Response(TeamOutput(self.principal.team(slug)).data)

    @extend_schema(
        operation_id="teams_update", request=TeamUpdateInput, responses={200: TeamOutput}
    )
    def patch(self, request, slug: str):
        team = self.principal.team(slug)
        data = self.parse(TeamUpdateInput)
        return Response(TeamOutput(services.team_update(team=team, actor=self.actor, **data)).data)


class TeamMemberInput(StrictSerializer):
    email = serializers.EmailField()
    role = serializers.ChoiceField(choices=TeamRole.choices, default=TeamRole.MEMBER)


class TeamMemberOutput(serializers.Serializer):
    email = serializers.EmailField(source="user.email")
    role = serializers.ChoiceField(choices=TeamRole.choices)


def _manages_team(principal, slug: str, **kwargs) -> bool:
    """Delegation (`HasScope`): a team's manager may manage its members without members:write."""
    return any(t.slug == slug for t in principal.teams().filter(pk__in=principal.managed_team_ids))


class TeamMembersApi(OrganizationAPIView):
    scope_map = {"POST": "members:write"}
    delegated = staticmethod(_manages_team)

    @extend_schema(
        operation_id="teams_members_set", request=TeamMemberInput, responses={200: TeamMemberOutput}
    )
    def post(self, request, slug: str):
        team = self.principal.team(slug)
        data = self.parse(TeamMemberInput)
        self.principal.check_team_members(team, role=data["role"])
        user = selectors.member_by_email(organization=self.organization, email=data["email"])
        tm = services.team_member_set(team=team, user=user, role=data["role"], actor=self.actor)
        return Response(TeamMemberOutput(tm).data)


class TeamMemberDetailApi(OrganizationAPIView):
    scope_map = {"DELETE": "members:write"}
    delegated = staticmethod(_manages_team)

    @extend_schema(operation_id="teams_members_remove", responses={204: None})
    def delete(self, request, slug: str, pk: int):
        """Take a member (by membership id, as in /members/{id}) off the team; a manager loses
        the team's object permissions with it."""
        team = self.principal.team(slug)
        self.principal.check_team_members(team)
        membership = selectors.membership_list(organization=self.organization).filter(pk=pk).first()
        if membership is None:
            raise NotFound("No such member in this organization.", resource="member")
        services.team_member_remove(team=team, user=membership.user, actor=self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


# Members -----------------------------------------------------------------------------------------


class MemberOutput(serializers.Serializer):
    id = serializers.IntegerField()
    email = serializers.EmailField(source="user.email")
    name = serializers.CharField(source="user.get_full_name")
    role = serializers.ChoiceField(choices=Role.choices)
    created_at = serializers.DateTimeField()


class MemberUpdateInput(StrictSerializer):
    role = serializers.ChoiceField(choices=Role.choices)


class MemberFilter(django_filters.FilterSet):
    role = django_filters.ChoiceFilter(choices=Role.choices)

    class Meta:
        model = Membership
        fields = ["role"]


class MemberListApi(OrganizationListAPIView):
    scope_map = {"GET": "members:read"}
    filterset_class = MemberFilter
    model = Membership

    def selector(self, organization):
        return selectors.membership_list(organization=organization)

    @extend_schema(operation_id="members_list", responses={200: MemberOutput(many=True)})
    def get(self, request):
        return self.list_response(MemberOutput)


class MemberDetailApi(OrganizationAPIView):
    scope_map = {"GET": "members:read", "PATCH": "members:write", "DELETE": "members:write"}

    def _get(self, pk: int) -> Membership:
        membership = selectors.membership_list(organization=self.organization).filter(pk=pk).first()
        if membership is None:
            raise NotFound("No such member in this organization.", resource="member")
        return membership

    @extend_schema(operation_id="members_get", responses={200: MemberOutput})
    def get(self, request, pk: int):
        return Response(MemberOutput(self._get(pk)).data)

    @extend_schema(
        operation_id="members_update",
        request=MemberUpdateInput,
        responses={200: MemberOutput, **error_responses(409)},
    )
    def patch(self, request, pk: int):
        membership = self._get(pk)
        data = self.parse(MemberUpdateInput)
        self.principal.check_role_change(membership, data["role"])
        membership = services.membership_role_set(
            membership=membership, role=data["role"], actor=self.actor
        )
        return Response(MemberOutput(membership).data)

    @extend_schema(operation_id="members_remove", responses={204: None, **error_responses(409)})
    def delete(self, request, pk: int):
        membership = self._get(pk)
        self.principal.check_role_change(membership, None)
        services.membership_remove(membership=membership, actor=self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


# Invitations -------------------------------------------------------------------------------------


class InvitationOutput(serializers.Serializer):
    id = serializers.IntegerField()
    email = serializers.EmailField()
    role = serializers.ChoiceField(choices=Role.choices)
    team = serializers.CharField(source="team.slug", allow_null=True, default=None)
    team_role = serializers.ChoiceField(choices=TeamRole.choices)
    status = serializers.ChoiceField(choices=["pending", "accepted", "revoked", "expired"])
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()


class InvitationCreateInput(StrictSerializer):
    email = serializers.EmailField()
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)
    team = serializers.CharField(required=False, max_length=50)
    team_role = serializers.ChoiceField(choices=TeamRole.choices, default=TeamRole.MEMBER)


class InvitationListApi(OrganizationListAPIView):
    scope_map = {"GET": "members:read", "POST": "members:write"}
    throttle_scope = "invitations"
    model = Invitation

    def get_throttles(self):
        return super().get_throttles() if self.request.method == "POST" else []

    def selector(self, organization):
        return selectors.invitation_list(organization=organization)

    @extend_schema(operation_id="invitations_list", responses={200: InvitationOutput(many=True)})
    def get(self, request):
        return self.list_response(InvitationOutput)

    @extend_schema(
        operation_id="invitations_create",
        request=InvitationCreateInput,
        responses={201: InvitationOutput, **error_responses(409)},
    )
    def post(self, request):
        data = self.parse(InvitationCreateInput)
        self.principal.check_invite(data["role"])
        if "team" in data:
            data["team"] = self.principal.team(data["team"])
        invitation, _token = services.invitation_create(
            organization=self.organization, actor=self.actor, **data
        )
        return Response(InvitationOutput(invitation).data, status=status.HTTP_201_CREATED)


class InvitationDetailApi(OrganizationAPIView):
    scope_map = {"GET": "members:read", "DELETE": "members:write"}

    def _get(self, pk: int) -> Invitation:
        invitation = selectors.invitation_list(organization=self.organization).filter(pk=pk).first()
        if invitation is None:
            raise NotFound("No such invitation in this organization.", resource="invitation")
        return invitation

    @extend_schema(operation_id="invitations_get", responses={200: InvitationOutput})
    def get(self, request, pk: int):
        return Response(InvitationOutput(self._get(pk)).data)

    @extend_schema(
        operation_id="invitations_revoke", responses={200: InvitationOutput, **error_responses(409)}
    )
    def delete(self, request, pk: int):
        invitation = services.invitation_revoke(invitation=self._get(pk), actor=self.actor)
        return Response(InvitationOutput(invitation).data)


class InvitationResendApi(OrganizationAPIView):
    scope_map = {"POST": "members:write"}
    throttle_scope = "invitations"

    @extend_schema(
        operation_id="invitations_resend",
        request=None,
        responses={200: InvitationOutput, **error_responses(409)},
    )
    def post(self, request, pk: int):
        """Send a pending invitation's e-mail again (the same link and expiry)."""
        invitation = selectors.invitation_list(organization=self.organization).filter(pk=pk).first()
        if invitation is None:
            raise NotFound("No such invitation in this organization.", resource="invitation")
        invitation = services.invitation_resend(invitation=invitation, actor=self.actor)
        return Response(InvitationOutput(invitation).data)


# Audit -------------------------------------------------------------------------------------------


class AuditEventOutput(serializers.Serializer):
    id = serializers.IntegerField()
    sequence = serializers.IntegerField()
    action = serializers.CharField()
    actor = serializers.CharField(source="actor_label")
    target_type = serializers.CharField()
    target_id = serializers.CharField()
    target_label = serializers.CharField()
    before = serializers.JSONField(allow_null=True)
    after = serializers.JSONField(allow_null=True)
    ip_address = serializers.IPAddressField(allow_null=True)
    user_agent = serializers.CharField()
    created_at = serializers.DateTimeField()
    hash = serializers.CharField()
    prev_hash = serializers.CharField()


class AuditEventFilter(django_filters.FilterSet):
    action = django_filters.CharFilter()
    target_type = django_filters.CharFilter()
    since = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = ["action", "target_type"]


class AuditEventListApi(OrganizationListAPIView):
    scope_map = {"GET": "audit:read"}
    filterset_class = AuditEventFilter
    model = AuditEvent

    def selector(self, organization):
        return selectors.audit_event_list(organization=organization)

    @extend_schema(operation_id="audit_events_list", responses={200: AuditEventOutput(many=True)})
    def get(self, request):
        return self.list_response(AuditEventOutput)
