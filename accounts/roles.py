"""Roles and scopes: the one table that says who may do what.

An organization member's role grants a set of scopes (as Sentry's roles do). An API key carries its
own scopes and gets the intersection with its owner's (the member it acts for), so a key can never
do more than the person behind it. Team managers get object permissions on their `Team` on top
(see `TEAM_MANAGER_PERMISSIONS`).
"""

from django.db import models


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    BILLING = "billing", "Billing"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


class TeamRole(models.TextChoices):
    MANAGER = "manager", "Manager"
    MEMBER = "member", "Member"


class KeyKind(models.TextChoices):
    """As OpenRouter: management keys administer; usage (inference) keys spend."""

    MANAGEMENT = "management", "Management"
    USAGE = "usage", "Usage"


SCOPES: dict[str, str] = {
    "org:read": "See the organization",
    # Webhook endpoints are the organization's configuration (their URLs may carry tokens): reading
    # and changing them both need org:write. Notifications and their preferences are each member's
    # own and need only org:read (notifications/apis.py).
    "org:write": "Change the organization's settings, billing details and webhook endpoints",
    "members:read": "See members, teams and invitations",
    "members:write": "Invite, change and remove members; create and change teams",
    "keys:read": "See API keys",
    "keys:write": "Create, change and delete API keys",
    "credits:read": "See balances, lots, accounts and allocations",
    "credits:write": "Allocate and reclaim credits; grant credits",
    "usage:read": "See usage events and reports",
    "usage:write": "Record usage and hold credits for requests",
    "billing:read": "See purchases, invoices and statements",
    "billing:write": "Buy credits and manage payment settings",
    "audit:read": "Read the audit log",
}
ALL = frozenset(SCOPES)
_READ = frozenset(s for s in SCOPES if s.endswith(":read") and s != "audit:read")

ROLE_SCOPES: dict[str, frozenset[str]] = {
    Role.OWNER: ALL,
    Role.ADMIN: ALL - {"billing:write"},
    Role.BILLING: _READ | {"billing:write", "audit:read"},
    # A member sees and manages their own usage and keys (`accounts.access` binds them), and of
    # other members only totals: no `members:read`.
    Role.MEMBER: frozenset(
        {"org:read", "credits:read", "usage:read", "usage:write", "keys:read", "keys:write"}
    ),
    # A viewer sees the organization's figures, without members' identities or key names.
    Role.VIEWER: frozenset({"org:read", "credits:read", "usage:read"}),
}

# What each kind of key may ever hold, whatever its owner's role.
KIND_SCOPES: dict[str, frozenset[str]] = {
    KeyKind.MANAGEMENT: ALL,
    KeyKind.USAGE: frozenset({"credits:read", "usage:read", "usage:write"}),
}

# Object permissions (django-guardian) a team manager holds on the team.
TEAM_MANAGER_PERMISSIONS = ("allocate_team_credits", "manage_team_budgets", "view_team_usage")

# Roles that may act on every team without object permissions.
ORG_WIDE_ROLES = frozenset({Role.OWNER, Role.ADMIN, Role.BILLING})
