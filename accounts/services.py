"""Every write of the accounts app. Keyword-only, atomic, audited in the same transaction; side
effects (mail) are queued with `transaction.on_commit`."""

from __future__ import annotations

import re
import secrets
import zoneinfo
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core import signing
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone
from guardian.shortcuts import assign_perm, remove_perm

from portal.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from portal.money import parse_credits

from .access import member_teams_evict
from .audit import Actor, audit_record
from .authentication import KEY_PREFIX, apikey_cache_evict, hash_secret
from .models import ApiKey, Invitation, Membership, Organization, Team, TeamMembership, User
from .roles import KIND_SCOPES, SCOPES, TEAM_MANAGER_PERMISSIONS, KeyKind, Role, TeamRole

SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?$")
_INVITATION_SALT = "accounts.invitation"


def _slug(value: str, field: str = "slug") -> str:
    if not isinstance(value, str) or not SLUG_RE.match(value):
        raise ValidationFailed(
            {field: ["Use 1-50 lowercase letters, digits and inner hyphens (e.g. 'acme-ai')."]}
        )
    return value


def _text(value: str, field: str, max_length: int = 200) -> str:
    value = (value or "").strip() if isinstance(value, str) else ""
    if not value or len(value) > max_length:
        raise ValidationFailed({field: [f"Required, at most {max_length} characters."]})
    return value


def _email(value: str, field: str = "email") -> str:
    try:
        validate_email(value)
    except DjangoValidationError:
        raise ValidationFailed({field: ["Enter a valid e-mail address."]}) from None
    return value.strip().lower()


def _choice(value: str, choices, field: str) -> str:
    if value not in choices.values:
        raise ValidationFailed({field: [f"One of: {', '.join(choices.values)}."]})
    return value


# Users and organizations ----------------------------------------------------------------------


@transaction.atomic
def user_get_or_create(*, email: str, password: str | None = None, name: str = "") -> User:
    """The user with this e-mail, created (with `password`, validated) when new."""
    email = _email(email)
    user = User.objects.filter(email=email).first()
    if user is not None:
        return user
    if password is not None:
        try:
            validate_password(password)
        except DjangoValidationError as exc:
            raise ValidationFailed({"password": list(exc.messages)}) from None
    first, _, last = name.partition(" ")
    return User.objects.create_user(
        email=email, password=password, first_name=first, last_name=last
    )


@transaction.atomic
def organization_create(
    *, slug: str, name: str, owner_email: str, owner_password: str | None = None, actor: Actor
) -> Organization:
    """A new tenant with its first owner (created when the e-mail is new).

    Raises ValidationFailed (bad slug, name or e-mail), Conflict (slug taken)."""
    _slug(slug)
    if Organization.objects.filter(slug=slug).exists():
        raise Conflict(f"The slug '{slug}' is taken.", field="slug")
    organization = Organization.objects.create(slug=slug, name=_text(name, "name"))
    owner = user_get_or_create(email=owner_email, password=owner_password)
    Membership.objects.create(organization=organization, user=owner, role=Role.OWNER)
    audit_record(
        organization=organization,
        actor=actor,
        action="organization.created",
        target=organization,
        after={"slug": slug, "name": organization.name, "owner": owner.email},
    )
    return organization


ORGANIZATION_FIELDS = (
    "name",
    "billing_email",
    "billing_address",
    "tax_id",
    "currency",
    "time_zone",
)
# Currencies invoices and statements may be shown in (ISO 4217); credits stay USD-denominated.
CURRENCIES = ("USD", "EUR", "GBP", "CHF", "CAD", "AUD", "JPY", "SEK", "NOK", "DKK", "INR", "BRL")


def _time_zone(value: str) -> str:
    if not isinstance(value, str) or value not in zoneinfo.available_timezones():
        raise ValidationFailed({"time_zone": ["An IANA time zone, e.g. 'Europe/Berlin' or 'UTC'."]})
    return value


def _currency(value: str) -> str:
    value = value.strip().upper() if isinstance(value, str) else ""
    if value not in CURRENCIES:
        raise ValidationFailed({"currency": [f"One of: {', '.join(CURRENCIES)}."]})
    return value


