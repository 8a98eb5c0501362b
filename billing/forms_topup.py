"""The form of the automatic top-up page; the rules are checked by `topup_rule_set`."""

from __future__ import annotations

from django import forms


class TopUpRuleForm(forms.Form):
    MODES = (("amount", "A fixed amount"), ("target", "Up to a target balance"))

    enabled = forms.BooleanField(
        required=False,
        label="Top up automatically",
        help_text="Needs a saved card.",
    )
    threshold = forms.DecimalField(
        label="When the available balance falls below (credits)",
        min_value=0,
        decimal_places=2,
        max_digits=14,
    )
    mode = forms.ChoiceField(
        label="Top up by", choices=MODES, widget=forms.RadioSelect, initial="amount"
    )
    amount = forms.DecimalField(
        label="Fixed amount (USD = credits)",
        required=False,
        min_value=0,
        decimal_places=2,
        max_digits=14,
    )
    target_balance = forms.DecimalField(
        label="Target balance (credits): the whole shortfall in one charge",
        required=False,
        min_value=0,
        decimal_places=2,
        max_digits=14,
    )
    monthly_cap = forms.DecimalField(
        label="Monthly cap (USD charged per calendar month, tax included)",
        min_value=0,
        decimal_places=2,
        max_digits=14,
    )
    requires_approval = forms.BooleanField(
        required=False,
        label="A billing member approves each top-up first",
    )

    def clean(self):
        data = super().clean()
        wanted = "amount" if data.get("mode") == "amount" else "target_balance"
        if data.get("mode") and data.get(wanted) is None and wanted not in self.errors:
            self.add_error(wanted, "Required for this choice.")
        return data

    def rule_values(self) -> dict:
        data = self.cleaned_data
        fixed = data["mode"] == "amount"
        return {
            "enabled": data["enabled"],
            "threshold": data["threshold"],
            "amount": data["amount"] if fixed else None,
            "target_balance": None if fixed else data["target_balance"],
            "monthly_cap": data["monthly_cap"],
            "requires_approval": data["requires_approval"],
        }
