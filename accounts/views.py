"""Pages: home (redirects to the user's first organization, or the one the switcher names), the
dashboard, invitations.

Tenancy: an organization page resolves the tenant from `/o/<org-slug>/` and the user's
membership; a non-member gets 404, never 403."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from decimal import Decimal
from functools import wraps

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone

from credits.analytics import daily_spend, runway_days
from credits.selectors import balance_summary, usage_list, usage_report
from portal.errors import ApplicationError, ValidationFailed

from . import services
from .audit import Actor
from .models import Organization, User
from .selectors import membership_get, organizations_for_user

DASHBOARD_DAYS = 30
ZERO = Decimal(0)


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
    """The organization the switcher asks for (`?org=<slug>`, members only), else the user's
    first organization."""
    organizations = organizations_for_user(user=request.user)
    wanted = request.GET.get("org")
    chosen = organizations.filter(slug=wanted).first() if wanted else None
    chosen = chosen or organizations.first()
    if chosen is None:
        return render(request, "accounts/no_organization.html")
    return redirect("dashboard", org=chosen.slug)


def _with_share(rows: list[dict], total: Decimal) -> list[dict]:
    """Each row with `share`, its percentage of `total` (0-100, whole number, for bars)."""
    for row in rows:
        row["share"] = int(row["cost"] * 100 / total) if total > 0 else 0
    return rows


@organization_page
def dashboard(request):
    """Balances, the daily spend of the last 30 UTC days, teams, and where the credits went."""
    now = timezone.now()
    first = now.date() - timedelta(days=DASHBOARD_DAYS - 1)
    start = datetime.combine(first, time.min, tzinfo=now.tzinfo)
    organization = request.organization
    summary = balance_summary(organization=organization, now=now)
    report = usage_report(
        organization=organization,
        period="daily",
        start=start,
        end=now + timedelta(seconds=1),
        top=8,
    )
    days = daily_spend(report["series"], first, DASHBOARD_DAYS)
    spent = report["totals"]["cost"]
    breakdowns = {name: _with_share(rows, spent) for name, rows in report["breakdowns"].items()}
    chart = {
        "labels": [d.day.isoformat() for d in days],
        "cost": [str(d.cost) for d in days],  # exact decimals; the chart parses them
        "events": [d.events for d in days],
    }
    recent = usage_list(organization=organization).order_by("-occurred_at", "-id")[:10]
    return render(
        request,
        "accounts/dashboard.html",
        {
            "summary": summary,
            "report": report,
            "breakdowns": breakdowns,
            "days": days,
            "chart": chart,
            "window_start": first,
            "peak_day": max(days, key=lambda d: d.cost) if spent > 0 else None,
            "average_daily": spent / DASHBOARD_DAYS,
            "runway_days": runway_days(summary.available, spent, DASHBOARD_DAYS),
            "allocated": summary.available - summary.pool_available,
            "recent": recent,
            "membership": request.membership,
        },
    )


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
