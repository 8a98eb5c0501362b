"""Forms of the notifications pages. Rules stay in the services; these parse and show errors."""

from __future__ import annotations

from django import forms

from .events import EVENT_TYPES, WEBHOOK_EVENT_TYPES

CHANNELS = (("in_app", "In the portal"), ("email", "E-mail"), ("sms", "SMS"))


class WebhookForm(forms.Form):
    url = forms.CharField(
        label="Endpoint URL",
        max_length=2000,
        help_text="An https:// URL on the public internet that accepts POST requests.",
        widget=forms.URLInput(attrs={"autocomplete": "url", "spellcheck": "false"}),
    )
    description = forms.CharField(label="Description", max_length=200, required=False)
    events = forms.MultipleChoiceField(
        label="Events",
        choices=[(t, f"{EVENT_TYPES[t].title} ({t})") for t in WEBHOOK_EVENT_TYPES],
        widget=forms.CheckboxSelectMultiple,
        help_text="The event types sent to this endpoint.",
    )


class WebhookEditForm(WebhookForm):
    enabled = forms.BooleanField(label="Enabled", required=False)


class PreferencesForm(forms.Form):
    """A checkbox per event type and channel (`<type>__<channel>`), and the mobile number."""

    phone = forms.CharField(
        label="Mobile number for SMS",
        max_length=20,
        required=False,
        help_text="International format, e.g. +14155550123.",
        widget=forms.TextInput(attrs={"autocomplete": "tel", "inputmode": "tel"}),
    )

    def __init__(self, *args, types=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.types = list(types)
        for type in self.types:
            for channel, label in CHANNELS:
                self.fields[f"{type}__{channel}"] = forms.BooleanField(
                    label=f"{label}: {EVENT_TYPES[type].title}", required=False
                )

    def rows(self):
        return [
            {
                "type": type,
                "title": EVENT_TYPES[type].title,
                "fields": [self[f"{type}__{channel}"] for channel, _ in CHANNELS],
            }
            for type in self.types
        ]

    def preferences(self) -> dict[str, dict[str, bool]]:
        return {
            type: {channel: self.cleaned_data[f"{type}__{channel}"] for channel, _ in CHANNELS}
            for type in self.types
        }
