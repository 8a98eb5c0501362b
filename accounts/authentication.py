"""`Authorization: Bearer <key>` for the REST API. The tenant is the key's organization."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions

from portal.logs import log_context_set

from .models import ApiKey

KEY_PREFIX = "sk-cp-v1-"
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_secret(secret: str) -> str:
    """sha256 hex of a key's secret: the only form in which a secret is stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


class APIKeyAuthentication(authentication.BaseAuthentication):
    """Sets `request.user` to the key's member (or None) and `request.auth` to the `ApiKey`.

    401 for a missing, unknown, expired, disabled or deleted key, and for a key whose member has
    left the organization."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        parts = header.split()
        if len(parts) != 2 or parts[0] != self.keyword:
            raise exceptions.AuthenticationFailed("Use 'Authorization: Bearer <API key>'.")
        key = (
            ApiKey.objects.select_related("organization", "user", "team")
            .filter(hash=hash_secret(parts[1]), deleted_at__isnull=True)
            .first()
        )
        now = timezone.now()
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        if key.disabled:
            raise exceptions.AuthenticationFailed("This API key is disabled.")
        if key.expires_at is not None and key.expires_at <= now:
            raise exceptions.AuthenticationFailed("This API key has expired.")
        if (
            key.user_id is not None
            and not key.user.memberships.filter(organization_id=key.organization_id).exists()
        ):
            raise exceptions.AuthenticationFailed("This API key's member left the organization.")
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
            key.last_used_at = now
        request.organization = key.organization
        log_context_set(key=key)  # the log lines of this request name the key's prefix
        return (key.user, key)

    def authenticate_header(self, request):
        return 'Bearer realm="api"'
