"""Organizations, roles, teams, keys and the audit log, through the services."""

import hashlib

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from guardian.shortcuts import get_perms

from accounts.access import key_scopes
from accounts.audit import audit_verify
from accounts.models import ApiKey, AuditEvent, Membership
from accounts.roles import ROLE_SCOPES, Role, TeamRole
from accounts.services import (
    apikey_create,
    apikey_delete,
    membership_remove,
    membership_role_set,
    organization_create,
    team_create,
    team_member_set,
)
from portal.errors import Conflict, ValidationFailed

from ..conftest import SYSTEM


def test_an_organization_starts_with_its_owner_and_an_audit_event(db):
    org = organization_create(
        slug="initech",
        name="Initech",
        owner_email="Boss@Initech.test",
        owner_password="correct-horse-battery",
        actor=SYSTEM,
    )
    membership = Membership.objects.get(organization=org)
    assert (membership.user.email, membership.role) == ("boss@initech.test", Role.OWNER)
    event = AuditEvent.objects.get(organization=org)
    assert (event.action, event.sequence, event.prev_hash) == ("organization.created", 1, "")


@pytest.mark.parametrize("slug", ["Bad Slug!", "-x", "x" * 51, "", "a_b"])
def test_bad_slugs_are_refused(db, slug):
    with pytest.raises(ValidationFailed):
        organization_create(slug=slug, name="X", owner_email="a@b.test", actor=SYSTEM)


def test_an_organization_keeps_at_least_one_owner(tenant):
    owner = Membership.objects.get(organization=tenant.org, user=tenant.owner)
    with pytest.raises(Conflict):
        membership_role_set(membership=owner, role=Role.ADMIN, actor=SYSTEM)
    with pytest.raises(Conflict):
        membership_remove(membership=owner, actor=SYSTEM)
    second = tenant.member(Role.OWNER)
    membership_role_set(membership=owner, role=Role.ADMIN, actor=SYSTEM)
    assert Membership.objects.get(user=second).role == Role.OWNER
    owner.refresh_from_db()
    assert owner.role == Role.ADMIN


def test_team_managers_hold_guardian_object_permissions(tenant):
    user = tenant.member(Role.MEMBER)
    other_team = team_create(organization=tenant.org, slug="other", name="Other", actor=SYSTEM)
    team_member_set(team=tenant.team, user=user, role=TeamRole.MANAGER, actor=SYSTEM)
    assert user.has_perm("accounts.allocate_team_credits", tenant.team)
    assert not user.has_perm("accounts.allocate_team_credits", other_team)
    assert set(get_perms(user, tenant.team)) == {
        "allocate_team_credits",
        "manage_team_budgets",
        "view_team_usage",
    }
    team_member_set(team=tenant.team, user=user, role=TeamRole.MEMBER, actor=SYSTEM)
    user = type(user).objects.get(pk=user.pk)  # fresh permission cache
    assert not user.has_perm("accounts.allocate_team_credits", tenant.team)


def test_a_key_keeps_only_the_hash_and_its_scopes_narrow_to_its_member(tenant):
    member = tenant.member(Role.MEMBER)
    key, secret = apikey_create(
        organization=tenant.org, name="ci", kind="management", user=member, actor=SYSTEM
    )
    stored = ApiKey.objects.get(pk=key.pk)
    assert stored.hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(stored.__dict__)
    assert key.label.startswith(secret[:12]) and key.label.endswith(secret[-4:])
    assert key_scopes(stored) == ROLE_SCOPES[Role.MEMBER]
    with pytest.raises(ValidationFailed):
        apikey_create(
            organization=tenant.org, name="x", kind="usage", scopes=["keys:write"], actor=SYSTEM
        )


def test_a_deleted_key_stops_authenticating(tenant):
    key, secret = tenant.key("management")
    client = tenant.client(secret)
    assert client.get("/api/v1/organization").status_code == 200
    apikey_delete(key=key, actor=SYSTEM)
    response = client.get("/api/v1/organization")
    assert response.status_code == 401 and response.json()["error"]["code"] == 401


def test_the_audit_log_is_append_only_and_its_chain_names_the_first_broken_link(tenant, capsys):
    tenant.key("usage")
    tenant.key("management")
    events = list(AuditEvent.objects.filter(organization=tenant.org).order_by("sequence"))
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert all(b.prev_hash == a.hash for a, b in zip(events, events[1:], strict=False))
    assert audit_verify(organization=tenant.org) is None
    call_command("audit_verify")
    assert "acme: intact" in capsys.readouterr().out
    with pytest.raises(IntegrityError), transaction.atomic():
        AuditEvent.objects.filter(pk=events[1].pk).update(action="tampered")
    with pytest.raises(IntegrityError), transaction.atomic():
        AuditEvent.objects.filter(pk=events[1].pk).delete()
    # Someone with the database's own powers edits an event behind the trigger's back.
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")  # triggers off
        cursor.execute("UPDATE accounts_auditevent SET after = '{}' WHERE id = %s", [events[1].pk])
        cursor.execute("SET session_replication_role = origin")
    assert audit_verify(organization=tenant.org).pk == events[1].pk
    with pytest.raises(CommandError):
        call_command("audit_verify")
    assert f"broken at event #{events[1].sequence}" in capsys.readouterr().out


def test_a_team_member_is_added_and_removed_through_the_api(tenant):
    user = tenant.member(Role.MEMBER)
    client = tenant.client(tenant.key("management")[1])
    added = client.post(
        f"/api/v1/teams/{tenant.team.slug}/members",
        {"email": user.email, "role": "manager"},
        format="json",
    )
    assert added.status_code == 200 and added.json()["role"] == "manager"
    assert user.has_perm("accounts.allocate_team_credits", tenant.team)
    membership = Membership.objects.get(organization=tenant.org, user=user)
    url = f"/api/v1/teams/{tenant.team.slug}/members/{membership.pk}"
    assert client.delete(url).status_code == 204
    user = type(user).objects.get(pk=user.pk)
    assert not user.has_perm("accounts.allocate_team_credits", tenant.team)
    assert client.delete(url).status_code == 404  # not on the team any more
    assert AuditEvent.objects.filter(action="team.member_removed").count() == 1
