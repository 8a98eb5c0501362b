"""Guardrails (OpenRouter's `/guardrails`): a spending limit and a model allow-list over the API
keys and members assigned to them.

- `limit_usd` per `reset_interval` (daily, weekly, monthly; null: in total) is a `Budget` on
  each assigned key (scope api_key) and member (scope member), linked by `Budget.guardrail`,
  with UTC windows (OpenRouter resets guardrail budgets at UTC midnight, weeks on Monday). They
  are created, changed and deleted here with the guardrail and its assignments, and enforced in
  every debit like any other budget (`BudgetGate`).
- `allowed_models` (null: any) is checked when an authorization (hold) is requested for an
  assigned key or member (`guardrail_check_model`): another model is a 403 `forbidden` naming
  it. A hold naming no model is refused too when a guardrail restricts models. The check reads
  the organization's restricting guardrails once per RESTRICTING_CACHE_SECONDS per process:
  a change takes effect at once in the process that makes it, within that time in the others.
- A key holds at most one guardrail, a member at most one per organization: assigning replaces
  the previous assignment (and its budget).

Every write is audited (`guardrail.created`, `.updated`, `.deleted`, `.keys_assigned`,
`.keys_unassigned`, `.members_assigned`, `.members_unassigned`), the budgets' own writes too.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.audit import Actor, audit_record
from accounts.models import ApiKey, Organization, User
from portal.errors import NotFound, PermissionDenied, ValidationFailed
from portal.money import parse_credits
from portal.process_cache import ProcessCache

from ..models import Budget, Guardrail, GuardrailKeyAssignment, GuardrailMemberAssignment
from .budgets import budget_create, budget_delete, budget_update

COLUMNS = ("name", "description", "limit_usd", "reset_interval", "allowed_models")
FLAGS = ("include_byok_in_budgets",)
RESTRICTING_CACHE_SECONDS = 1.0


@dataclass(frozen=True)
class _Restricting:
    """A guardrail with `allowed_models`, and the keys and members assigned to it."""

    name: str
    public_id: str
    allowed_models: tuple[str, ...]
    api_key_ids: frozenset[int]
    member_ids: frozenset[int]


_RESTRICTING: ProcessCache[list[_Restricting]] = ProcessCache(RESTRICTING_CACHE_SECONDS)


def _snapshot(guardrail: Guardrail) -> dict:
    return {
        "name": guardrail.name,
        "description": guardrail.description,
        "limit_usd": guardrail.limit_usd,
        "reset_interval": guardrail.reset_interval,
        "allowed_models": guardrail.allowed_models,
        "include_byok_in_budgets": guardrail.include_byok_in_budgets,
        "settings": guardrail.settings,
    }


def _apply(guardrail: Guardrail, fields: dict) -> None:
    _RESTRICTING.evict()
    for name, value in fields.items():
        if name in COLUMNS or name in FLAGS:
            setattr(guardrail, name, value)
        else:
            guardrail.settings[name] = value
    if guardrail.limit_usd is not None:
        guardrail.limit_usd = parse_credits(guardrail.limit_usd, field="limit_usd", allow_zero=True)
    if guardrail.reset_interval not in (None, *Guardrail.Interval.values):
        raise ValidationFailed({"reset_interval": ["One of: daily, weekly, monthly, or null."]})
    if not guardrail.name or len(guardrail.name) > 200:
        raise ValidationFailed({"name": ["From 1 to 200 characters."]})


def _period(guardrail: Guardrail) -> str:
    return guardrail.reset_interval or Budget.Period.LIFETIME


def _budget_add(guardrail: Guardrail, *, api_key=None, member=None, actor: Actor) -> None:
    if guardrail.limit_usd is None:
        return
    budget_create(
        organization=guardrail.organization,
        scope=Budget.Scope.API_KEY if api_key is not None else Budget.Scope.MEMBER,
        api_key=api_key,
        member=member,
        period=_period(guardrail),
        limit=guardrail.limit_usd,
        guardrail=guardrail,
        actor=actor,
    )


def _budgets_remove(guardrail_id, *, api_key_ids=(), member_ids=(), actor: Actor) -> None:
    _RESTRICTING.evict()  # keys or members leave the guardrail
    condition = Q(api_key_id__in=list(api_key_ids)) | Q(member_id__in=list(member_ids))
    for budget in Budget.objects.filter(condition, guardrail_id=guardrail_id).select_related(
        "organization", "guardrail"
    ):
        budget_delete(budget=budget, actor=actor)


@transaction.atomic
def guardrail_create(*, organization: Organization, fields: dict, actor: Actor) -> Guardrail:
    """A guardrail from OpenRouter's create request (`fields`, validated by the API). It limits
    nothing until keys or members are assigned. Raises ValidationFailed."""
    guardrail = Guardrail(organization=organization, settings={})
    _apply(guardrail, fields)
    guardrail.save()
    audit_record(
        organization=organization,
        actor=actor,
        action="guardrail.created",
        target=guardrail,
        after=_snapshot(guardrail),
    )
    return guardrail


@transaction.atomic
def guardrail_update(*, guardrail: Guardrail, fields: dict, actor: Actor) -> Guardrail:
    """Change the fields given (collections are replaced). A changed `limit_usd` or
    `reset_interval` changes the budgets of every assignment (a null limit deletes them, a
    limit where there was none creates them). Raises ValidationFailed."""
    if not fields:
        raise ValidationFailed({"non_field_errors": ["No update fields provided."]})
    guardrail = (
        Guardrail.objects.select_for_update().select_related("organization").get(pk=guardrail.pk)
    )
    before = _snapshot(guardrail)
    guardrail.settings = dict(guardrail.settings)
    _apply(guardrail, fields)
    guardrail.updated_at = timezone.now()
    guardrail.save()
    budgets = list(guardrail.budgets.select_related("organization", "guardrail"))
    if guardrail.limit_usd is None:
        for budget in budgets:
            budget_delete(budget=budget, actor=actor)
    elif budgets:
        for budget in budgets:
            changes = {}
            if budget.limit != guardrail.limit_usd:
                changes["limit"] = guardrail.limit_usd
            if budget.period != _period(guardrail):
                changes["period"] = _period(guardrail)
            if changes:
                budget_update(budget=budget, actor=actor, **changes)
    elif before["limit_usd"] is None:
        for assignment in guardrail.key_assignments.select_related("api_key"):
            _budget_add(guardrail, api_key=assignment.api_key, actor=actor)
        for assignment in guardrail.member_assignments.select_related("member"):
            _budget_add(guardrail, member=assignment.member, actor=actor)
    audit_record(
        organization=guardrail.organization,
        actor=actor,
        action="guardrail.updated",
        target=guardrail,
        before=before,
        after=_snapshot(guardrail),
    )
    return guardrail


@transaction.atomic
def guardrail_delete(*, guardrail: Guardrail, actor: Actor) -> None:
    """Delete a guardrail with its assignments and budgets. Raises NotFound when gone."""
    _RESTRICTING.evict()
    guardrail = Guardrail.objects.select_for_update().filter(pk=guardrail.pk).first()
    if guardrail is None:
        raise NotFound("No such guardrail.", resource="guardrail")
    for budget in guardrail.budgets.select_related("organization", "guardrail"):
        budget_delete(budget=budget, actor=actor)
    snapshot = _snapshot(guardrail)
    guardrail.delete()
    audit_record(
        organization=guardrail.organization,
        actor=actor,
        action="guardrail.deleted",
        target=guardrail,
        before=snapshot,
    )


def _assign(guardrail: Guardrail, targets: list, *, member: bool, actor: Actor) -> int:
    """Put `targets` (API keys, or members with `member`) under `guardrail`, replacing another
    guardrail's assignment with its budgets; those already under it are left. Audited once.
    Returns how many were newly assigned."""
    _RESTRICTING.evict()
    model = GuardrailMemberAssignment if member else GuardrailKeyAssignment
    field = "member" if member else "api_key"
    Guardrail.objects.select_for_update().filter(pk=guardrail.pk).exists()
    current = {
        getattr(a, f"{field}_id"): a
        for a in model.objects.select_for_update().filter(
            organization=guardrail.organization, **{f"{field}__in": [t.pk for t in targets]}
        )
    }
    assigned = []
    for target in {t.pk: t for t in targets}.values():
        existing = current.get(target.pk)
        if existing is not None and existing.guardrail_id == guardrail.pk:
            continue
        if existing is not None:
            ids = {"member_ids" if member else "api_key_ids": [target.pk]}
            _budgets_remove(existing.guardrail_id, actor=actor, **ids)
            existing.delete()
        model.objects.create(
            organization=guardrail.organization,
            guardrail=guardrail,
            assigned_by=actor.user,
            **{field: target},
        )
        _budget_add(guardrail, actor=actor, **{field: target})
        assigned.append(str(target.pk) if member else target.hash)
    if assigned:
        noun = "members" if member else "keys"
        audit_record(
            organization=guardrail.organization,
            actor=actor,
            action=f"guardrail.{noun}_assigned",
            target=guardrail,
            after={noun: assigned},
        )
    return len(assigned)


@transaction.atomic
def guardrail_assign_keys(*, guardrail: Guardrail, keys: list[ApiKey], actor: Actor) -> int:
    """Put `keys` (of the guardrail's organization, resolved by the caller) under the guardrail,
    replacing another guardrail's assignment. Returns how many were newly assigned (keys already
    under it are left as they are)."""
    return _assign(guardrail, keys, member=False, actor=actor)


@transaction.atomic
def guardrail_unassign_keys(*, guardrail: Guardrail, keys: list[ApiKey], actor: Actor) -> int:
    """Take `keys` off the guardrail (with their guardrail budgets). Returns how many were on."""
    rows = list(
        GuardrailKeyAssignment.objects.select_for_update()
        .filter(guardrail=guardrail, api_key__in=[k.pk for k in keys])
        .select_related("api_key")
    )
    if not rows:
        return 0
    _budgets_remove(guardrail.pk, api_key_ids=[a.api_key_id for a in rows], actor=actor)
    GuardrailKeyAssignment.objects.filter(pk__in=[a.pk for a in rows]).delete()
    audit_record(
        organization=guardrail.organization,
        actor=actor,
        action="guardrail.keys_unassigned",
        target=guardrail,
        before={"keys": [a.api_key.hash for a in rows]},
    )
    return len(rows)


@transaction.atomic
def guardrail_assign_members(*, guardrail: Guardrail, members: list[User], actor: Actor) -> int:
    """Put `members` (of the organization, resolved by the caller) under the guardrail,
    replacing another guardrail's assignment. Returns how many were newly assigned."""
    return _assign(guardrail, members, member=True, actor=actor)


