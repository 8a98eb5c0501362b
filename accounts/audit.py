"""The audit log: who did what to which object, written in the same transaction as the change.

Each organization's events form a hash chain: `hash = sha256(prev_hash + canonical JSON of the
event)`, so that editing, deleting or reordering a stored event breaks the chain at that event.
`audit_verify` recomputes the chain and names the first broken link. Usage events and ledger
postings are not audited one by one here: they are append-only records of their own.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction

from portal.money import decimal_text
from portal.net import client_ip

from .models import ApiKey, AuditEvent, Organization, User


@dataclass(frozen=True)
class Actor:
    """Who performs a write: a user (pages, admin), an API key (REST), or the system (commands,
    tasks), with the request's IP address (`portal.net.client_ip`: X-Forwarded-For only behind
    trusted proxies) and user agent when there is a request."""

    user: User | None = None
    api_key: ApiKey | None = None
    ip_address: str | None = None
    user_agent: str = ""
    system: str = ""

    @property
    def label(self) -> str:
        if self.api_key is not None:
            return f"key:{self.api_key.label}"
        if self.user is not None:
            return self.user.email
        return f"system:{self.system or 'portal'}"

    @classmethod
    def from_request(cls, request) -> Actor:
        api_key = request.auth if isinstance(getattr(request, "auth", None), ApiKey) else None
        user = getattr(request, "user", None)
        if user is not None and not getattr(user, "is_authenticated", False):
            user = None
        if api_key is not None:
            user = api_key.user
        return cls(
            user=user,
            api_key=api_key,
            ip_address=client_ip(request),
            user_agent=request.META.get("HTTP_USER_AGENT", "")[:512],
        )


SYSTEM = Actor(system="portal")


class _SnapshotEncoder(DjangoJSONEncoder):
    """Django's JSON encoder with amounts as plain decimal text (`portal.money.decimal_text`:
    "0.000000000000", where `str()` gives "0E-12")."""

    def default(self, o: Any) -> Any:
        if isinstance(o, Decimal):
            return decimal_text(o)
        return super().default(o)


def _jsonable(value: Any) -> Any:
    """A `before` or `after` snapshot as stored: JSON values, amounts as decimal text."""
    return json.loads(json.dumps(value, cls=_SnapshotEncoder)) if value is not None else None


def event_digest(event: AuditEvent) -> str:
    """The hash of one event given its `prev_hash`: sha256 over a canonical JSON document."""
    document = {
        "organization": event.organization_id,
        "sequence": event.sequence,
        "actor_user": event.actor_user_id,
        "actor_api_key": event.actor_api_key_id,
        "actor_label": event.actor_label,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "target_label": event.target_label,
        "before": event.before,
        "after": event.after,
        "ip_address": event.ip_address,
        "user_agent": event.user_agent,
        "created_at": event.created_at.isoformat(),
    }
    payload = json.dumps(document, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder)
    return hashlib.sha256((event.prev_hash + payload).encode()).hexdigest()


def audit_record(
    *,
    organization: Organization,
    actor: Actor,
    action: str,
    target: Any = None,
    before: dict | None = None,
    after: dict | None = None,
) -> AuditEvent:
    """Append one event to `organization`'s chain. Call inside the service's transaction, last
    (it locks the organization row to serialize the chain; locks are taken accounts-first)."""
    assert transaction.get_connection().in_atomic_block, "audit_record runs inside the change"
    Organization.objects.select_for_update().filter(pk=organization.pk).exists()
    last = (
        AuditEvent.objects.filter(organization=organization)
        .order_by("-sequence")
        .values("sequence", "hash")
        .first()
    )
    event = AuditEvent(
        organization=organization,
        sequence=(last["sequence"] + 1) if last else 1,
        actor_user=actor.user,
        actor_api_key=actor.api_key,
        actor_label=actor.label[:254],
        action=action,
        target_type=type(target).__name__.lower() if target is not None else "",
        target_id=str(getattr(target, "pk", "") or "") if target is not None else "",
        target_label=str(target)[:254] if target is not None else "",
        before=_jsonable(before),
        after=_jsonable(after),
        ip_address=actor.ip_address,
        user_agent=actor.user_agent,
        prev_hash=last["hash"] if last else "",
    )
    event.hash = event_digest(event)
    event.save(force_insert=True)
    return event


def audit_verify(*, organization: Organization) -> AuditEvent | None:
    """Walk `organization`'s chain in sequence order; return the first event whose stored hash,
    previous-hash link or sequence number does not hold, or None when the chain is intact."""
    prev_hash, expected_seq = "", 1
    for event in (
        AuditEvent.objects.filter(organization=organization).order_by("sequence").iterator()
    ):
        if (
            event.sequence != expected_seq
            or event.prev_hash != prev_hash
            or event_digest(event) != event.hash
        ):
            return event
        prev_hash, expected_seq = event.hash, expected_seq + 1
    return None
