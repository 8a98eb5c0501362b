"""Forms of the credits pages: the usage explorer's filters, the team allocation, budgets and
the gateway's upstreams."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from decimal import Decimal

from django import forms
from django.db.models import F, Q, QuerySet

from accounts.forms import PageForm

from .models import Budget, Upstream, UsageEvent
from .reports import Identities


class UsageFilterForm(forms.Form):
    """Filters of the usage explorer; times are in the organization's time zone (the view
    activates it). Teams, keys and members offered are only those the principal may name."""

    start = forms.DateTimeField(
        label="From", required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )
    end = forms.DateTimeField(
        label="Until", required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )
    model = forms.CharField(label="Model", required=False, max_length=200)
    operation = forms.ChoiceField(
        label="Operation",
        required=False,
        choices=[("", "Any operation"), *UsageEvent.Operation.choices],
    )
    team = forms.ChoiceField(label="Team", required=False)
    key = forms.ChoiceField(label="API key", required=False)
    member = forms.ChoiceField(label="Member", required=False)
    conversation = forms.CharField(label="Conversation", required=False, max_length=255)
    min_tokens = forms.IntegerField(label="Tokens at least", required=False, min_value=0)
    max_tokens = forms.IntegerField(label="Tokens at most", required=False, min_value=0)
    min_cost = forms.DecimalField(
        label="Credits at least", required=False, min_value=0, max_digits=20, decimal_places=12
    )
    max_cost = forms.DecimalField(
        label="Credits at most", required=False, min_value=0, max_digits=20, decimal_places=12
    )
    cursor = forms.CharField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, principal, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        identities = Identities(principal)
        self.fields["team"].choices = [("", "Any team")] + [
            (t.slug, t.name) for t in principal.teams().order_by("name")
        ]
        keys = identities.key_choices()
        members = identities.member_choices()
        self.fields["key"].choices = [("", "Any key")] + keys
        self.fields["member"].choices = [("", "Any member")] + members
        # Filters on identities the principal may not name are not offered at all.
        if not keys:
            del self.fields["key"]
        if not members:
            del self.fields["member"]

    def clean_cursor(self):
        value = self.cleaned_data.get("cursor")
        if not value:
            return None
        try:
            raw = base64.urlsafe_b64decode(value.encode() + b"==").decode()
            when, pk = raw.rsplit("|", 1)
            return datetime.fromisoformat(when), int(pk)
        except (ValueError, UnicodeDecodeError, binascii.Error):
            raise forms.ValidationError(
                "This page link is not valid; start from the newest."
            ) from None

    def clean(self):
        data = super().clean()
        for low, high, what in (
            ("start", "end", "The end must be after the start."),
            ("min_tokens", "max_tokens", "The maximum must not be below the minimum."),
            ("min_cost", "max_cost", "The maximum must not be below the minimum."),
        ):
            if data.get(low) is not None and data.get(high) is not None:
                if data[high] < data[low]:
                    self.add_error(high, what)
        return data

    def filter(self, qs: QuerySet[UsageEvent]) -> QuerySet[UsageEvent]:
        """`qs` narrowed by the valid filters (call after `is_valid()`)."""
        d = self.cleaned_data
        conditions = {
            "occurred_at__gte": d.get("start"),
            "occurred_at__lt": d.get("end"),
            "operation": d.get("operation") or None,
            "team__slug": d.get("team") or None,
            "api_key_id": d.get("key") or None,
            "member_id": d.get("member") or None,
            "conversation_id": d.get("conversation") or None,
            "cost__gte": d.get("min_cost"),
            "cost__lte": d.get("max_cost"),
        }
        qs = qs.filter(**{k: v for k, v in conditions.items() if v is not None})
        if d.get("model"):
            qs = qs.filter(model__icontains=d["model"])
        if d.get("min_tokens") is not None or d.get("max_tokens") is not None:
            qs = qs.annotate(total_tokens=F("prompt_tokens") + F("completion_tokens"))
            if d.get("min_tokens") is not None:
                qs = qs.filter(total_tokens__gte=d["min_tokens"])
            if d.get("max_tokens") is not None:
                qs = qs.filter(total_tokens__lte=d["max_tokens"])
        return qs

    def after_cursor(self, qs: QuerySet[UsageEvent]) -> QuerySet[UsageEvent]:
        """The rows after the cursor, in the explorer's order (newest first, then id)."""
        cursor = self.cleaned_data.get("cursor")
        if cursor:
            when, pk = cursor
            qs = qs.filter(Q(occurred_at__lt=when) | Q(occurred_at=when, id__lt=pk))
        return qs

    @staticmethod
    def cursor_for(event: UsageEvent) -> str:
        raw = f"{event.occurred_at.isoformat()}|{event.pk}"
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


class AllocationForm(forms.Form):
    """Move credits between the pool and a team."""

    amount = forms.DecimalField(
        label="Credits",
        min_value=Decimal("0.000001"),
        max_digits=20,
        decimal_places=6,
        widget=forms.NumberInput(attrs={"step": "any", "inputmode": "decimal"}),
    )
    direction = forms.ChoiceField(
        label="Direction",
        choices=[("allocate", "Allocate from the pool"), ("reclaim", "Reclaim to the pool")],
    )
    memo = forms.CharField(label="Memo", required=False, max_length=500)
    idempotency_key = forms.CharField(required=False, max_length=255, widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)


