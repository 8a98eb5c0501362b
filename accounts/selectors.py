"""Reads of the accounts app, each scoped to one organization. Which rows of it a member or key
may see is decided by `accounts.access.Principal` (teams, keys, usage rows)."""

from __future__ import annotations

from django.db.models import QuerySet

from portal.errors import NotFound

from .models import AuditEvent, Invitation, Membership, Organization, Team, User


def membership_get(*, organization: Organization, user: User | None) -> Membership | None:
    if user is None or not user.is_authenticated:
        return None
    return Membership.objects.filter(organization=organization, user=user).first()


def organizations_for_user(*, user: User) -> QuerySet[Organization]:
    return Organization.objects.filter(memberships__user=user).order_by("name")


def team_list(*, organization: Organization) -> QuerySet[Team]:
    return Team.objects.filter(organization=organization)


def team_get(*, organization: Organization, slug: str) -> Team:
    """Raises NotFound (404) for an unknown slug or another organization's team."""
    team = team_list(organization=organization).filter(slug=slug).first()
    if team is None:
        raise NotFound(f"No team '{slug}' in this organization.", resource="team")
    return team


def membership_list(*, organization: Organization) -> QuerySet[Membership]:
    return Membership.objects.filter(organization=organization).select_related("user")


def member_by_email(*, organization: Organization, email: str) -> User:
    """The member of `organization` with `email` (case-insensitive). Raises NotFound (404)."""
    memberships = membership_list(organization=organization)
    membership = memberships.filter(user__email=email.lower()).first()
    if membership is None:
        raise NotFound(f"{email} is not a member of this organization.", resource="member")
    return membership.user


def invitation_list(*, organization: Organization) -> QuerySet[Invitation]:
    return Invitation.objects.filter(organization=organization).select_related("team")


def audit_event_list(*, organization: Organization) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(organization=organization)
