"""Team pages: the list, create, the team (its facts, members and managers, the allocation
form that posts to the credits app's `team-allocate`), edit, and taking a member off.

Who may open them: members with `members:read` see every team; a team's manager (without it)
sees the teams they manage; a viewer never (404), as the teams API answers them nothing."""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.db.models import Count, Q
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.views.decorators.http import require_http_methods, require_POST

from portal.errors import ApplicationError, NotFound, PermissionDenied

from . import selectors, services
from .context_processors import may_open_teams
from .forms import TeamCreateForm, TeamMemberForm, TeamRoleForm, TeamUpdateForm, form_errors
from .models import Team, TeamMembership
from .pages import actor, confirm, organization_page, perform
from .roles import TeamRole


def _teams(principal):
    """The teams this member may open on these pages; 404 for those who may open none."""
    if not may_open_teams(principal):
        raise Http404("No such page")
    if principal.has("members:read"):
        return principal.teams()
    return principal.teams().filter(pk__in=principal.managed_team_ids)


def _team(principal, slug: str) -> Team:
    team = _teams(principal).filter(slug=slug).first()
    if team is None:
        raise Http404("No such team")
    return team


def _may_manage_members(principal, team: Team) -> bool:
    try:
        principal.check_team_members(team)
    except PermissionDenied:
        return False
    return True


def _allocation(request, team: Team) -> dict | None:
    """The allocate/reclaim form's target (the credits app's page) and the directions this
    member may take; None when they may take neither or the page does not exist."""
    directions = []
    for name, label, check in (
        ("allocate", "Allocate from the pool", request.principal.check_allocate),
        ("reclaim", "Reclaim to the pool", request.principal.check_reclaim),
    ):
        try:
            check(team)
        except PermissionDenied:
            continue
        directions.append((name, label))
    if not directions or team.funding == Team.Funding.POOL:
        return None
    try:
        url = reverse("team-allocate", kwargs={"org": request.organization.slug, "slug": team.slug})
    except NoReverseMatch:
        return None
    return {"url": url, "directions": directions, "idempotency_key": uuid.uuid4().hex}


@organization_page
def team_list(request):
    principal = request.principal
    teams = (
        _teams(principal)
        .order_by("name")
        .annotate(
            member_count=Count("memberships", distinct=True),
            manager_count=Count(
                "memberships", filter=Q(memberships__role=TeamRole.MANAGER), distinct=True
            ),
        )
    )
    return render(
        request,
        "accounts/teams.html",
        {
            "teams": teams,
            "may_create": principal.has("members:write") and principal.org_wide,
            "balances_url": _balances_url(request),
        },
    )


def _balances_url(request) -> str | None:
    """The credits app's team balances fragment (loaded by htmx), when it exists."""
    if not request.principal.has("credits:read"):
        return None
    try:
        return reverse("team-balances", kwargs={"org": request.organization.slug})
    except NoReverseMatch:
        return None


@organization_page(scope="members:write")
@require_http_methods(["GET", "POST"])
def team_create(request):
    form = TeamCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            team = services.team_create(
                organization=request.organization, actor=actor(request), **form.cleaned_data
            )
        except ApplicationError as exc:
            form_errors(form, exc)
        else:
            messages.success(request, f"Team {team.name} created.")
            return redirect("team-detail", org=request.organization.slug, slug=team.slug)
    return render(request, "accounts/team_form.html", {"form": form, "team": None})


@organization_page
def team_detail(request, slug: str):
    principal = request.principal
    team = _team(principal, slug)
    places = team.memberships.select_related("user").order_by("-role", "user__email")
    manage = _may_manage_members(principal, team)
    add_form = None
    if manage:
        add_form = TeamMemberForm(
            members=_candidates(request, team), roles=_team_roles(principal, team)
        )
    return render(
        request,
        "accounts/team_detail.html",
        {
            "team": team,
            "places": places,
            "manage": manage,
            "may_edit": principal.has("members:write") and principal.org_wide,
            "add_form": add_form,
            "roles": _team_roles(principal, team),
            "allocation": _allocation(request, team),
        },
    )


def _candidates(request, team: Team):
    """Members who may be put on `team`, for a caller who may see every member
    (`members:read`); None for a team manager, who types an e-mail address instead."""
    if not request.principal.has("members:read"):
        return None
    return (
        selectors.membership_list(organization=request.organization)
        .exclude(user__team_memberships__team=team)
        .order_by("user__email")
    )