@transaction.atomic
def organization_update(*, organization: Organization, actor: Actor, **changes) -> Organization:
    """Change the name, billing details, currency and time zone (IANA, from
    `zoneinfo.available_timezones()`; the budgets' current windows, spans of time in it, are
    counted again: `credits.services.budgets.budgets_reseed`). Unknown fields raise
    ValidationFailed."""
    unknown = set(changes) - set(ORGANIZATION_FIELDS)
    if unknown:
        raise ValidationFailed({f: ["Unknown field."] for f in sorted(unknown)})
    organization = Organization.objects.select_for_update().get(pk=organization.pk)
    if "name" in changes:
        changes["name"] = _text(changes["name"], "name")
    if changes.get("billing_email"):
        changes["billing_email"] = _email(changes["billing_email"], "billing_email")
    if "currency" in changes:
        changes["currency"] = _currency(changes["currency"])
    if "time_zone" in changes:
        changes["time_zone"] = _time_zone(changes["time_zone"])
    before = {f: getattr(organization, f) for f in changes}
    for field, value in changes.items():
        setattr(organization, field, value)
    organization.save(update_fields=list(changes) or None)
    if "time_zone" in changes and changes["time_zone"] != before["time_zone"]:
        from credits.services.budgets import budgets_reseed  # credits builds on accounts

        budgets_reseed(organization=organization)  # their windows are other spans of time now
    audit_record(
        organization=organization,
        actor=actor,
        action="organization.updated",
        target=organization,
        before=before,
        after=changes,
    )
    return organization


# Teams -----------------------------------------------------------------------------------------


@transaction.atomic
def team_create(
    *,
    organization: Organization,
    slug: str,
    name: str,
    funding: str = Team.Funding.ALLOCATION,
    actor: Actor,
) -> Team:
    """Raises ValidationFailed, Conflict (slug taken in this organization)."""
    _slug(slug)
    _choice(funding, Team.Funding, "funding")
    if Team.objects.filter(organization=organization, slug=slug).exists():
        raise Conflict(f"A team '{slug}' exists already.", field="slug")
    team = Team.objects.create(
        organization=organization, slug=slug, name=_text(name, "name"), funding=funding
    )
    audit_record(
        organization=organization,
        actor=actor,
        action="team.created",
        target=team,
        after={"slug": slug, "name": team.name, "funding": funding},
    )
    return team


@transaction.atomic
def team_update(
    *, team: Team, actor: Actor, name: str | None = None, funding: str | None = None
) -> Team:
    team = Team.objects.select_for_update().get(pk=team.pk)
    before = {"name": team.name, "funding": team.funding}
    if name is not None:
        team.name = _text(name, "name")
    if funding is not None:
        team.funding = _choice(funding, Team.Funding, "funding")
    team.save(update_fields=["name", "funding"])
    member_teams_evict()  # a member charged to it draws on what its funding says
    audit_record(
        organization=team.organization,
        actor=actor,
        action="team.updated",
        target=team,
        before=before,
        after={"name": team.name, "funding": team.funding},
    )
    return team


@transaction.atomic
def team_member_set(
    *, team: Team, user: User, role: str = TeamRole.MEMBER, actor: Actor
) -> TeamMembership:
    """Put an organization member on a team (or change their team role). Managers get the
    team's object permissions (django-guardian); members lose them."""
    _choice(role, TeamRole, "role")
    if not Membership.objects.filter(organization_id=team.organization_id, user=user).exists():
        raise ValidationFailed({"user": ["Not a member of this organization."]})
    tm, created = TeamMembership.objects.update_or_create(
        team=team, user=user, defaults={"role": role}
    )
    for perm in TEAM_MANAGER_PERMISSIONS:
        (assign_perm if role == TeamRole.MANAGER else remove_perm)(perm, user, team)
    member_teams_evict()
    audit_record(
        organization=team.organization,
        actor=actor,
        action="team.member_added" if created else "team.member_changed",
        target=team,
        after={"user": user.email, "role": role},
    )
    return tm


@transaction.atomic
def team_member_remove(*, team: Team, user: User, actor: Actor) -> None:
    deleted, _ = TeamMembership.objects.filter(team=team, user=user).delete()
    if not deleted:
        raise NotFound("Not on this team.", resource="team_membership")
    for perm in TEAM_MANAGER_PERMISSIONS:
        remove_perm(perm, user, team)
    member_teams_evict()
    audit_record(
        organization=team.organization,
        actor=actor,
        action="team.member_removed",
        target=team,
        before={"user": user.email},
    )


