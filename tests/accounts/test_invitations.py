"""Invitations through the services: a signed, expiring, single-use token; the invited role and
team role; the e-mail with the accept link, sent only after the write commits."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import transaction
from django.utils import timezone
from guardian.shortcuts import get_perms

from accounts.models import AuditEvent, Invitation, Membership, TeamMembership
from accounts.roles import Role, TeamRole
from accounts.services import (
    invitation_accept,
    invitation_create,
    invitation_from_token,
    invitation_revoke,
    invitation_token,
)
from accounts.tasks import invitation_send, invitations_sweep
from portal.errors import Conflict, NotFound, PermissionDenied, ValidationFailed

from ..conftest import SYSTEM
from ..factories import UserFactory

LINK_RE = re.compile(r"https?://\S+/invitations/(?P<token>[^/\s]+)/")


def invite(tenant, email="new@example.test", **kwargs):
    return invitation_create(organization=tenant.org, email=email, actor=SYSTEM, **kwargs)


def test_accept_gives_the_invited_role_and_team_role(tenant):
    invitation, token = invite(
        tenant,
        email="Ada@Example.test",
        role=Role.ADMIN,
        team=tenant.team,
        team_role=TeamRole.MANAGER,
    )
    assert invitation.email == "ada@example.test"  # e-mails are compared lower-case
    user = UserFactory(email="ada@example.test")

    membership = invitation_accept(token=token, user=user, actor=SYSTEM)

    assert membership.role == Role.ADMIN
    assert Membership.objects.get(organization=tenant.org, user=user).role == Role.ADMIN
    assert TeamMembership.objects.get(team=tenant.team, user=user).role == TeamRole.MANAGER
    assert "view_team_usage" in get_perms(user, tenant.team)  # a manager's object permissions
    invitation.refresh_from_db()
    assert invitation.status == "accepted" and invitation.accepted_by == user
    assert AuditEvent.objects.filter(organization=tenant.org, action="member.added").exists()


def test_accept_without_team_and_with_the_default_role(tenant):
    _, token = invite(tenant, email="bo@example.test")
    user = UserFactory(email="bo@example.test")
    assert invitation_accept(token=token, user=user, actor=SYSTEM).role == Role.MEMBER
    assert not TeamMembership.objects.filter(user=user).exists()


def test_a_token_is_single_use(tenant):
    _, token = invite(tenant)
    user = UserFactory(email="new@example.test")
    invitation_accept(token=token, user=user, actor=SYSTEM)
    with pytest.raises(ValidationFailed, match="accepted"):
        invitation_accept(token=token, user=user, actor=SYSTEM)
    with pytest.raises(ValidationFailed, match="accepted"):
        invitation_from_token(token)
    assert Membership.objects.filter(organization=tenant.org, user=user).count() == 1


def test_an_expired_invitation_is_refused(tenant):
    invitation, token = invite(tenant)
    Invitation.objects.filter(pk=invitation.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    user = UserFactory(email="new@example.test")
    with pytest.raises(ValidationFailed, match="expired"):
        invitation_accept(token=token, user=user, actor=SYSTEM)
    assert not Membership.objects.filter(organization=tenant.org, user=user).exists()


def test_invitations_expire_after_the_configured_age(tenant, settings):
    settings.INVITATION_MAX_AGE = timedelta(days=2)
    before = timezone.now()
    invitation, _ = invite(tenant)
    assert before + timedelta(days=2) <= invitation.expires_at <= timezone.now() + timedelta(days=2)


def test_a_revoked_invitation_is_refused(tenant):
    invitation, token = invite(tenant)
    invitation_revoke(invitation=invitation, actor=SYSTEM)
    with pytest.raises(ValidationFailed, match="revoked"):
        invitation_accept(token=token, user=UserFactory(email="new@example.test"), actor=SYSTEM)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # the signature
        lambda t: "x" + t[1:],  # the payload
        lambda t: "",
        lambda t: "not-a-token",
    ],
)
def test_a_tampered_token_is_refused(tenant, tamper):
    _, token = invite(tenant)
    user = UserFactory(email="new@example.test")
    with pytest.raises(NotFound):
        invitation_accept(token=tamper(token), user=user, actor=SYSTEM)
    assert not Membership.objects.filter(organization=tenant.org, user=user).exists()


def test_a_token_signed_for_another_nonce_is_refused(tenant):
    """A token whose signature is valid but whose nonce changed (the row was re-keyed)."""
    invitation, token = invite(tenant)
    Invitation.objects.filter(pk=invitation.pk).update(nonce="0" * 32)
    with pytest.raises(NotFound):
        invitation_from_token(token)


def test_accept_with_another_email_is_refused(tenant):
    invitation, token = invite(tenant, email="invited@example.test")
    intruder = UserFactory(email="intruder@example.test")
    with pytest.raises(PermissionDenied):
        invitation_accept(token=token, user=intruder, actor=SYSTEM)
    assert not Membership.objects.filter(organization=tenant.org, user=intruder).exists()
    invitation.refresh_from_db()
    assert invitation.status == "pending"  # the invited person can still accept


def test_inviting_a_member_is_a_conflict(tenant):
    with pytest.raises(Conflict):
        invite(tenant, email=tenant.owner.email)


def test_a_team_of_another_organization_is_refused(tenant, other_tenant):
    with pytest.raises(NotFound):
        invite(tenant, team=other_tenant.team)


def test_the_email_is_sent_after_commit_with_the_accept_link(
    tenant, mailoutbox, settings, django_capture_on_commit_callbacks
):
    settings.PORTAL_BASE_URL = "https://portal.example.test"
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        invitation, token = invite(tenant, role=Role.BILLING)
        assert mailoutbox == []  # nothing leaves before the commit
    assert len(callbacks) == 1
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.to == ["new@example.test"]
    assert tenant.org.name in mail.subject
    assert "Billing" in mail.body
    link = LINK_RE.search(mail.body)
    assert link and link.group(0).startswith("https://portal.example.test/invitations/")
    assert link.group("token") == token
    assert invitation_from_token(link.group("token")) == invitation


def test_no_email_when_the_write_rolls_back(tenant, mailoutbox, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError), transaction.atomic():
            invite(tenant)
            raise RuntimeError("rolled back")
    assert callbacks == [] and mailoutbox == []
    assert not Invitation.objects.filter(email="new@example.test").exists()


def test_the_token_is_the_same_whenever_it_is_made(tenant):
    """The e-mail is built after commit, maybe seconds later: its link must be the token the
    API answered (a token that signed the time would differ across a second)."""
    with time_machine.travel(datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC), tick=False):
        invitation, token = invite(tenant)
    with time_machine.travel(datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC), tick=False):
        assert invitation_token(invitation) == token


def test_an_email_whose_queueing_was_lost_is_sent_by_the_sweep_once(tenant, mailoutbox):
    """The task queued after commit never ran (a broker that was down: `robust` on_commit logs
    it): the row still wants its e-mail, and the sweep sends it a minute later, once."""
    invitation, token = invite(tenant)  # the test's transaction never commits: nothing queued
    assert mailoutbox == []
    assert invitations_sweep() == 0  # not a minute old yet: the queued task may still run
    later = timezone.now() + timedelta(minutes=2)
    with time_machine.travel(later, tick=False):
        assert invitations_sweep() == 1
        assert invitations_sweep() == 0
    assert len(mailoutbox) == 1 and token in mailoutbox[0].body
    invitation.refresh_from_db()
    assert invitation.email_wanted_at is None and invitation.emailed_at == later


def test_the_task_and_the_sweep_never_both_send(
    tenant, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        invitation, _ = invite(tenant)
    assert len(mailoutbox) == 1
    assert invitation_send(invitation.pk) is False  # a task sent twice: nothing more
    with time_machine.travel(timezone.now() + timedelta(minutes=2), tick=False):
        assert invitations_sweep() == 0
    revoked, _ = invite(tenant, email="other@example.test")
    invitation_revoke(invitation=revoked, actor=SYSTEM)
    with time_machine.travel(timezone.now() + timedelta(minutes=2), tick=False):
        assert invitations_sweep() == 0  # a revoked invitation's e-mail is not wanted any more
    assert len(mailoutbox) == 1
