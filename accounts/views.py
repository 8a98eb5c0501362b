"""Pages: home (redirects to the user's first organization, or the one the switcher names),
invitations (the dashboard is `credits.views.dashboard`).

Tenancy: an organization page resolves the tenant from `/o/<org-slug>/` and the user's
membership; a non-member gets 404, never 403."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.shortcuts import redirect, render
from django.urls import reverse

from portal.errors import ApplicationError, ValidationFailed

from . import services
from .audit import Actor
from .models import User
from .selectors import organizations_for_user


@login_required
def home(request):
    """The organization the switcher asks for (`?org=<slug>`, members only), else the user's
    first organization."""
    organizations = organizations_for_user(user=request.user)
    wanted = request.GET.get("org")
    chosen = organizations.filter(slug=wanted).first() if wanted else None
    chosen = chosen or organizations.first()
    if chosen is None:
        return render(request, "accounts/no_organization.html")
    return redirect("dashboard", org=chosen.slug)


class AcceptForm(forms.Form):
    """What a person new to the portal gives to accept: a name and a password."""

    name = forms.CharField(max_length=150, required=False, label="Your name")
    password = forms.CharField(
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        label="Choose a password",
    )
    password_confirm = forms.CharField(
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        label="Repeat the password",
    )

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)

    def clean(self):
        data = super().clean()
        if data.get("password") and data.get("password") != data.get("password_confirm"):
            self.add_error("password_confirm", "The two passwords differ.")
        return data


def _accept(*, token: str, invitation, request, form: AcceptForm | None) -> User:
    """Create the user if new, then accept, in one transaction (no orphan user on failure)."""
    with transaction.atomic():
        if request.user.is_authenticated:
            user = request.user
        else:
            user = services.user_get_or_create(
                email=invitation.email,
                password=form.cleaned_data["password"],
                name=form.cleaned_data["name"],
            )
        services.invitation_accept(token=token, user=user, actor=Actor(user=user))
    return user


def invitation_accept(request, token: str):
    """Accept an invitation. A signed-in user with the invited e-mail accepts with one click;
    someone with an account logs in first; a new person sets a password. Lands on the
    organization's dashboard."""
    try:
        invitation = services.invitation_from_token(token)
    except ApplicationError as exc:
        return render(
            request,
            "accounts/invitation_invalid.html",
            {"error": exc.message},
            status=exc.status_code,
        )
    signed_in = request.user.is_authenticated
    if not signed_in and User.objects.filter(email__iexact=invitation.email).exists():
        messages.info(request, f"Log in as {invitation.email} to accept the invitation.")
        return redirect(f"{reverse(settings.LOGIN_URL)}?next={request.path}")
    wrong_user = signed_in and request.user.email.lower() != invitation.email
    form = None if signed_in else AcceptForm(request.POST or None)
    if request.method == "POST" and not wrong_user and (form is None or form.is_valid()):
        try:
            user = _accept(token=token, invitation=invitation, request=request, form=form)
        except ValidationFailed as exc:
            errors = exc.metadata.get("errors", {})
            if form is not None and "password" in errors:
                for message in errors["password"]:
                    form.add_error("password", message)
            else:
                messages.error(request, exc.message)
        except ApplicationError as exc:
            messages.error(request, exc.message)
        else:
            if not signed_in:
                login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            messages.success(request, f"Welcome to {invitation.organization.name}.")
            return redirect("dashboard", org=invitation.organization.slug)
    return render(
        request,
        "accounts/invitation_accept.html",
        {"invitation": invitation, "form": form, "wrong_user": wrong_user},
    )