# Memberships ------------------------------------------------------------------------------------


def _lock_memberships(organization: Organization) -> list[Membership]:
    return list(
        Membership.objects.select_for_update().filter(organization=organization).order_by("id")
    )


@transaction.atomic
def membership_add(
    *, organization: Organization, user: User, role: str, actor: Actor
) -> Membership:
    _choice(role, Role, "role")
    membership, created = Membership.objects.get_or_create(
        organization=organization, user=user, defaults={"role": role}
    )
    if not created:
        raise Conflict(f"{user.email} is a member already.", field="email")
    audit_record(
        organization=organization,
        actor=actor,
        action="member.added",
        target=membership,
        after={"user": user.email, "role": role},
    )
    return membership


@transaction.atomic
def membership_role_set(*, membership: Membership, role: str, actor: Actor) -> Membership:
    """Change a member's role. Raises Conflict when it would leave the organization without an
    owner."""
    _choice(role, Role, "role")
    locked = _lock_memberships(membership.organization)
    membership = next(m for m in locked if m.pk == membership.pk)
    owners = [m for m in locked if m.role == Role.OWNER]
    if membership.role == Role.OWNER and role != Role.OWNER and len(owners) == 1:
        raise Conflict("An organization keeps at least one owner.", reason="last_owner")
    before = {"role": membership.role}
    membership.role = role
    membership.save(update_fields=["role"])
    audit_record(
        organization=membership.organization,
        actor=actor,
        action="member.role_changed",
        target=membership,
        before=before,
        after={"role": role},
    )
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, actor: Actor) -> None:
    """Remove a member, their team places and team permissions. Keeps at least one owner."""
    locked = _lock_memberships(membership.organization)
    owners = [m for m in locked if m.role == Role.OWNER]
    if membership.role == Role.OWNER and len(owners) == 1:
        raise Conflict("An organization keeps at least one owner.", reason="last_owner")
    organization, user = membership.organization, membership.user
    for tm in TeamMembership.objects.filter(team__organization=organization, user=user):
        for perm in TEAM_MANAGER_PERMISSIONS:
            remove_perm(perm, user, tm.team)
        tm.delete()
    audit_record(
        organization=organization,
        actor=actor,
        action="member.removed",
        target=membership,
        before={"user": user.email, "role": membership.role},
    )
    membership.delete()
    apikey_cache_evict()  # the member's keys stop now
    member_teams_evict()


# Invitations ------------------------------------------------------------------------------------


def invitation_token(invitation: Invitation) -> str:
    """The signed token of an invitation (what the e-mail link carries). The same invitation
    always gives the same token: the expiry is the row's `expires_at`, not a signed timestamp."""
    return signing.Signer(salt=_INVITATION_SALT).sign_object(
        {"i": invitation.pk, "n": invitation.nonce}
    )


@transaction.atomic
def invitation_create(
    *,
    organization: Organization,
    email: str,
    role: str = Role.MEMBER,
    team: Team | None = None,
    team_role: str = TeamRole.MEMBER,
    actor: Actor,
) -> tuple[Invitation, str]:
    """Invite an e-mail address; returns the invitation and its token. The e-mail is sent after
    commit. Raises ValidationFailed, Conflict (already a member)."""
    email = _email(email)
    _choice(role, Role, "role")
    _choice(team_role, TeamRole, "team_role")
    if team is not None and team.organization_id != organization.pk:
        raise NotFound("No such team in this organization.", resource="team")
    if Membership.objects.filter(organization=organization, user__email=email).exists():
        raise Conflict(f"{email} is a member already.", field="email")
    invitation = Invitation.objects.create(
        organization=organization,
        email=email,
        role=role,
        team=team,
        team_role=team_role,
        nonce=secrets.token_hex(16),
        invited_by=actor.user,
        expires_at=timezone.now() + settings.INVITATION_MAX_AGE,
        email_wanted_at=timezone.now(),
    )
    audit_record(
        organization=organization,
        actor=actor,
        action="invitation.created",
        target=invitation,
        after={"email": email, "role": role},
    )
    _email_after_commit(invitation)
    return invitation, invitation_token(invitation)


def _email_after_commit(invitation: Invitation) -> None:
    """Queue the invitation's e-mail once the write commits. Its row says the e-mail is wanted
    (`email_wanted_at`), so a broker that is down loses nothing: the queueing error is logged
    (`robust`), the write stands, and `accounts.tasks.invitations_sweep` sends it later."""
    from .tasks import invitation_send

    transaction.on_commit(lambda: invitation_send.delay(invitation.pk), robust=True)


