"""The buy-credits form: a pack (settings.BILLING_PACKS) or a custom amount within
BILLING_PURCHASE_MIN and _MAX, and the payment provider."""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.conf import settings

from accounts.forms import PageForm
from portal.errors import ValidationFailed
from portal.money import parse_usd

from .models import Order
from .services.orders import purchase_limits

CUSTOM = "custom"


def packs() -> list[Decimal]:
    """The packs offered (USD = credits), those within the purchase limits, in order."""
    low, high = purchase_limits()
    out = []
    for value in settings.BILLING_PACKS:
        try:
            amount = parse_usd(value, field="BILLING_PACKS")
        except ValidationFailed:
            continue
        if low <= amount <= high:
            out.append(amount)
    return sorted(set(out))


def _value(amount: Decimal) -> str:
    return f"{amount.normalize():f}"  # 50.00 -> "50", 12.50 -> "12.5"


def _label(amount: Decimal) -> str:
    shown = f"{amount:,.0f}" if amount == amount.to_integral_value() else f"{amount:,.2f}"
    return f"{shown} credits"


class BuyForm(PageForm):
    pack = forms.ChoiceField(label="Credits", widget=forms.RadioSelect)
    custom_amount = forms.CharField(
        label="Custom amount (USD)",
        required=False,
        max_length=20,
        widget=forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off"}),
    )
    provider = forms.ChoiceField(
        label="Pay by", choices=Order.Provider.choices, widget=forms.RadioSelect
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        low, high = purchase_limits()
        offered = packs()
        self.fields["pack"].choices = [(_value(a), _label(a)) for a in offered] + [
            (CUSTOM, "Another amount")
        ]
        self.fields["pack"].initial = _value(offered[0]) if offered else CUSTOM
        self.fields["provider"].initial = Order.Provider.STRIPE
        self.fields[
            "custom_amount"
        ].help_text = f"From {low:,} to {high:,} USD, in whole cents; 1 credit = 1 USD, tax added."

    def clean(self):
        data = super().clean()
        if data.get("pack") == CUSTOM:
            if not data.get("custom_amount"):
                self.add_error("custom_amount", "Enter an amount, or choose a pack.")
            else:
                data["amount"] = data["custom_amount"].strip()
        elif data.get("pack"):
            data["amount"] = data["pack"]
        return data
