"""`Authorization: Bearer <key>` for the REST API. The tenant is the key's organization."""

from __future__ import annotations

import copy
import hashlib
import threading
import time
from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from rest_framework import authentication, exceptions

from portal.logs import log_context_set

from .models import ApiKey

KEY_PREFIX = "sk-cp-v1-"
LAST_USED_RESOLUTION = timedelta(minutes=1)

# Keys looked up in the last KEY_CACHE_SECONDS, per process ({hash: (until, key)}, `until` on
# time.monotonic()): a key that is disabled or deleted, or whose member leaves, stops working
# within that time on every worker, and at once in the process that made the change
# (`apikey_cache_evict`, called by the services that change keys and memberships).
KEY_CACHE_SECONDS = 1.0
_KEYS: dict[str, tuple[float, ApiKey]] = {}
_KEYS_LOCK = threading.Lock()


def apikey_cache_evict() -> None:
    """Forget the cached keys of this process, now and again when the current transaction
    commits (a request that read the old row meanwhile must not keep it)."""
    with _KEYS_LOCK:
        _KEYS.clear()
    transaction.on_commit(apikey_cache_evict_now)


def apikey_cache_evict_now() -> None:
    with _KEYS_LOCK:
        _KEYS.clear()


def _key_lookup(hashed: str) -> ApiKey | None:
    """The live key of this hash with its organization, user and team, or None. A key whose
    member has left the organization is None. Served from the cache when seen less than
    KEY_CACHE_SECONDS ago (a copy: requests never share an instance)."""
    now = time.monotonic()
    hit = _KEYS.get(hashed)
    if hit is not None and hit[0] > now:
        return _fresh(hit[1])
    with _refresh_lock(hashed):  # one query per key at a time: concurrent misses wait for it
        hit = _KEYS.get(hashed)
        if hit is not None and hit[0] > time.monotonic():
            return _fresh(hit[1])
        return _key_read(hashed, now)


_REFRESHING: dict[str, threading.Lock] = {}


def _refresh_lock(hashed: str) -> threading.Lock:
    with _KEYS_LOCK:
        if len(_REFRESHING) > 10_000:
            _REFRESHING.clear()
        return _REFRESHING.setdefault(hashed, threading.Lock())


def _key_read(hashed: str, now: float) -> ApiKey | None:
    """`_key_lookup`'s query, its result cached until `now` + KEY_CACHE_SECONDS."""
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
    with _KEYS_LOCK:
        if len(_KEYS) > 10_000:  # a flood of unknown keys: start over rather than grow
            _KEYS.clear()
        _KEYS[hashed] = (now + KEY_CACHE_SECONDS, _fresh(key))
    return key


_MUTABLE = (dict, list, set)


def _fresh(instance):
    """A copy of a model instance (or None) and of the related instances loaded with it, sharing
    nothing a request could change (its own `_state` and field cache; lists and dicts copied),
    at a fraction of `copy.deepcopy`'s cost (immutable values, the most of a row, are shared)."""
    if instance is None:
        return None
    new = instance.__class__.__new__(instance.__class__)
    new.__dict__ = {
        name: copy.deepcopy(value) if isinstance(value, _MUTABLE) else value
        for name, value in instance.__dict__.items()
    }
    new._state = copy.copy(instance._state)
    new._state.fields_cache = {
        name: _fresh(related) for name, related in instance._state.fields_cache.items()
    }
    return new


def _last_used_due(key: ApiKey, hashed: str, now) -> bool:
    """Whether this request writes the key's `last_used_at` (at most once per
    LAST_USED_RESOLUTION): the first of the concurrent requests that see it older marks the
    cached key first, so the others, whose copies are older, do not write it too."""

    def recent(at) -> bool:
        return at is not None and now - at <= LAST_USED_RESOLUTION

    if recent(key.last_used_at):
        return False
    with _KEYS_LOCK:
        hit = _KEYS.get(hashed)
        cached = hit[1] if hit is not None else None
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