def invitation_from_token(token: str) -> Invitation:
    """The pending invitation a token names. Raises NotFound for a bad signature, and
    ValidationFailed for an accepted, revoked or expired invitation."""
    try:
        data = signing.Signer(salt=_INVITATION_SALT).unsign_object(token)
    except (signing.BadSignature, ValueError):
        raise NotFound("This invitation link is not valid.", resource="invitation") from None
    invitation = Invitation.objects.filter(pk=data.get("i"), nonce=data.get("n")).first()
    if invitation is None:
        raise NotFound("This invitation link is not valid.", resource="invitation")
    if invitation.status != "pending":
        raise ValidationFailed({"token": [f"This invitation is {invitation.status}."]})
    return invitation


@transaction.atomic
def invitation_accept(*, token: str, user: User, actor: Actor) -> Membership:
    """Accept an invitation as `user` (whose e-mail must match). Single-use."""
    invitation = invitation_from_token(token)
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.status != "pending":
        raise ValidationFailed({"token": [f"This invitation is {invitation.status}."]})
    if user.email.lower() != invitation.email:
        raise PermissionDenied("This invitation is for another e-mail address.")
    membership = membership_add(
        organization=invitation.organization, user=user, role=invitation.role, actor=actor
    )
    if invitation.team is not None:
        team_member_set(team=invitation.team, user=user, role=invitation.team_role, actor=actor)
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    audit_record(
        organization=invitation.organization,
        actor=actor,
        action="invitation.accepted",
        target=invitation,
        after={"email": invitation.email, "role": invitation.role},
    )
    return membership


@transaction.atomic
def invitation_revoke(*, invitation: Invitation, actor: Actor) -> Invitation:
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.status != "pending":
        raise Conflict(f"This invitation is {invitation.status}.", reason=invitation.status)
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    audit_record(
        organization=invitation.organization,
        actor=actor,
        action="invitation.revoked",
        target=invitation,
        before={"email": invitation.email},
    )
    return invitation


@transaction.atomic
def invitation_resend(*, invitation: Invitation, actor: Actor) -> Invitation:
    """Send a pending invitation's e-mail again (the same link), after commit. Raises Conflict
    for an accepted, revoked or expired invitation."""
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.status != "pending":
        raise Conflict(f"This invitation is {invitation.status}.", reason=invitation.status)
    audit_record(
        organization=invitation.organization,
        actor=actor,
        action="invitation.resent",
        target=invitation,
        after={"email": invitation.email},
    )
    invitation.email_wanted_at = timezone.now()
    invitation.save(update_fields=["email_wanted_at"])
    _email_after_commit(invitation)
    return invitation


# API keys ---------------------------------------------------------------------------------------


def _key_snapshot(key: ApiKey) -> dict:
    return {
        "name": key.name,
        "kind": key.kind,
        "label": key.label,
        "team": key.team_id,
        "user": key.user_id,
        "scopes": key.scopes,
        "limit": key.limit,
        "limit_reset": key.limit_reset,
        "expires_at": key.expires_at,
        "disabled": key.disabled,
    }


def _key_limit(limit, limit_reset) -> tuple[Decimal | None, str]:
    if limit_reset not in (None, "") and limit_reset not in ApiKey.LimitReset.values:
        raise ValidationFailed({"limit_reset": ["One of: daily, weekly, monthly, or null."]})
    amount = None if limit is None else parse_credits(limit, field="limit", allow_zero=True)
    return amount, limit_reset or ""


def _key_scopes(scopes, kind: str) -> list[str]:
    """An explicit list of scopes, checked against the kind's; None means the kind's all."""
    scopes = sorted(KIND_SCOPES[kind]) if scopes is None else list(scopes)
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValidationFailed({"scopes": [f"Unknown scope: {', '.join(unknown)}."]})
    beyond = [s for s in scopes if s not in KIND_SCOPES[kind]]
    if beyond:
        raise ValidationFailed({"scopes": [f"A {kind} key cannot hold: {', '.join(beyond)}."]})
    return sorted(set(scopes))


