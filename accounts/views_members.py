"""Member pages: members with their roles, role changes (the hierarchy of
`Principal.check_role_change`), removal after a confirmation step; invitations: invite
(`check_invite`), the pending ones, resend, revoke after a confirmation step.

Only roles with `members:read` open them (a member or a viewer gets 404: they see no other
member's e-mail); writes need `members:write`."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from portal.errors import ApplicationError, PermissionDenied, ValidationFailed

from . import selectors, services
from .forms import InvitationForm, MemberRoleForm, form_errors
from .models import Invitation, Membership
from .pages import actor, confirm, organization_page, perform, throttled
from .roles import Role, TeamRole


def _roles_for(principal, membership: Membership) -> list[tuple[str, str]]:
    """The roles `principal` may give `membership` (its current one first), or [] for none."""
    allowed = []
    for value, label in Role.choices:
        if value == membership.role:
            continue
        try:
            principal.check_role_change(membership, value)
        except PermissionDenied:
            continue
        allowed.append((value, label))
    if not allowed:
        return []
    return [(membership.role, membership.get_role_display())] + allowed


def _may_remove(principal, membership: Membership) -> bool:
    if principal.user is not None and membership.user_id == principal.user.pk:
        return False  # leaving is not done from here
    try:
        principal.check_role_change(membership, None)
    except PermissionDenied:
        return False
    return True


def _invite_roles(principal) -> list[tuple[str, str]]:
    roles = []
    for value, label in Role.choices:
        try:
            principal.check_invite(value)
        except PermissionDenied:
            continue
        roles.append((value, label))
    return roles


def _membership(request, pk: int) -> Membership:
    membership = selectors.membership_list(organization=request.organization).filter(pk=pk).first()
    if membership is None:
        raise Http404("No such member")
    return membership


def _invitation(request, pk: int) -> Invitation:
    invitation = selectors.invitation_list(organization=request.organization).filter(pk=pk).first()
    if invitation is None:
        raise Http404("No such invitation")
    return invitation


@organization_page(scope="members:read")
def member_list(request):
    principal = request.principal
    may_write = principal.has("members:write")
    memberships = selectors.membership_list(organization=request.organization).order_by(
        "user__email"
    )
    rows = [
        {
            "membership": m,
            "roles": _roles_for(principal, m) if may_write else [],
            "may_remove": may_write and _may_remove(principal, m),
        }
        for m in memberships
    ]
    pending = [
        i
        for i in selectors.invitation_list(organization=request.organization).filter(
            accepted_at__isnull=True, revoked_at__isnull=True
        )
    ]
    return render(
        request,
        "accounts/members.html",
        {"rows": rows, "invitations": pending, "may_write": may_write, "now": timezone.now()},
    )


@organization_page(scope="members:write")
@require_POST
def member_role(request, pk: int):
    membership = _membership(request, pk)
    back = reverse("members", kwargs={"org": request.organization.slug})
    form = MemberRoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose one of the roles.")
    elif form.cleaned_data["role"] == membership.role:
        messages.info(request, f"{membership.user.email} is {membership.role} already.")
    else:
        role = form.cleaned_data["role"]

        def change():
            request.principal.check_role_change(membership, role)
            services.membership_role_set(membership=membership, role=role, actor=actor(request))

        done = f"{membership.user.email} is now {role}."
        return perform(request, change, done=done, then=back)
    return redirect(back)


@organization_page(scope="members:write")
@require_http_methods(["GET", "POST"])
def member_remove(request, pk: int):
    membership = _membership(request, pk)
    back = reverse("members", kwargs={"org": request.organization.slug})
    if request.method == "GET":
        return confirm(
            request,
            title=f"Remove {membership.user.email}?",
            question=(
                f"{membership.user.email} loses access to {request.organization.name}, their "
                "team places and manager rights. Their keys stop working for them."
            ),
            action="Remove the member",
            cancel=back,
        )

    def remove():
        request.principal.check_role_change(membership, None)
        services.membership_remove(membership=membership, actor=actor(request))

    return perform(request, remove, done=f"{membership.user.email} was removed.", then=back)


@organization_page(scope="members:write")
@require_http_methods(["GET", "POST"])
def member_invite(request):
    principal = request.principal
    teams = principal.teams().order_by("name")
    form = InvitationForm(request.POST or None, teams=teams)
    form.fields["role"].choices = _invite_roles(principal)
    if request.method == "POST" and (refused := throttled(request, "invitations")):
        return refused
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            principal.check_invite(data["role"])
            team = None
            if data["team"]:
                team = teams.filter(slug=data["team"]).first()
                if team is None:
                    raise ValidationFailed({"team": ["No such team."]})
            invitation, _token = services.invitation_create(
                organization=request.organization,
                email=data["email"],
                role=data["role"],
                team=team,
                team_role=data["team_role"] or TeamRole.MEMBER,
                actor=actor(request),
            )
        except ApplicationError as exc:
            form_errors(form, exc)
        else:
            messages.success(request, f"Invitation sent to {invitation.email}.")
            return redirect("members", org=request.organization.slug)
    return render(request, "accounts/member_invite.html", {"form": form})


@organization_page(scope="members:write")
@require_POST
def invitation_resend(request, pk: int):
    invitation = _invitation(request, pk)
    return perform(
        request,
        lambda: services.invitation_resend(invitation=invitation, actor=actor(request)),
        done=f"Invitation sent again to {invitation.email}.",
        then=reverse("members", kwargs={"org": request.organization.slug}),
    )


@organization_page(scope="members:write")
@require_http_methods(["GET", "POST"])
def invitation_revoke(request, pk: int):
    invitation = _invitation(request, pk)
    back = reverse("members", kwargs={"org": request.organization.slug})
    if request.method == "GET":
        return confirm(
            request,
            title=f"Revoke the invitation of {invitation.email}?",
            question="Its link stops working. You can invite the address again later.",
            action="Revoke the invitation",
            cancel=back,
        )
    return perform(
        request,
        lambda: services.invitation_revoke(invitation=invitation, actor=actor(request)),
        done=f"The invitation of {invitation.email} was revoked.",
        then=back,
    )