def _team_roles(principal, team: Team):
    """Team roles this member may give: a manager (without members:write) only `member`."""
    roles = []
    for value, label in TeamRole.choices:
        try:
            principal.check_team_members(team, role=value)
        except PermissionDenied:
            continue
        roles.append((value, label))
    return roles


@organization_page(scope="members:write")
@require_http_methods(["GET", "POST"])
def team_edit(request, slug: str):
    team = _team(request.principal, slug)
    form = TeamUpdateForm(
        request.POST or None, initial={"name": team.name, "funding": team.funding}
    )
    if request.method == "POST" and form.is_valid():
        try:
            services.team_update(team=team, actor=actor(request), **form.cleaned_data)
        except ApplicationError as exc:
            form_errors(form, exc)
        else:
            messages.success(request, f"Team {form.cleaned_data['name']} saved.")
            return redirect("team-detail", org=request.organization.slug, slug=team.slug)
    return render(request, "accounts/team_form.html", {"form": form, "team": team})


@organization_page
@require_POST
def team_member_add(request, slug: str):
    """Put a member on the team or change their team role (POST from the team page)."""
    principal = request.principal
    team = _team(principal, slug)
    if not _may_manage_members(principal, team):
        raise Http404("No such page")
    members = selectors.membership_list(organization=request.organization)
    form = TeamMemberForm(
        request.POST, members=_candidates(request, team), roles=_team_roles(principal, team)
    )
    if form.is_valid():
        if "email" in form.cleaned_data:
            membership = members.filter(user__email=form.cleaned_data["email"].lower()).first()
        else:
            membership = members.filter(user_id=form.cleaned_data["member"]).first()
        role = form.cleaned_data["role"]
        try:
            if membership is None:
                raise NotFound("Not a member of this organization.", field="member")
            principal.check_team_members(team, role=role)
            services.team_member_set(
                team=team, user=membership.user, role=role, actor=actor(request)
            )
        except ApplicationError as exc:
            form_errors(form, exc)
        else:
            messages.success(request, f"{membership.user.email} is on {team.name} as {role}.")
            return redirect("team-detail", org=request.organization.slug, slug=team.slug)
    places = team.memberships.select_related("user").order_by("-role", "user__email")
    return render(
        request,
        "accounts/team_detail.html",
        {
            "team": team,
            "places": places,
            "manage": True,
            "may_edit": principal.has("members:write") and principal.org_wide,
            "add_form": form,
            "roles": _team_roles(principal, team),
            "allocation": _allocation(request, team),
        },
        status=400,
    )


def _place(team: Team, pk: int) -> TeamMembership:
    place = team.memberships.select_related("user").filter(pk=pk).first()
    if place is None:
        raise Http404("Not on this team")
    return place


@organization_page
@require_POST
def team_member_role(request, slug: str, pk: int):
    """Change a team member's team role (manager or member)."""
    principal = request.principal
    team = _team(principal, slug)
    if not _may_manage_members(principal, team):
        raise Http404("No such page")
    place = _place(team, pk)
    back = reverse("team-detail", kwargs={"org": request.organization.slug, "slug": team.slug})
    form = TeamRoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a team role.")
    else:
        role = form.cleaned_data["role"]

        def change():
            principal.check_team_members(team, role=role)
            if place.role == TeamRole.MANAGER:
                principal.check_team_members(team, role=TeamRole.MANAGER)
            services.team_member_set(team=team, user=place.user, role=role, actor=actor(request))

        done = f"{place.user.email} is now {role} of {team.name}."
        return perform(request, change, done=done, then=back)
    return redirect(back)


@organization_page
@require_http_methods(["GET", "POST"])
def team_member_remove(request, slug: str, pk: int):
    """Take a member off the team, after a confirmation step."""
    principal = request.principal
    team = _team(principal, slug)
    if not _may_manage_members(principal, team):
        raise Http404("No such page")
    place = _place(team, pk)
    back = reverse("team-detail", kwargs={"org": request.organization.slug, "slug": team.slug})
    if request.method == "GET":
        return confirm(
            request,
            title=f"Take {place.user.email} off {team.name}?",
            question=(
                f"{place.user.email} stays a member of {request.organization.name} but leaves "
                f"the team{' and its manager rights' if place.role == TeamRole.MANAGER else ''}."
            ),
            action="Take off the team",
            cancel=back,
        )

    def remove():
        if place.role == TeamRole.MANAGER:
            principal.check_team_members(team, role=TeamRole.MANAGER)
        services.team_member_remove(team=team, user=place.user, actor=actor(request))

    return perform(request, remove, done=f"{place.user.email} is off {team.name}.", then=back)