@transaction.atomic
def apikey_create(
    *,
    organization: Organization,
    name: str,
    kind: str = KeyKind.USAGE,
    team: Team | None = None,
    user: User | None = None,
    scopes: list[str] | None = None,
    limit=None,
    limit_reset=None,
    expires_at: datetime | None = None,
    actor: Actor,
) -> tuple[ApiKey, str]:
    """Create a key; returns it and its secret (shown once; only its sha256 is stored). A
    `limit` (credits per `limit_reset` window: daily, weekly, monthly, or in total) becomes the
    key's budget with UTC windows.
    `scopes` is exactly the key's scopes (an empty list: none; None: all its kind allows); who
    may create which key is `accounts.access.Principal.key_terms`.

    Raises ValidationFailed (bad kind, scopes, limit, expiry in the past; a team or member from
    another organization)."""
    _text(name, "name")
    _choice(kind, KeyKind, "kind")
    if team is not None and team.organization_id != organization.pk:
        raise ValidationFailed({"team": ["No such team in this organization."]})
    if (
        user is not None
        and not Membership.objects.filter(organization=organization, user=user).exists()
    ):
        raise ValidationFailed({"member": ["Not a member of this organization."]})
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationFailed({"expires_at": ["Must be in the future."]})
    amount, reset = _key_limit(limit, limit_reset)
    secret = KEY_PREFIX + secrets.token_hex(32)
    key = ApiKey.objects.create(
        organization=organization,
        name=name.strip(),
        kind=kind,
        hash=hash_secret(secret),
        label=f"{secret[:12]}...{secret[-4:]}",
        team=team,
        user=user,
        created_by=actor.user,
        scopes=_key_scopes(scopes, kind),
        expires_at=expires_at,
    )
    if amount is not None:
        from credits.services.budgets import key_limit_set  # credits builds on accounts

        key_limit_set(key=key, limit=amount, limit_reset=reset, actor=actor)
    audit_record(
        organization=organization,
        actor=actor,
        action="key.created",
        target=key,
        after=_key_snapshot(key),
    )
    return key, secret


@transaction.atomic
def apikey_update(*, key: ApiKey, actor: Actor, **changes) -> ApiKey:
    """Change `name`, `disabled`, `limit`, `limit_reset`, `scopes`, `expires_at`. The limit is
    the key's budget with UTC windows (`credits.services.budgets.key_limit_set`).

    Raises ValidationFailed for an empty change or unknown fields."""
    allowed = {"name", "disabled", "limit", "limit_reset", "scopes", "expires_at"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValidationFailed({f: ["Unknown field."] for f in sorted(unknown)})
    if not changes:
        raise ValidationFailed({"non_field_errors": ["No update fields provided."]})
    key = ApiKey.objects.select_for_update().get(pk=key.pk)
    before = _key_snapshot(key)
    if "name" in changes:
        key.name = _text(changes["name"], "name")
    if "disabled" in changes:
        key.disabled = bool(changes["disabled"])
    if "limit" in changes or "limit_reset" in changes:
        from credits.services.budgets import key_limit_set  # credits builds on accounts

        # OpenRouter's PATCH: a reset given alone keeps the limit, and the other way round.
        amount, reset = _key_limit(
            changes.get("limit", key.limit), changes.get("limit_reset", key.limit_reset)
        )
        key_limit_set(key=key, limit=amount, limit_reset=reset, actor=actor)
    if "scopes" in changes:
        key.scopes = _key_scopes(changes["scopes"], key.kind)
    if "expires_at" in changes:
        key.expires_at = changes["expires_at"]
    key.updated_at = timezone.now()
    key.save()
    apikey_cache_evict()
    audit_record(
        organization=key.organization,
        actor=actor,
        action="key.updated",
        target=key,
        before=before,
        after=_key_snapshot(key),
    )
    return key


@transaction.atomic
def apikey_delete(*, key: ApiKey, actor: Actor) -> None:
    """Delete a key: it stops authenticating at once; its row stays (soft delete) so that usage
    and audit history keep pointing at it."""
    updated = ApiKey.objects.filter(pk=key.pk, deleted_at__isnull=True).update(
        deleted_at=timezone.now(), disabled=True
    )
    if not updated:
        raise NotFound("No such API key in this organization.", resource="key")
    apikey_cache_evict()
    audit_record(
        organization=key.organization,
        actor=actor,
        action="key.deleted",
        target=key,
        before=_key_snapshot(key),
    )
