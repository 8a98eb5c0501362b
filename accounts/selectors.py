"""Reads of the accounts app, each scoped to one organization."""

from __future__ import annotations

from django.db.models import QuerySet

from portal.errors import NotFound

from .models import ApiKey, AuditEvent, Invitation, Membership, Organization, Team, User
from .roles import KIND_SCOPES, ORG_WIDE_ROLES, ROLE_SCOPES


def membership_get(*, organization: Organization, user: User | None) -> Membership | None:
    if user is None or not user.is_authenticated:
        return None
    return Membership.objects.filter(organization=organization, user=user).first()


def user_scopes(*, organization: Organization, user: User) -> frozenset[str]:
    """The scopes a user's role grants in `organization` (empty for a non-member)."""
    membership = membership_get(organization=organization, user=user)
    return ROLE_SCOPES[membership.role] if membership else frozenset()


def key_scopes(key: ApiKey) -> frozenset[str]:
    """A key's effective scopes: its own (its kind's when it names none), narrowed to what its
    kind may ever hold and, for a key that acts for a member, to that member's role."""
    kind_scopes = KIND_SCOPES[key.kind]
    own = frozenset(key.scopes) & kind_scopes if key.scopes else kind_scopes
    if key.user_id is not None:
        own &= user_scopes(organization=key.organization, user=key.user)
    return own


def key_may_allocate(key: ApiKey, team: Team) -> bool:
    """May `key` allocate to and reclaim from `team`? With org-wide `credits:write` (a key bound
    to no team, acting for no member or for an org-wide role), or as a team manager (the
    `allocate_team_credits` object permission on `team`, django-guardian)."""
    scopes = key_scopes(key)
    org_wide = "credits:write" in scopes and key.team_id is None
    if key.user_id is None:
        return org_wide
    membership = membership_get(organization=key.organization, user=key.user)
    if org_wide and membership is not None and membership.role in ORG_WIDE_ROLES:
        return True
    return key.user.has_perm("accounts.allocate_team_credits", team)


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


def teams_visible_to_key(key: ApiKey) -> QuerySet[Team]:
    """The teams a key may see: its bound team; else all for org-wide roles or member-less keys;
    else the teams its member belongs to."""
    teams = team_list(organization=key.organization)
    if key.team_id is not None:
        return teams.filter(pk=key.team_id)
    if key.user_id is None:
        return teams
    membership = membership_get(organization=key.organization, user=key.user)
    if membership is not None and membership.role in ORG_WIDE_ROLES:
        return teams
    return teams.filter(memberships__user=key.user)


def membership_list(*, organization: Organization) -> QuerySet[Membership]:
    return Membership.objects.filter(organization=organization).select_related("user")


def invitation_list(*, organization: Organization) -> QuerySet[Invitation]:
    return Invitation.objects.filter(organization=organization).select_related("team")


def apikey_list(*, organization: Organization) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(organization=organization, deleted_at__isnull=True).select_related(
        "team", "user", "organization"
    )


def apikey_get(*, organization: Organization, hash: str) -> ApiKey:
    key = apikey_list(organization=organization).filter(hash=hash).first()
    if key is None:
        raise NotFound("No such API key in this organization.", resource="key")
    return key


def audit_event_list(*, organization: Organization) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(organization=organization)
