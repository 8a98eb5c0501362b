"""`Authorization: Bearer <key>` for the REST API. The tenant is the key's organization."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions

from portal.logs import log_context_set
from portal.process_cache import ProcessCache, fresh

from .models import ApiKey

KEY_PREFIX = "sk-cp-v1-"
LAST_USED_RESOLUTION = timedelta(minutes=1)

# Keys looked up in the last KEY_CACHE_SECONDS, per process (`portal.process_cache`): a key
# that is disabled or deleted, or whose member leaves, stops working within that time on every
# worker, and at once in the process that made the change (`apikey_cache_evict`, called by the
# services that change keys and memberships).
KEY_CACHE_SECONDS = 1.0
_KEYS: ProcessCache[ApiKey | None] = ProcessCache(KEY_CACHE_SECONDS)


def apikey_cache_evict() -> None:
    """Forget the cached keys of this process, now and again when the current transaction
    commits (a request that read the old row meanwhile must not keep it)."""
    _KEYS.evict()


def apikey_cache_evict_now() -> None:
    _KEYS.evict_now()


def _key_lookup(hashed: str) -> ApiKey | None:
    """The live key of this hash with its organization, user and team, or None. A key whose
    member has left the organization is None. Served from the cache when seen less than
    KEY_CACHE_SECONDS ago (a copy: requests never share an instance)."""
    return fresh(_KEYS.get(hashed, lambda: _key_read(hashed)))


def _key_read(hashed: str) -> ApiKey | None:
    """`_key_lookup`'s query."""
    key = (
        ApiKey.objects.select_related("organization", "user", "team")
        .filter(hash=hashed, deleted_at__isnull=True)
        .first()
    )
    if (
        key is not None
        and key.user_id is not None
        and not key.user.memberships.filter(organization_id=key.organization_id).exists()
    ):
        key.member_left = True
    return key


def _last_used_due(key: ApiKey, hashed: str, now) -> bool:
    """Whether this request writes the key's `last_used_at` (at most once per
    LAST_USED_RESOLUTION): the first of the concurrent requests that see it older marks the
    cached key first, so the others, whose copies are older, do not write it too."""

    def recent(at) -> bool:
        return at is not None and now - at <= LAST_USED_RESOLUTION

    if recent(key.last_used_at):
        return False
    with _KEYS.lock:
        cached = _KEYS.peek(hashed)
        if cached is not None:
            if recent(cached.last_used_at):
                key.last_used_at = cached.last_used_at
                return False
            cached.last_used_at = now
    key.last_used_at = now
    return True


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
        hashed = hash_secret(parts[1])
        key = _key_lookup(hashed)
        now = timezone.now()
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        if key.disabled:
            raise exceptions.AuthenticationFailed("This API key is disabled.")
        if key.expires_at is not None and key.expires_at <= now:
            raise exceptions.AuthenticationFailed("This API key has expired.")
        if getattr(key, "member_left", False):
            raise exceptions.AuthenticationFailed("This API key's member left the organization.")
        if _last_used_due(key, hashed, now):
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        request.organization = key.organization
        log_context_set(key=key)  # the log lines of this request name the key's prefix
        return (key.user, key)

    def authenticate_header(self, request):
        return 'Bearer realm="api"'
