"""The one permission layer inside an organization: who is acting, what they may do, which rows
they may see. Every API view and every page asks here; nothing else decides.

A `Principal` is either a member's browser session or an API key:

- **scopes**: a session has its role's scopes (`accounts.roles.ROLE_SCOPES`); a key has its own
  explicit scopes, narrowed to its kind's and, for a key bound to a member, to that member's
  current role (Sentry's model: a token never does more than the person behind it).
- **bindings**: a key bound to a team acts on that team only (its usage, holds, accounts, lots,
  keys). A key bound to a member sees that member's usage only, and otherwise acts with the
  member's role. A `member` (the role) sees their own usage and keys, their teams' accounts, and
  the usage of the teams they manage; a `viewer` sees the organization's figures without other
  members' identities or key names.
- **team managers** hold django-guardian object permissions on their `Team`
  (`accounts.roles.TEAM_MANAGER_PERMISSIONS`): reclaim from the team, manage its members and
  their budgets, see its usage. They never draw on the pool.
- **role hierarchy**: only an owner grants, changes or removes the owner role; an admin manages
  roles up to admin; nobody changes their own role. A key that acts for no member is capped at
  admin.

Rows another principal of the same organization may not see answer 404 (`NotFound`), as rows of
another organization do; actions a visible row does not allow answer 403 (`PermissionDenied`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from django.db import connection
from django.db.models import Q, QuerySet

from portal.errors import NotFound, PermissionDenied, ValidationFailed
from portal.process_cache import ProcessCache
from portal.statements import compiled, model_rows

from .models import (
    ApiKey,
    Membership,
    Organization,
    Team,
    TeamMembership,
    TeamUserObjectPermission,
    User,
)
from .roles import KIND_SCOPES, ORG_WIDE_ROLES, ROLE_SCOPES, KeyKind, Role

# Ranks for the role hierarchy: a principal may grant, change or remove roles up to its own
# rank, except that only an owner touches the owner role.
ROLE_RANK = {Role.VIEWER: 1, Role.MEMBER: 2, Role.BILLING: 3, Role.ADMIN: 4, Role.OWNER: 5}


# Scopes over the whole organization only, which a key bound to a team never holds (it acts on
# its team only): the organization's settings, its members and invitations (every e-mail), the
# audit log (every team's keys and members' actions), and billing.
ORGANIZATION_ONLY_SCOPES = frozenset(
    {"org:write", "members:read", "members:write", "audit:read", "billing:read", "billing:write"}
)


_LOOK_UP = object()  # key_scopes: read the bound member's role from the database


def key_scopes(key: ApiKey, *, member_role: str | None | object = _LOOK_UP) -> frozenset[str]:
    """A key's effective scopes: its own explicit list, narrowed to what its kind may ever hold,
    for a key bound to a team to what is not the whole organization's, and for a key bound to a
    member to that member's role (`member_role`, read when not given; None: they left, so no
    scope at all)."""
    own = frozenset(key.scopes) & KIND_SCOPES[key.kind]
    if key.team_id is not None:
        own -= ORGANIZATION_ONLY_SCOPES
    if key.user_id is not None:
        if member_role is _LOOK_UP:
            member_role = member_roles([key]).get(key.user_id)
        own &= ROLE_SCOPES.get(member_role, frozenset())
    return own


# The teams a member sees (`Principal.teams`, at most 3 of them), per organization and user,
# kept MEMBER_TEAMS_CACHE_SECONDS in the process (`portal.process_cache`), as the API keys are:
# `Principal.spending_team` asks on every usage write of a member (three statements). A change
# of teams, team roles or funding reaches every worker within that time, and at once the process
# that makes it (`member_teams_evict`, called by the services that make such changes).
MEMBER_TEAMS_CACHE_SECONDS = 1.0
_MEMBER_TEAMS: ProcessCache[list[Team]] = ProcessCache(MEMBER_TEAMS_CACHE_SECONDS)


def member_teams_evict() -> None:
    """Forget the members' teams this process keeps, now and when the transaction commits."""
    _MEMBER_TEAMS.evict()


def member_roles(keys) -> dict[int, str]:
    """{user id: role} of the members `keys` are bound to, in the keys' organizations (one
    query for a list of keys)."""
    users = {(k.organization_id, k.user_id) for k in keys if k.user_id is not None}
    if not users:
        return {}
    organizations = {org for org, _ in users}
    rows = Membership.objects.filter(
        organization_id__in=organizations, user_id__in={user for _, user in users}
    ).values_list("organization_id", "user_id", "role")
    return {user: role for org, user, role in rows if (org, user) in users}


