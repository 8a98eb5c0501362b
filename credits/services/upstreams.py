"""Upstreams: an organization's provider connections that the gateway forwards chat requests to
(`credits.gateway`), and the resolution of a model id to the upstream that serves it.

Writes are admin actions (`org:write`), each audited. The API key is write-only: stored
encrypted (Fernet, `FIELD_ENCRYPTION_KEY`, as webhook secrets) and never returned. Base URLs are
http(s) without credentials; addresses on loopback, private, link-local and reserved networks
are refused unless the installation sets `GATEWAY_ALLOW_PRIVATE_UPSTREAMS` (a vLLM or Ollama on
the operator's own network)."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.audit import Actor, audit_record
from accounts.models import Organization
from notifications.urlcheck import UrlRefused, pin_url
from portal.errors import Conflict, ValidationFailed
from portal.process_cache import ProcessCache, fresh

from ..models import Upstream

MAX_UPSTREAMS = 50
MAX_MODELS = 500
MIN_TIMEOUT, MAX_TIMEOUT = 1, 600  # seconds
# Each organization's enabled upstreams, read once per UPSTREAM_CACHE_SECONDS per process (every
# gateway request resolves its models): a change reaches the other workers within that time.
UPSTREAM_CACHE_SECONDS = 1.0
_ENABLED: ProcessCache[list[Upstream]] = ProcessCache(UPSTREAM_CACHE_SECONDS)


def _name(value) -> str:
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > 100:
        raise ValidationFailed({"name": ["From 1 to 100 characters."]})
    return value.strip()


def _kind(value) -> str:
    if value not in Upstream.Kind.values:
        raise ValidationFailed({"kind": [f"One of: {', '.join(Upstream.Kind.values)}."]})
    return value


def _base_url(value) -> str:
    """An http(s) URL without credentials, query or fragment, trailing slash removed."""
    if not isinstance(value, str) or not value.strip() or len(value) > 2000:
        raise ValidationFailed({"base_url": ["An http:// or https:// URL."]})
    url = value.strip()
    try:
        parts = urlsplit(url)
        if parts.port is not None and parts.port < 1:  # urlsplit raises on a bad port
            raise ValueError
    except ValueError:
        raise ValidationFailed({"base_url": ["Enter a valid URL."]}) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationFailed({"base_url": ["An http:// or https:// URL."]})
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValidationFailed(
            {"base_url": ["No user name, password, query or fragment: the key authenticates."]}
        )
    if not settings.GATEWAY_ALLOW_PRIVATE_UPSTREAMS:
        try:  # the webhooks' address rule, checked again at every call (`credits.gateway`)
            pin_url(url, allow_private=False, portal_ok=True)
        except UrlRefused as exc:
            raise ValidationFailed({"base_url": [str(exc)]}) from None
    return url.rstrip("/")


def _models(value) -> list[str]:
    """Exact model ids or provider prefixes ending in '/', without blanks or duplicates."""
    if not isinstance(value, list) or not value or len(value) > MAX_MODELS:
        raise ValidationFailed({"models": [f"A list of 1 to {MAX_MODELS} model ids or prefixes."]})
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.strip() or len(item) > 200 or item != item.strip():
            raise ValidationFailed(
                {"models": ["Each a model id ('gpt-4o') or a prefix ('openai/'), 1-200 chars."]}
            )
        if item not in out:
            out.append(item)
    return out


def _timeout(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationFailed({"timeout": ["Whole seconds."]})
    if not MIN_TIMEOUT <= value <= MAX_TIMEOUT:
        raise ValidationFailed({"timeout": [f"From {MIN_TIMEOUT} to {MAX_TIMEOUT} seconds."]})
    return value


def _api_key(value) -> str:
    if not isinstance(value, str) or len(value) > 4000 or value != value.strip():
        raise ValidationFailed({"api_key": ["A string of at most 4000 characters."]})
    return value


def _document(upstream: Upstream) -> dict:
    """What the audit log keeps of an upstream (never its key)."""
    return {
        "id": str(upstream.public_id),
        "name": upstream.name,
        "kind": upstream.kind,
        "base_url": upstream.base_url,
        "models": upstream.models,
        "timeout": upstream.timeout,
        "enabled": upstream.enabled,
        "api_key_set": bool(upstream.api_key_encrypted),
    }


def _save(upstream: Upstream, **kwargs) -> None:
    _ENABLED.evict()
    try:
        with transaction.atomic():
            upstream.save(**kwargs)
    except IntegrityError:
        raise Conflict(
            f"An upstream named '{upstream.name}' exists already.", reason="name_taken"
        ) from None


@transaction.atomic
def upstream_create(
    *,
    organization: Organization,
    name: str,
    kind: str,
    base_url: str,
    models: list[str],
    api_key: str = "",
    timeout: int = 60,
    enabled: bool = True,
    actor: Actor,
) -> Upstream:
    """A new upstream of the organization. Raises ValidationFailed (a field, naming it),
    Conflict (the name is taken, or MAX_UPSTREAMS reached)."""
    upstream = Upstream(
        organization=organization,
        name=_name(name),
        kind=_kind(kind),
        base_url=_base_url(base_url),
        models=_models(models),
        timeout=_timeout(timeout),
        enabled=bool(enabled),
    )
    upstream.api_key = _api_key(api_key)
    if Upstream.objects.filter(organization=organization).count() >= MAX_UPSTREAMS:
        raise Conflict(f"An organization has at most {MAX_UPSTREAMS} upstreams.")
    _save(upstream, force_insert=True)
    audit_record(
        organization=organization,
        actor=actor,
        action="upstream.created",
        target=upstream,
        after=_document(upstream),
    )
    return upstream


_CHECKS = {
    "name": _name,
    "kind": _kind,
    "base_url": _base_url,
    "models": _models,
    "timeout": _timeout,
    "enabled": bool,
}


@transaction.atomic
def upstream_update(*, upstream: Upstream, actor: Actor, **fields) -> Upstream:
    """Change the given fields (`name`, `kind`, `base_url`, `models`, `timeout`, `enabled`,
    `api_key`: an empty string removes it). Raises ValidationFailed, Conflict (name taken)."""
    unknown = set(fields) - set(_CHECKS) - {"api_key"}
    if unknown:
        raise ValidationFailed({f: ["Unknown field."] for f in sorted(unknown)})
    upstream = Upstream.objects.select_for_update().get(pk=upstream.pk)
    before = _document(upstream)
    for field, value in fields.items():
        if field == "api_key":
            upstream.api_key = _api_key(value)
        else:
            setattr(upstream, field, _CHECKS[field](value))
    upstream.updated_at = timezone.now()
    _save(upstream)
    audit_record(
        organization=upstream.organization,
        actor=actor,
        action="upstream.updated",
        target=upstream,
        before=before,
        after=_document(upstream),
    )
    return upstream


@transaction.atomic
def upstream_delete(*, upstream: Upstream, actor: Actor) -> None:
    """Delete the upstream (its models stop being reachable at once in this process, within
    UPSTREAM_CACHE_SECONDS in the others)."""
    _ENABLED.evict()
    before = _document(upstream)
    audit_record(
        organization=upstream.organization,
        actor=actor,
        action="upstream.deleted",
        target=upstream,
        before=before,
    )
    upstream.delete()


# Resolution -------------------------------------------------------------------------------------


def upstream_match(upstream_models: list[str], model: str) -> int:
    """How well an upstream's `models` list serves `model`: 0 when not at all; an exact id beats
    any prefix; among prefixes ('openai/'), the longest wins."""
    best = 0
    for entry in upstream_models:
        if entry == model:
            return 100_000
        if entry.endswith("/") and model.startswith(entry) and len(model) > len(entry):
            best = max(best, len(entry))
    return best


def upstream_for(*, organization_id: int, model: str) -> Upstream | None:
    """The enabled upstream of the organization that serves `model` (see `upstream_match`;
    the oldest wins a tie), or None. The upstreams as read less than UPSTREAM_CACHE_SECONDS ago
    in this process; the one returned is the caller's own copy."""
    enabled = _ENABLED.get(
        organization_id,
        lambda: list(Upstream.objects.filter(organization_id=organization_id, enabled=True)),
    )
    best, found = 0, None
    for upstream in enabled:
        score = upstream_match(upstream.models, model)
        if score > best:
            best, found = score, upstream
    return fresh(found)
