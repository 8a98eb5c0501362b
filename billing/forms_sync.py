"""The form of the upstream sync page: the OpenRouter connection. Rules stay in
`billing.services.sync`; this parses and shows errors."""

from __future__ import annotations

from decimal import Decimal

from django import forms

from accounts.forms import PageForm


class OpenRouterConnectionForm(PageForm):
    """The key is write-only: the field starts empty and is never filled back in. Empty on an
    existing connection keeps the stored key."""

    key = forms.CharField(
        label="OpenRouter management key",
        max_length=500,
        required=False,
        strip=True,
        widget=forms.PasswordInput(
            render_value=False, attrs={"autocomplete": "off", "spellcheck": "false"}
        ),
    )
    drift_threshold = forms.DecimalField(
        label="Alert when the drift is larger than (credits)",
        min_value=Decimal(0),
        max_digits=28,
        decimal_places=12,
        help_text="Upstream credits left minus the portal's, either way; checked on every sync.",
        widget=forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off"}),
    )
    enabled = forms.BooleanField(
        label="Sync periodically", required=False, help_text="The button syncs either way."
    )

    def __init__(self, *args, connected: bool, mask: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.connected = connected
        if connected:
            self.fields["key"].help_text = (
                f"Stored encrypted, shown as {mask}. Leave empty to keep it; paste a new one to "
                "replace it."
            )
        else:
            self.fields["key"].required = True
            self.fields["key"].help_text = (
                "A management key from openrouter.ai/settings/management-keys (sk-or-v1-...). "
                "Stored encrypted; never shown again."
            )
