"""Django admin is for operators (staff) only; tenant data is read-only there, and what operators
may do (disable a key, change a member's role, remove a member, revoke an invitation) are admin
actions that call the services, and so are audited."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.db import IntegrityError, transaction
from django.urls import reverse

from accounts.models import ApiKey, AuditEvent, Membership, TeamMembership, User
from accounts.roles import Role
from accounts.services import invitation_create, team_member_set

from .conftest import SYSTEM
from .factories import UserFactory

TENANT_APPS = ("accounts", "credits", "billing")


@pytest.fixture
def operator(client, db):
    user = UserFactory(email="operator@portal.test", is_staff=True, is_superuser=True)
    client.force_login(user)
    client.operator = user
    return client


def _changelist(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def _action(client, model, action: str, objs, **extra):
    data = {"action": action, "_selected_action": [o.pk for o in objs], **extra}
    return client.post(_changelist(model), data, REMOTE_ADDR="198.51.100.7")


def test_an_operator_action_disables_a_key_and_writes_an_audit_event(operator, tenant):
    key, secret = tenant.key("usage", team=tenant.team)
    response = _action(operator, ApiKey, "disable_keys", [key])
    assert response.status_code == 302, response.content[:500]
    key.refresh_from_db()
    assert key.disabled
    event = AuditEvent.objects.filter(organization=tenant.org).latest("sequence")
    assert (event.action, event.target_id) == ("key.updated", str(key.pk))
    assert event.actor_user == operator.operator
    assert event.actor_label == "operator@portal.test"
    assert event.before["disabled"] is False and event.after["disabled"] is True
    assert event.ip_address == "198.51.100.7"
    # and the key no longer authenticates
    assert tenant.client(secret).get("/api/v1/credits/balance").status_code == 401


def test_an_operator_changes_a_role_and_removes_a_member_through_the_services(operator, tenant):
    user = tenant.member(Role.MEMBER)
    membership = Membership.objects.get(organization=tenant.org, user=user)
    _action(operator, Membership, "set_role", [membership], role=Role.ADMIN)
    membership.refresh_from_db()
    assert membership.role == Role.ADMIN
    changed = AuditEvent.objects.get(organization=tenant.org, action="member.role_changed")
    assert (changed.before, changed.after) == ({"role": "member"}, {"role": "admin"})
    assert changed.actor_user == operator.operator

    team_member_set(team=tenant.team, user=user, actor=SYSTEM)
    _action(operator, Membership, "remove_members", [membership])
    assert not Membership.objects.filter(pk=membership.pk).exists()
    assert not TeamMembership.objects.filter(user=user).exists()
    removed = AuditEvent.objects.get(organization=tenant.org, action="member.removed")
    assert removed.actor_user == operator.operator


def test_the_services_rules_hold_in_admin_actions(operator, tenant):
    """The last owner can be neither demoted nor removed: the service refuses, the admin says so."""
    owner = Membership.objects.get(organization=tenant.org, user=tenant.owner)
    before = AuditEvent.objects.count()
    response = _action(operator, Membership, "set_role", [owner], role=Role.MEMBER)
    _action(operator, Membership, "remove_members", [owner])
    _action(operator, Membership, "set_role", [owner], role="")  # no role chosen
    owner.refresh_from_db()
    assert owner.role == Role.OWNER
    assert AuditEvent.objects.count() == before
    page = operator.get(response.url)
    assert "keeps at least one owner" in page.content.decode()


def test_an_operator_revokes_an_invitation(operator, tenant):
    invitation, _ = invitation_create(organization=tenant.org, email="new@acme.test", actor=SYSTEM)
    from accounts.models import Invitation

    _action(operator, Invitation, "revoke", [invitation])
    invitation.refresh_from_db()
    assert invitation.status == "revoked"
    assert AuditEvent.objects.filter(action="invitation.revoked").count() == 1


def _tenant_admins():
    return [
        (model, model_admin)
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label in TENANT_APPS and model._meta.model_name != "user"
    ]


def test_every_tenant_model_is_in_the_admin_read_only():
    names = {m._meta.label for m, _ in _tenant_admins()}
    assert {
        "accounts.Organization",
        "accounts.Team",
        "accounts.Membership",
        "accounts.TeamMembership",
        "accounts.Invitation",
        "accounts.ApiKey",
        "accounts.AuditEvent",
        "credits.LedgerAccount",
        "credits.LedgerTransaction",
        "credits.CreditLot",
        "credits.Hold",
        "credits.ModelPrice",
        "credits.UsageEvent",
        "billing.BillingProfile",
        "billing.Order",
        "billing.ProviderEvent",
        "billing.DocumentSequence",
        "billing.Invoice",
        "billing.CreditNote",
    } <= names


@pytest.mark.parametrize(
    "model_admin",
    [a for _, a in _tenant_admins()],
    ids=[m._meta.label for m, _ in _tenant_admins()],
)
def test_no_add_change_or_delete_through_admin_forms(rf, db, model_admin):
    request = rf.get("/admin/")
    request.user = UserFactory(is_staff=True, is_superuser=True)
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)
    assert "delete_selected" not in model_admin.get_actions(request)
    for inline in model_admin.get_inline_instances(request):
        assert not inline.has_add_permission(request, None)
        assert not inline.has_change_permission(request)
        assert not inline.has_delete_permission(request)


def test_the_change_form_is_read_only(operator, tenant):
    key, _ = tenant.key("usage", team=tenant.team)
    url = reverse("admin:accounts_apikey_change", args=[key.pk])
    page = operator.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert key.name in html
    assert 'name="name"' not in html and 'name="disabled"' not in html
    assert 'type="submit" value="Save"' not in html

    response = operator.post(url, {"name": "renamed", "disabled": "on", "kind": "usage"})
    assert response.status_code == 403
    key.refresh_from_db()
    assert (key.name, key.disabled) == ("usage key", False)
    assert operator.get(reverse("admin:accounts_apikey_add")).status_code == 403
    assert operator.post(reverse("admin:accounts_apikey_delete", args=[key.pk])).status_code == 403
    assert ApiKey.objects.filter(pk=key.pk, deleted_at__isnull=True).exists()


def test_organization_page_shows_members_read_only(operator, tenant):
    page = operator.get(reverse("admin:accounts_organization_change", args=[tenant.org.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert tenant.owner.email in html
    assert 'name="memberships-0-role"' not in html


def test_staff_without_the_change_permission_may_look_but_not_act(client, tenant):
    viewer = UserFactory(email="junior@portal.test", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_apikey"))
    client.force_login(viewer)
    key, _ = tenant.key("usage", team=tenant.team)
    assert client.get(_changelist(ApiKey)).status_code == 200
    _action(client, ApiKey, "disable_keys", [key])
    key.refresh_from_db()
    assert not key.disabled
    assert not AuditEvent.objects.filter(action="key.updated").exists()


@pytest.mark.parametrize("path", ["/admin/", "/admin/accounts/apikey/", "/admin/credits/hold/"])
def test_a_member_who_is_not_staff_cannot_reach_the_admin(client, tenant, path):
    client.force_login(tenant.owner)
    response = client.get(path)
    assert response.status_code == 302
    assert response.url.startswith("/admin/login/")


def test_a_non_staff_action_post_changes_nothing(client, tenant):
    client.force_login(tenant.owner)
    key, _ = tenant.key("usage", team=tenant.team)
    response = _action(client, ApiKey, "disable_keys", [key])
    assert response.status_code == 302 and response.url.startswith("/admin/login/")
    key.refresh_from_db()
    assert not key.disabled


def test_an_operator_cannot_give_a_user_another_case_of_someone_elses_e_mail(operator, tenant):
    viewer = tenant.member(Role.VIEWER, email="viewer@acme.test")
    url = reverse("admin:accounts_user_change", args=[viewer.pk])
    form = {"email": "OWNER@acme.test", "first_name": "", "last_name": "", "is_active": "on",
            "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00"}  # fmt: skip
    response = operator.post(url, form)
    assert response.status_code == 200  # the form again, with its error
    assert "A user with this e-mail address exists." in response.content.decode()
    viewer.refresh_from_db()
    assert viewer.email == "viewer@acme.test"

    operator.post(url, {**form, "email": "Viewer.New@ACME.test"})
    viewer.refresh_from_db()
    assert viewer.email == "viewer.new@acme.test"  # as the services keep e-mails
    with pytest.raises(IntegrityError), transaction.atomic():  # and the database, whatever path
        User.objects.filter(pk=viewer.pk).update(email="OWNER@ACME.TEST")
