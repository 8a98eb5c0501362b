"""Forms of the accounts pages. They check the shape of the input; the rules are the services'
and `accounts.access.Principal`'s, whose errors `form_errors` puts onto the form's fields."""

from __future__ import annotations

import zoneinfo
from datetime import datetime

from django import forms
from django.utils import timezone

from portal.errors import ApplicationError, ValidationFailed

from .models import ApiKey, Team
from .roles import SCOPES, KeyKind, Role, TeamRole
from .services import CURRENCIES

# Service field names that a form calls differently.
FIELD_ALIASES = {"user": "member", "expires_at": "expires_at", "non_field_errors": None}


class PageForm(forms.Form):
    """Rendered with `{% include "accounts/_form.html" %}` (each field in a `.field` box). No
    colon after labels; Django (5.2) links each field's errors and help text to it with
    `aria-describedby` and renders checkbox groups as a fieldset with a legend."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)


def form_errors(form: forms.Form, exc: ApplicationError) -> None:
    """Put a service's or the permission layer's error onto `form`: each field's messages of a
    ValidationFailed on that field (else on the form), a Conflict naming a field on it, any other
    error (PermissionDenied, NotFound) on the form."""
    if isinstance(exc, ValidationFailed):
        for field, messages in exc.metadata.get("errors", {}).items():
            field = FIELD_ALIASES.get(field, field)
            target = field if field in form.fields else None
            for message in messages:
                form.add_error(target, message)
        return
    field = exc.metadata.get("field")
    form.add_error(field if field in form.fields else None, exc.message)


# Teams ------------------------------------------------------------------------------------------


class TeamCreateForm(PageForm):
    name = forms.CharField(max_length=200)
    slug = forms.SlugField(
        max_length=50,
        help_text="Lowercase letters, digits and hyphens; the team's id in URLs and the API.",
    )
    funding = forms.ChoiceField(
        choices=Team.Funding.choices,
        initial=Team.Funding.ALLOCATION,
        help_text="Own allocation: the team spends what is allocated to it. "
        "Organization pool: it spends the pool directly.",
    )


class TeamUpdateForm(PageForm):
    name = forms.CharField(max_length=200)
    funding = forms.ChoiceField(choices=Team.Funding.choices)


class TeamMemberForm(PageForm):
    """Put an organization member on the team, or change their team role. Chosen from a list
    when the caller may see every member (`members:read`); else (a team manager) typed as an
    e-mail address, as the API takes it, so that the page names nobody the caller cannot see."""

    member = forms.ChoiceField(label="Member")
    email = forms.EmailField(label="Member's e-mail")
    role = forms.ChoiceField(label="Team role", choices=TeamRole.choices, initial=TeamRole.MEMBER)

    def __init__(self, *args, members=None, roles=TeamRole.choices, **kwargs):
        super().__init__(*args, **kwargs)
        if members is None:
            del self.fields["member"]
        else:
            del self.fields["email"]
            self.fields["member"].choices = [("", "Choose a member")] + [
                (str(m.user_id), m.user.email) for m in members
            ]
        self.fields["role"].choices = roles


class TeamRoleForm(PageForm):
    role = forms.ChoiceField(label="Team role", choices=TeamRole.choices)


# Members and invitations ------------------------------------------------------------------------


class MemberRoleForm(PageForm):
    role = forms.ChoiceField(label="Role", choices=Role.choices)


class InvitationForm(PageForm):
    email = forms.EmailField(label="E-mail")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)
    team = forms.ChoiceField(label="Team (optional)", required=False)
    team_role = forms.ChoiceField(
        label="Team role",
        choices=TeamRole.choices,
        initial=TeamRole.MEMBER,
        required=False,
        help_text="On the team chosen above.",
    )

    def __init__(self, *args, teams=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].choices = [("", "No team")] + [(t.slug, t.name) for t in teams]


# API keys ---------------------------------------------------------------------------------------


class DateTimeLocalInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self, attrs=None):
        super().__init__(attrs, format="%Y-%m-%dT%H:%M")


class KeyFormMixin(forms.Form):
    limit = forms.DecimalField(
        label="Credit limit (optional)",
        required=False,
        min_value=0,
        max_digits=28,
        decimal_places=12,
        help_text="Credits (USD) the key may spend per reset period, or in total. Empty: no limit.",
    )
    limit_reset = forms.ChoiceField(
        label="Limit resets",
        required=False,
        choices=[("", "Never (a total limit)")] + list(ApiKey.LimitReset.choices),
    )
    expires_at = forms.DateTimeField(
        label="Expires (optional)",
        required=False,
        widget=DateTimeLocalInput(),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d"],
    )
    scopes = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Exactly what the key may do: within your own role's scopes and its kind's.",
    )

    def set_scope_choices(self, allowed) -> None:
        self.fields["scopes"].choices = [
            (scope, f"{scope}: {text}") for scope, text in SCOPES.items() if scope in allowed
        ]

    def set_time_zone(self, name: str) -> None:
        self.time_zone = zoneinfo.ZoneInfo(name)
        self.fields["expires_at"].help_text = f"In the organization's time zone ({name})."

    def clean_expires_at(self):
        value = self.cleaned_data.get("expires_at")
        if value is None:
            return None
        if timezone.is_aware(value):
            value = value.replace(tzinfo=None)
        value = datetime.combine(value.date(), value.time(), tzinfo=self.time_zone)
        if value <= timezone.now():
            raise forms.ValidationError("Must be in the future.")
        return value


class KeyCreateForm(PageForm, KeyFormMixin):
    name = forms.CharField(max_length=200, help_text="What the key is for, e.g. 'CI runner'.")
    kind = forms.ChoiceField(
        choices=KeyKind.choices,
        initial=KeyKind.USAGE,
        help_text="Usage keys spend credits on requests; management keys administer the "
        "organization through the API.",
    )
    team = forms.ChoiceField(label="Team (optional)", required=False)
    member = forms.ChoiceField(label="Acts for member (optional)", required=False)

    field_order = ["name", "kind", "team", "member", "scopes", "limit", "limit_reset"]

    def __init__(self, *args, kinds=KeyKind.choices, teams=(), members=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["kind"].choices = kinds
        self.fields["team"].choices = [("", "No team")] + [(t.slug, t.name) for t in teams]
        if members is None:
            del self.fields["member"]
        else:
            self.fields["member"].choices = [("", "No member")] + [
                (m.user.email, m.user.email) for m in members
            ]
            self.fields[
                "member"
            ].help_text = "The key never does more than this member's role allows."


class KeyUpdateForm(PageForm, KeyFormMixin):
    name = forms.CharField(max_length=200)

    field_order = ["name", "scopes", "limit", "limit_reset", "expires_at"]


# Organization settings --------------------------------------------------------------------------


def _time_zone_choices():
    return [(name, name) for name in sorted(zoneinfo.available_timezones())]


class OrganizationForm(PageForm):
    name = forms.CharField(max_length=200)
    billing_email = forms.EmailField(
        label="Billing e-mail", required=False, help_text="Where invoices and receipts go."
    )
    billing_address = forms.CharField(
        label="Billing address", required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
    tax_id = forms.CharField(label="Tax ID", max_length=64, required=False)
    currency = forms.ChoiceField(
        choices=[(c, c) for c in CURRENCIES],
        help_text="For invoices and statements; credits are always counted in USD.",
    )
    time_zone = forms.ChoiceField(
        label="Time zone",
        choices=_time_zone_choices,
        help_text="Budget windows, statements and pages count days in it.",
    )


# Audit log --------------------------------------------------------------------------------------


class AuditFilterForm(PageForm):
    actor = forms.CharField(label="Actor", required=False, max_length=254)
    action = forms.ChoiceField(label="Action", required=False)
    target = forms.CharField(
        label="Target", required=False, max_length=254, help_text="Type, id or name, e.g. team."
    )
    since = forms.DateField(
        label="From", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        label="To", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )

    def __init__(self, *args, actions=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["action"].choices = [("", "Any action")] + [(a, a) for a in actions]

    def clean(self):
        data = super().clean()
        if data.get("since") and data.get("until") and data["until"] < data["since"]:
            self.add_error("until", "The end comes before the start.")
        return data
