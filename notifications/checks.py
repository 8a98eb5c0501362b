"""System checks: secrets at rest need a key of their own in production."""

from django.conf import settings
from django.core.checks import Error, Tags, register


@register(Tags.security, deploy=True)
def field_encryption_key(app_configs, **kwargs):
    if settings.FIELD_ENCRYPTION_KEY:
        return []
    return [
        Error(
            "FIELD_ENCRYPTION_KEY is not set: webhook secrets cannot be stored.",
            hint="Set FIELD_ENCRYPTION_KEY to a Fernet key "
            "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key())').",
            id="notifications.E001",
        )
    ]