@dataclass
class Principal:
    """Who acts inside `organization`: a session (`user`, `role`) or an API `key`."""

    organization: Organization
    scopes: frozenset[str]
    user: User | None = None
    role: str | None = None
    key: ApiKey | None = None
    team_id: int | None = None  # a key bound to a team acts on that team only
    member_id: int | None = None  # sees the usage of this member only

    # Construction ----------------------------------------------------------------------------

    @classmethod
    def for_session(cls, *, organization: Organization, user: User) -> Principal | None:
        """The member `user` in `organization`, or None for a non-member."""
        if user is None or not user.is_authenticated:
            return None
        membership = Membership.objects.filter(organization=organization, user=user).first()
        if membership is None:
            return None
        return cls.for_membership(membership)

    @classmethod
    def for_membership(cls, membership: Membership) -> Principal:
        role = membership.role
        return cls(
            organization=membership.organization,
            scopes=ROLE_SCOPES[role],
            user=membership.user,
            role=role,
            member_id=None if role in ORG_WIDE_ROLES or role == Role.VIEWER else membership.user_id,
        )

    @classmethod
    def for_key(cls, key: ApiKey) -> Principal:
        role = member_roles([key]).get(key.user_id) if key.user_id is not None else None
        return cls(
            organization=key.organization,
            scopes=key_scopes(key, member_role=role),
            user=key.user,
            role=role,
            key=key,
            team_id=key.team_id,
            member_id=key.user_id,
        )

    # What the principal is ----------------------------------------------------------------

    def has(self, scope: str) -> bool:
        return scope in self.scopes

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise PermissionDenied(f"This needs the '{scope}' scope.", scope=scope)

    @property
    def org_wide(self) -> bool:
        """Sees the whole organization's teams, accounts and figures: bound to no team, and
        acting for no `member` (the role) -- an owner, admin, billing or viewer, or a key of no
        member."""
        if self.team_id is not None:
            return False
        if self.role is None:
            return self.key is not None
        return self.role != Role.MEMBER

    @property
    def rank(self) -> int:
        """The role rank this principal acts with; a key of no member counts as an admin."""
        if self.role is None:
            return ROLE_RANK[Role.ADMIN] if self.key is not None else 0
        return ROLE_RANK[self.role]

    @property
    def label(self) -> str:
        if self.key is not None:
            return f"key {self.key.name}"
        return self.user.email if self.user else "anonymous"

    @cached_property
    def managed_team_ids(self) -> frozenset[int]:
        """Teams whose manager's object permissions (django-guardian, direct foreign key) the
        acting member holds; empty for keys bound to a team and for keys of no member."""
        if self.user is None or (self.key is not None and self.team_id is not None):
            return frozenset()
        return frozenset(
            TeamUserObjectPermission.objects.filter(
                user_id=self.user.pk,
                content_object__organization=self.organization,
                permission__codename="allocate_team_credits",
            ).values_list("content_object_id", flat=True)
        )

    @cached_property
    def member_team_ids(self) -> frozenset[int]:
        """Teams the acting member belongs to."""
        if self.user is None:
            return frozenset()
        return frozenset(
            Team.objects.filter(
                organization=self.organization, memberships__user_id=self.user.pk
            ).values_list("pk", flat=True)
        )

    @cached_property
    def managed_member_ids(self) -> frozenset[int]:
        """Users on the teams it manages (a manager sees who is on their teams)."""
        if not self.managed_team_ids:
            return frozenset()
        return frozenset(
            TeamMembership.objects.filter(team_id__in=self.managed_team_ids).values_list(
                "user_id", flat=True
            )
        )

    @cached_property
    def budget_team_ids(self) -> frozenset[int]:
        """Teams whose members' budgets it may set (the `manage_team_budgets` object permission
        of a team manager); empty for keys bound to a team and for keys of no member."""
        if self.user is None or (self.key is not None and self.team_id is not None):
            return frozenset()
        return frozenset(
            TeamUserObjectPermission.objects.filter(
                user_id=self.user.pk,
                content_object__organization=self.organization,
                permission__codename="manage_team_budgets",
            ).values_list("content_object_id", flat=True)
        )

    def manages(self, team: Team) -> bool:
        return team.pk in self.managed_team_ids

    # Rows the principal sees ----------------------------------------------------------------

    def teams(self) -> QuerySet[Team]:
        """The teams it may see: its bound team; every team when not bound to a member; else the
        teams the member belongs to or manages."""
        if self.team_id is not None:
            return _teams_of(self.organization.pk, self.team_id)
        if self.org_wide:
            return _teams_of(self.organization.pk)
        return _teams_of(self.organization.pk).filter(
            pk__in=self.member_team_ids | self.managed_team_ids
        )

    def team_list(self) -> list[Team]:
        """`teams()`, read. For a key or session bound to a team or seeing every team, on
        PostgreSQL, from SQL compiled once and prepared (`portal.statements`): the balance
        reads it on every request, and the ORM's building and compiling its statement each
        time took 0.56 ms of it against 0.17 for the organization's accounts read this way
        (docs/performance.md, run 17)."""
        if connection.vendor != "postgresql" or not (self.team_id or self.org_wide):
            return list(self.teams())
        values = {"organization_id": self.organization.pk}
        if self.team_id is not None:
            values["team_id"] = self.team_id
        sql, params = compiled(
            ("principal_teams", self.team_id is not None),
            lambda **v: _teams_of(**v).query.sql_with_params(),
            values,
        )
        return model_rows(Team, sql, params)

    def spending_team(self) -> Team | None:
        """The team its usage is charged to (its account, or the pool for a pool-funded team,
        with the team's budgets): its bound team; None, the organization's pool, for a
        principal of the whole organization; else the one team it sees (`teams()`: the teams
        the member is on or manages, those whose credits `credits.selectors.draw_accounts`
        lets it draw on). Raises PermissionDenied (403) for a member who sees no team (no
        credits to draw on) or several (a key bound to one of them says which)."""
        if self.team_id is not None:
            return self.key.team if self.key is not None else self.teams().get()
        if self.org_wide:
            return None
        teams = _MEMBER_TEAMS.get(
            (self.organization.pk, self.user.pk if self.user else None),
            lambda: list(self.teams().order_by("slug")[:3]),
        )
        who = self.user.email if self.user is not None else self.label
        if not teams:
            raise PermissionDenied(
                f"The usage of {who} is charged to their team, and they are on no team: an "
                "admin can add them to one."
            )
        if len(teams) > 1:
            names = ", ".join(t.slug for t in teams[:2]) + (", ..." if len(teams) > 2 else "")
            raise PermissionDenied(
                f"{who} is on several teams ({names}): use a key bound to the team to charge."
            )
        return teams[0]

    def team(self, slug: str) -> Team:
        """A team it may see, by slug. Raises NotFound (404)."""
        team = self.teams().filter(slug=slug).first()
        if team is None:
            raise NotFound(f"No team '{slug}' in this organization.", resource="team")
        return team

    def row_filter(self, *, team: str = "team", member: str = "member", key: str = "api_key") -> Q:
        """The condition on a row with `team`, `member` and `api_key` columns (usage events,
        holds) that it may see: rows of its bound team; of its bound member (or made with its own
        key), plus the teams a member session manages; else all."""
        condition = Q()
        if self.team_id is not None:
            condition &= Q(**{f"{team}_id": self.team_id})
        if self.member_id is not None:
            own = Q(**{f"{member}_id": self.member_id})
            if self.key is not None:
                own |= Q(**{f"{key}_id": self.key.pk})
            if self.key is None and self.managed_team_ids:
                own |= Q(**{f"{team}_id__in": self.managed_team_ids})
            condition &= own
        return condition

    def keys(self) -> QuerySet[ApiKey]:
        """The API keys it may see (requires `keys:read` at the gate): a team-bound key's team's
        keys; a member's own keys; else all."""
        keys = ApiKey.objects.filter(
            organization=self.organization, deleted_at__isnull=True
        ).select_related("team", "user", "organization")
        if self.team_id is not None:
            keys = keys.filter(team_id=self.team_id)
        if not self.org_wide and self.team_id is None:
            keys = keys.filter(user_id=self.user.pk if self.user else None)
        return keys

    def key_get(self, hash: str) -> ApiKey:
        key = self.keys().filter(hash=hash).first()
        if key is None:
            raise NotFound("No such API key in this organization.", resource="key")
        return key

    def budget_filter(self) -> Q:
        """The condition on a budget row (its `scope`, `team`, `member`, `api_key`) that it may
        see (`credits.selectors.budgets_visible`; `credits:read` at the gate): all when
        organization-wide; else the organization's own, and those of the teams, members and keys
        it sees (a team-bound key: its team and its team's keys; a member: their teams,
        themselves, their own keys, and the members of the teams whose budgets they manage)."""
        if self.org_wide:
            return Q()
        visible = Q(scope="organization")
        if self.team_id is not None:
            return visible | Q(team_id=self.team_id) | Q(api_key__team_id=self.team_id)
        members = {self.user.pk} | {
            m
            for m in TeamMembership.objects.filter(team_id__in=self.budget_team_ids).values_list(
                "user_id", flat=True
            )
        }
        visible |= Q(team_id__in=self.member_team_ids | self.managed_team_ids)
        visible |= Q(member_id__in=members) | Q(api_key__user_id=self.user.pk)
        return visible

    def check_budget(self, scope: str, target=None) -> None:
        """Set, change or delete a budget of `scope` on `target` (a Team, User or ApiKey; None
        for the organization): `credits:write` organization-wide, or a manager of a team the
        target member is on (the `manage_team_budgets` permission). Raises PermissionDenied."""
        if self.has("credits:write") and self.org_wide:
            return
        if scope == "member" and target is not None and self.budget_team_ids:
            on_team = TeamMembership.objects.filter(
                team_id__in=self.budget_team_ids, user_id=target.pk
            ).exists()
            if on_team:
                return
        raise PermissionDenied(
            "Budgets need credits:write for the whole organization, or a team manager's right "
            "over the member's team."
        )

    def check_alert_acknowledge(self, budget) -> None:
        """Acknowledge an alert of `budget` (one it sees): `credits:write` organization-wide, the
        manager of the budget's team (a team budget), or whoever may set the budget (a team
        manager for the members of the team). Raises PermissionDenied."""
        if budget.scope == "team" and budget.team_id in self.managed_team_ids:
            return
        self.check_budget(budget.scope, budget.member if budget.scope == "member" else None)

    def check_guardrail_change(self) -> None:
        """Create, change or delete a guardrail, or assign members to one: `keys:write` for the
        whole organization (a team-bound key or a `member` assigns only the keys it sees)."""
        if self.has("keys:write") and self.org_wide:
            return
        raise PermissionDenied(
            "Changing guardrails and their members needs keys:write for the whole organization."
        )

    def sees_member(self, user_id: int | None) -> bool:
        """May it see who a member is (e-mail, name)? Its own self always; others with
        `members:read` when bound to no member."""
        if user_id is None:
            return True
        if self.user is not None and user_id == self.user.pk:
            return True
        if self.key is None and user_id in self.managed_member_ids:
            return True
        return self.has("members:read")

    def sees_key(self, key: ApiKey | None) -> bool:
        """May it see a key's name? Keys it may list (with `keys:read`), and itself."""
        if key is None:
            return True
        if self.key is not None and key.pk == self.key.pk:
            return True
        if not self.has("keys:read"):
            return False
        if self.team_id is not None and key.team_id != self.team_id:
            return False
        return self.org_wide or self.team_id is not None or key.user_id == self.user.pk

    # Decisions ---------------------------------------------------------------------------

    def check_allocate(self, team: Team | None = None) -> None:
        """Pool -> team: needs `credits:write` acting organization-wide (a team manager or a
        team-bound key never draws on the pool)."""
        if not (self.has("credits:write") and self.team_id is None):
            raise PermissionDenied(
                "Allocating from the pool needs credits:write for the whole organization."
            )

    def check_reclaim(self, team: Team) -> None:
        """Team -> pool: `credits:write` organization-wide, or the team's manager."""
        if self.has("credits:write") and self.team_id is None:
            return
        if self.manages(team):
            return
        raise PermissionDenied("Reclaiming needs credits:write, or the team manager's right.")

    def check_account_settings(self, team: Team | None) -> None:
        """Change an account's settings (its low-balance alert): `credits:write` for the whole
        organization, or the manager of the account's team."""
        if self.has("credits:write") and self.team_id is None:
            return
        if team is not None and self.manages(team):
            return
        raise PermissionDenied("This needs credits:write, or the team manager's right.")

    def check_team_members(self, team: Team, *, role: str | None = None) -> None:
        """Put members on a team or take them off: `members:write` organization-wide, or the
        team's manager (who may not make other managers)."""
        if self.has("members:write") and self.team_id is None:
            return
        if self.manages(team) and role in (None, "member"):
            return
        raise PermissionDenied("Managing this team's members needs members:write or its manager.")

    def check_role_change(self, membership: Membership, new_role: str | None) -> None:
        """Change `membership` to `new_role` (None: remove it). Raises PermissionDenied."""
        if self.user is not None and membership.user_id == self.user.pk and new_role is not None:
            raise PermissionDenied("Nobody changes their own role.")
        touches_owner = membership.role == Role.OWNER or new_role == Role.OWNER
        if touches_owner and self.role != Role.OWNER:
            raise PermissionDenied("Only an owner grants, changes or removes the owner role.")
        ranks = [ROLE_RANK[membership.role]] + ([ROLE_RANK[new_role]] if new_role else [])
        if max(ranks) > self.rank:
            raise PermissionDenied("You can manage roles up to your own.")

    def check_invite(self, role: str) -> None:
        if role == Role.OWNER and self.role != Role.OWNER:
            raise PermissionDenied("Only an owner invites owners.")
        if ROLE_RANK[role] > self.rank:
            raise PermissionDenied("You can invite roles up to your own.")

    def key_terms(
        self,
        *,
        kind: str,
        team: Team | None,
        member: User | None,
        scopes: list[str] | None,
    ) -> tuple[Team | None, User | None, list[str]]:
        """What a new key it creates will be: (team, member, scopes).

        A team-bound principal's keys are bound to its team; a `member`'s keys are usage keys
        bound to themselves. An explicit `scopes` list is exactly the key's
        scopes (empty: none) and must be within its own scopes and the kind's; omitted, the key
        gets its own scopes within the kind. Raises PermissionDenied, ValidationFailed."""
        if self.team_id is not None:
            if team is not None and team.pk != self.team_id:
                raise PermissionDenied("A team's key creates keys of its own team only.")
            team = self.teams().get()  # its bound team, in its organization
        if self.role == Role.MEMBER:
            if member is not None and member.pk != self.user.pk:
                raise PermissionDenied("You can create keys for yourself only.")
            if kind != KeyKind.USAGE:
                raise PermissionDenied("You can create usage keys only.")
            member = self.user
        if member is not None and self.role != Role.OWNER:
            membership = Membership.objects.filter(
                organization=self.organization, user=member
            ).first()
            if membership is not None and ROLE_RANK[membership.role] > self.rank:
                raise PermissionDenied("You cannot create keys for a member above your role.")
        return team, member, self.scopes_within(scopes, kind)

    def scopes_within(self, scopes: list[str] | None, kind: str) -> list[str]:
        """Explicit scopes (checked against its own and the kind's), or its own within the kind."""
        kind_scopes = KIND_SCOPES[kind]
        if scopes is None:
            return sorted(self.scopes & kind_scopes)
        beyond_kind = set(scopes) - kind_scopes
        if beyond_kind:
            raise ValidationFailed(
                {"scopes": [f"A {kind} key cannot hold: {', '.join(sorted(beyond_kind))}."]}
            )
        beyond_own = set(scopes) - self.scopes
        if beyond_own:
            raise PermissionDenied(
                "A key cannot get scopes its creator lacks.", scopes=sorted(beyond_own)
            )
        return sorted(set(scopes))

    def check_key_manage(self, key: ApiKey) -> None:
        """Change or delete a key it can see: not a key of a member above its role."""
        if key.user_id is not None and self.role != Role.OWNER:
            membership = Membership.objects.filter(
                organization=self.organization, user_id=key.user_id
            ).first()
            if membership is not None and ROLE_RANK[membership.role] > self.rank:
                raise PermissionDenied("You cannot change keys of a member above your role.")


def principal_for_request(request, organization: Organization | None = None) -> Principal | None:
    """The principal of a request: its API key's, or its session user's in `organization`."""
    auth = getattr(request, "auth", None)
    if isinstance(auth, ApiKey):
        return Principal.for_key(auth)
    if organization is None:
        return None
    return Principal.for_session(organization=organization, user=request.user)


def _teams_of(organization_id: int, team_id: int | None = None) -> QuerySet[Team]:
    """The organization's teams, or its team `team_id`, in `Team.Meta.ordering`."""
    teams = Team.objects.filter(organization_id=organization_id)
    return teams if team_id is None else teams.filter(pk=team_id)
