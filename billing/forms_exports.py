"""The exports page's form: the usage explorer's filters (`credits.forms.UsageFilterForm`, times
in the organization's time zone), what to export and how."""

from __future__ import annotations

from django import forms

from accounts.models import ApiKey, User
from credits.forms import UsageFilterForm
from credits.models import LedgerTransaction
from credits.selectors import accounts_visible

from .exports import FORMATS, ExportFilters
from .models import ExportJob


class ExportForm(UsageFilterForm):
    """Kind, format, pseudonymize, and the filters: the explorer's for usage, the period, an
    account and a transaction kind for the ledger (accounts offered: those the principal sees)."""

    kind = forms.ChoiceField(label="History", choices=ExportJob.Kind.choices, initial="usage")
    format = forms.ChoiceField(label="Format", choices=ExportJob.Format.choices, initial="csv")
    pseudonymize = forms.BooleanField(
        label="Pseudonymize members and keys",
        required=False,
        help_text="member-… and key-… instead of e-mails and key names; the same person gets "
        "the same pseudonym in every export of this organization.",
    )
    account = forms.ChoiceField(label="Ledger account", required=False)
    transaction_kind = forms.ChoiceField(
        label="Transaction kind",
        required=False,
        choices=[("", "Any kind"), *LedgerTransaction.Kind.choices],
    )

    field_order = ["kind", "format", "start", "end"]

    def __init__(self, *args, principal, **kwargs):
        super().__init__(*args, principal=principal, **kwargs)
        self.principal = principal
        del self.fields["cursor"]
        accounts = accounts_visible(principal).order_by("kind", "team__name", "id")
        self.fields["account"].choices = [("", "Every account")] + [
            (str(a.pk), a.get_kind_display() + (f" · {a.team.name}" if a.team_id else ""))
            for a in accounts
        ]
        self.order_fields(self.field_order)

    GROUPS = (
        ("What and when", ("kind", "format", "start", "end")),
        ("Usage filters", ("model", "operation", "team", "key", "member", "conversation",
                           "min_tokens", "max_tokens", "min_cost", "max_cost")),
        ("Ledger filters", ("account", "transaction_kind")),
    )  # fmt: skip

    def groups(self) -> list[tuple[str, list]]:
        """The visible fields by group (a fieldset each), those the form has."""
        return [
            (legend, [self[name] for name in names if name in self.fields])
            for legend, names in self.GROUPS
        ]

    def clean(self):
        data = super().clean()
        kind, fmt = data.get("kind"), data.get("format")
        if kind and fmt and fmt not in FORMATS[kind]:
            self.add_error("format", f"A {kind} export is one of: {', '.join(FORMATS[kind])}.")
        if kind and not self.principal.has({"usage": "usage:read"}.get(kind, "credits:read")):
            self.add_error("kind", "Your role cannot read this history.")
        return data

    def export_filters(self) -> ExportFilters:
        """The valid filters as `ExportFilters` (members by e-mail, keys by hash; for the
        ledger only the period, the account and the transaction kind)."""
        d = self.cleaned_data
        values = {"start": d.get("start"), "end": d.get("end")}
        if d["kind"] == ExportJob.Kind.LEDGER:
            values["account"] = int(d["account"]) if d.get("account") else None
            values["transaction_kind"] = d.get("transaction_kind") or ""
            return ExportFilters(**values)
        organization = self.principal.organization
        if d.get("member"):
            values["member"] = User.objects.get(pk=d["member"]).email
        if d.get("key"):
            values["key"] = ApiKey.objects.get(organization=organization, pk=d["key"]).hash
        for name in ("team", "model", "operation", "conversation"):
            values[name] = d.get(name) or ""
        for name in ("min_tokens", "max_tokens", "min_cost", "max_cost"):
            values[name] = d.get(name)
        return ExportFilters(**values)
