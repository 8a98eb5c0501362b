"""Pages: home (redirects to the user's first organization), the dashboard, invitations.

Tenancy: an organization page resolves the tenant from `/o/<org-slug>/` and the user's
membership; a non-member gets 404, never 403."""

from __future__ import annotations

from functools import wraps

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse

from credits.selectors import balance_summary, usage_report
from portal.errors import ApplicationError

from . import services
from .audit import Actor
from .models import Organization
from .selectors import membership_get, organizations_for_user


def organization_page(view):
    """Resolve `org` from the URL and the user's membership (404 for non-members)."""

    @login_required
    @wraps(view)
    def wrapper(request, org: str, *args, **kwargs):
        organization = Organization.objects.filter(slug=org).first()
        membership = organization and membership_get(organization=organization, user=request.user)
        if not membership:
            raise Http404("No such organization")
        request.organization, request.membership = organization, membership
        return view(request, *args, **kwargs)

    return wrapper


@login_required
def home(request):
    first = organizations_for_user(user=request.user).first()
    if first is None:
        return render(request, "accounts/no_organization.html")
    return redirect("dashboard", org=first.slug)


@organization_page
def dashboard(request):
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    summary = balance_summary(organization=request.organization)
    report = usage_report(organization=request.organization, period="daily",
                          start=now - timedelta(days=30), end=now + timedelta(seconds=1), top=8)
    return render(request, "accounts/dashboard.html",
                  {"summary": summary, "report": report, "membership": request.membership})


class AcceptForm(forms.Form):
    name = forms.CharField(max_length=150, required=False)
    password = forms.CharField(widget=forms.PasswordInput, required=False)


def invitation_accept(request, token: str):
    """Accept an invitation: a signed-in user with the invited e-mail accepts; a new person
    sets a password first."""
    try:
        invitation = services.invitation_from_token(token)
    except ApplicationError as exc:
        return render(request, "accounts/invitation_invalid.html", {"error": exc.message},
                      status=400 if exc.status_code != 404 else 404)
    from .models import User

    if not request.user.is_authenticated and User.objects.filter(email=invitation.email).exists():
        messages.info(request, f"Log in as {invitation.email} to accept the invitation.")
        return redirect(f"{reverse(settings.LOGIN_URL)}?next={request.path}")
    form = AcceptForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = request.user if request.user.is_authenticated else services.user_get_or_create(
                email=invitation.email, password=form.cleaned_data["password"] or None,
                name=form.cleaned_data["name"])
            services.invitation_accept(token=token, user=user, actor=Actor(user=user))
        except ApplicationError as exc:
            messages.error(request, exc.message)
        else:
            if not request.user.is_authenticated:
                login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect("dashboard", org=invitation.organization.slug)
    return render(request, "accounts/invitation_accept.html",
                  {"invitation": invitation, "form": form})