@transaction.atomic
def guardrail_unassign_members(*, guardrail: Guardrail, members: list[User], actor: Actor) -> int:
    """Take `members` off the guardrail (with their guardrail budgets)."""
    rows = list(
        GuardrailMemberAssignment.objects.select_for_update().filter(
            guardrail=guardrail, member__in=[m.pk for m in members]
        )
    )
    if not rows:
        return 0
    _budgets_remove(guardrail.pk, member_ids=[a.member_id for a in rows], actor=actor)
    GuardrailMemberAssignment.objects.filter(pk__in=[a.pk for a in rows]).delete()
    audit_record(
        organization=guardrail.organization,
        actor=actor,
        action="guardrail.members_unassigned",
        target=guardrail,
        before={"members": [str(a.member_id) for a in rows]},
    )
    return len(rows)


def _restricting(organization_id: int) -> list[_Restricting]:
    rows = (
        Guardrail.objects.filter(organization_id=organization_id, allowed_models__isnull=False)
        .prefetch_related("key_assignments", "member_assignments")
        .order_by("id")
    )
    return [
        _Restricting(
            name=g.name,
            public_id=str(g.public_id),
            allowed_models=tuple(g.allowed_models or ()),
            api_key_ids=frozenset(a.api_key_id for a in g.key_assignments.all()),
            member_ids=frozenset(a.member_id for a in g.member_assignments.all()),
        )
        for g in rows
    ]


def guardrail_check_model(*, organization_id: int, api_key_id, member_id, model: str) -> None:
    """Refuse (403 `forbidden`, naming the model and the guardrail) a request for `model` by a
    key or member under a guardrail whose `allowed_models` does not list it. The organization's
    restricting guardrails as read less than RESTRICTING_CACHE_SECONDS ago in this process."""
    if api_key_id is None and member_id is None:
        return
    for guardrail in _RESTRICTING.get(organization_id, lambda: _restricting(organization_id)):
        if api_key_id not in guardrail.api_key_ids and member_id not in guardrail.member_ids:
            continue
        if model not in guardrail.allowed_models:
            what = f"Model '{model}' is" if model else "A request naming no model is"
            raise PermissionDenied(
                f"{what} not allowed by guardrail '{guardrail.name}'.",
                model=model or None,
                guardrail_id=guardrail.public_id,
                allowed_models=list(guardrail.allowed_models),
            )