# Budgets ----------------------------------------------------------------------------------------


def _thresholds(value: str) -> list[int] | None:
    """ "75, 90, 100" -> [75, 90, 100]; empty: None (the defaults)."""
    parts = [p.strip() for p in (value or "").replace(";", ",").split(",") if p.strip()]
    if not parts:
        return None
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise forms.ValidationError(
            "Whole percents separated by commas, e.g. 75, 90, 100."
        ) from None


class BudgetEditForm(PageForm):
    """A budget's terms (the service checks the rules: thresholds of a hard budget at most 100,
    grace only on soft budgets, ...)."""

    period = forms.ChoiceField(choices=Budget.Period.choices, initial=Budget.Period.MONTHLY)
    limit = forms.DecimalField(
        min_value=0, max_digits=28, decimal_places=12, label="Limit (credits)"
    )
    mode = forms.ChoiceField(
        choices=Budget.Mode.choices,
        initial=Budget.Mode.HARD,
        help_text="Hard refuses a request past the limit; soft allows the grace beyond it.",
    )
    grace = forms.DecimalField(
        min_value=0, max_digits=28, decimal_places=12, required=False, initial=0,
        label="Grace (credits)",
    )  # fmt: skip
    thresholds = forms.CharField(
        required=False,
        max_length=200,
        help_text="Alert at these percents of the limit, comma-separated (default 75, 90, 100).",
    )
    operation = forms.ChoiceField(
        choices=[("", "Every operation"), *UsageEvent.Operation.choices], required=False
    )
    model = forms.CharField(
        required=False,
        max_length=200,
        help_text="Only this model id, or a provider prefix ending in / (e.g. anthropic/).",
    )

    def clean_thresholds(self):
        return _thresholds(self.cleaned_data.get("thresholds", ""))


class BudgetCreateForm(BudgetEditForm):
    """A new budget: its scope and target, chosen from what the principal sees and may set."""

    scope = forms.ChoiceField(choices=Budget.Scope.choices)
    team = forms.ChoiceField(required=False, help_text="For scope Team.")
    member = forms.ChoiceField(required=False, help_text="For scope Member.")
    api_key = forms.ChoiceField(required=False, label="API key", help_text="For scope API key.")

    field_order = ["scope", "team", "member", "api_key"]

    def __init__(self, *args, scopes, teams, members, keys, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["scope"].choices = [c for c in Budget.Scope.choices if c[0] in scopes]
        for name, choices in (("team", teams), ("member", members), ("api_key", keys)):
            if choices:
                self.fields[name].choices = [("", "—"), *choices]
            else:
                del self.fields[name]

    def clean(self):
        data = super().clean()
        scope = data.get("scope")
        if scope and scope != "organization" and not data.get(scope):
            self.add_error(scope if scope in self.fields else "scope", "Choose the target.")
        return data


# Upstreams --------------------------------------------------------------------------------------


class UpstreamForm(PageForm):
    """An upstream of the gateway (`credits.services.upstreams`, which checks the rules: a
    public http(s) base URL, 1 to 600 seconds, at most 500 models). The API key is write-only:
    never rendered back; on edit a blank key keeps the stored one."""

    name = forms.CharField(label="Name", max_length=100)
    kind = forms.ChoiceField(label="Kind", choices=Upstream.Kind.choices)
    base_url = forms.CharField(
        label="Base URL",
        max_length=2000,
        help_text="The API's base, e.g. https://openrouter.ai/api/v1 or https://api.openai.com/v1"
        " (the gateway adds /chat/completions).",
        widget=forms.URLInput(attrs={"autocomplete": "url", "spellcheck": "false"}),
    )
    models = forms.CharField(
        label="Models",
        help_text="One per line: exact model ids (gpt-4o) or provider prefixes ending in / "
        "(openai/).",
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
    )
    api_key = forms.CharField(
        label="API key",
        max_length=4000,
        required=False,
        strip=False,
        help_text="Stored encrypted and never shown again.",
        widget=forms.PasswordInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    timeout = forms.IntegerField(label="Timeout (seconds)", min_value=1, max_value=600, initial=60)
    enabled = forms.BooleanField(label="Enabled", required=False, initial=True)

    def clean_models(self) -> list[str]:
        lines = self.cleaned_data["models"].replace(",", "\n").splitlines()
        return [line.strip() for line in lines if line.strip()]


class UpstreamEditForm(UpstreamForm):
    remove_api_key = forms.BooleanField(label="Remove the stored API key", required=False)

    def __init__(self, *args, key_set: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["api_key"].help_text = (
            "Leave blank to keep the stored key." if key_set else "No key is stored."
        )
        if not key_set:
            del self.fields["remove_api_key"]

    def changes(self) -> dict:
        """The service's fields: `api_key` only when a new one is given or removal is asked."""
        data = dict(self.cleaned_data)
        remove = data.pop("remove_api_key", False)
        key = data.pop("api_key", "")
        if key:
            data["api_key"] = key
        elif remove:
            data["api_key"] = ""
        return data
