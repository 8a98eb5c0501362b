"""API key pages: the list (a member sees only their own keys), create (the secret shown once,
on the page the create redirects to), edit, disable and enable, delete (after a confirmation
step). The rules are `Principal.key_terms`, `scopes_within`, `check_key_manage`; the writes are
the services the API uses. This is how a browser admin gets the first management key."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from portal.errors import ApplicationError, NotFound, ValidationFailed

from . import selectors, services
from .forms import KeyCreateForm, KeyUpdateForm, form_errors
from .models import ApiKey
from .pages import actor, confirm, organization_page, perform, throttled
from .roles import KIND_SCOPES, KeyKind

SECRET_SESSION_KEY = "accounts.new_key_secret"  # noqa: S105 ({hash: secret}, popped once)


def _key(request, hash: str) -> ApiKey:
    try:
        return request.principal.key_get(hash)
    except NotFound:
        raise Http404("No such key") from None


def _status(key: ApiKey, now) -> str:
    if key.disabled:
        return "disabled"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


@organization_page(scope="keys:read")
def key_list(request):
    principal = request.principal
    now = timezone.now()
    keys = list(principal.keys().order_by("-id").prefetch_related("budgets"))  # their limits
    rows = [
        {
            "key": key,
            "status": _status(key, now),
            "member": key.user.email
            if key.user_id and principal.sees_member(key.user_id)
            else None,
            "hidden_member": key.user_id is not None and not principal.sees_member(key.user_id),
        }
        for key in keys
    ]
    return render(
        request,
        "accounts/keys.html",
        {
            "rows": rows,
            "may_write": principal.has("keys:write"),
            "own_only": principal.member_id is not None,
        },
    )


def _create_form(request, data=None) -> KeyCreateForm:
    principal = request.principal
    own_only = principal.member_id is not None
    kinds = [(KeyKind.USAGE.value, KeyKind.USAGE.label)] if own_only else KeyKind.choices
    members = None
    if not own_only and principal.has("members:read"):
        members = selectors.membership_list(organization=request.organization).order_by(
            "user__email"
        )
    form = KeyCreateForm(
        data,
        kinds=kinds,
        teams=principal.teams().order_by("name"),
        members=members,
        initial={"scopes": sorted(principal.scopes & KIND_SCOPES[KeyKind.USAGE])},
    )
    form.set_scope_choices(principal.scopes)
    form.set_time_zone(request.organization.time_zone)
    return form


@organization_page(scope="keys:write")
@require_http_methods(["GET", "POST"])
def key_create(request):
    principal = request.principal
    form = _create_form(request, request.POST or None)
    if request.method == "POST" and (refused := throttled(request, "keys")):
        return refused
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            team = None
            if data["team"]:
                team = principal.teams().filter(slug=data["team"]).first()
                if team is None:
                    raise ValidationFailed({"team": ["No such team."]})
            member = None
            if data.get("member"):
                try:
                    member = selectors.member_by_email(
                        organization=request.organization, email=data["member"]
                    )
                except NotFound:  # on the form: the field's error
                    raise ValidationFailed(
                        {"member": ["Not a member of this organization."]}
                    ) from None
            team, member, scopes = principal.key_terms(
                kind=data["kind"], team=team, member=member, scopes=data["scopes"]
            )
            key, secret = services.apikey_create(
                organization=request.organization,
                name=data["name"],
                kind=data["kind"],
                team=team,
                user=member,
                scopes=scopes,
                limit=data["limit"],
                limit_reset=data["limit_reset"] or None,
                expires_at=data["expires_at"],
                actor=actor(request),
            )
        except ApplicationError as exc:
            form_errors(form, exc)
        else:
            request.session[SECRET_SESSION_KEY] = {key.hash: secret}
            messages.success(request, f"Key {key.name} created.")
            return redirect("key-created", org=request.organization.slug, hash=key.hash)
    return render(request, "accounts/key_form.html", {"form": form, "key": None})


@organization_page(scope="keys:read")
def key_created(request, hash: str):
    """The new key's secret, once: it is taken out of the session as it is shown."""
    key = _key(request, hash)
    secrets = request.session.pop(SECRET_SESSION_KEY, None) or {}
    return render(
        request, "accounts/key_created.html", {"key": key, "secret": secrets.get(key.hash)}
    )


@organization_page(scope="keys:write")
@require_http_methods(["GET", "POST"])
def key_edit(request, hash: str):
    principal = request.principal
    key = _key(request, hash)
    initial = {
        "name": key.name,
        "scopes": key.scopes,
        "limit": key.limit,
        "limit_reset": key.limit_reset,
        "expires_at": key.expires_at,
    }
    form = KeyUpdateForm(request.POST or None, initial=initial)
    form.set_scope_choices((principal.scopes & KIND_SCOPES[key.kind]) | set(key.scopes))
    form.set_time_zone(request.organization.time_zone)
    if key.expires_at is not None:
        form.initial["expires_at"] = timezone.localtime(key.expires_at, form.time_zone)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        data["limit_reset"] = data["limit_reset"] or None
        if sorted(data["scopes"]) == sorted(key.scopes):
            del data["scopes"]  # unchanged: not re-checked against the editor's own scopes
        if data["expires_at"] is None and key.expires_at is None:
            del data["expires_at"]
        try:
            principal.check_key_manage(key)
            if "scopes" in data:
                data["scopes"] = principal.scopes_within(data["scopes"], key.kind)
            key = services.apikey_update(key=key, actor=actor(request), **data)
        except ApplicationError as exc:
            form_errors(form, exc)
        else:
            messages.success(request, f"Key {key.name} saved.")
            return redirect("keys", org=request.organization.slug)
    return render(request, "accounts/key_form.html", {"form": form, "key": key})


@organization_page(scope="keys:write")
@require_POST
def key_toggle(request, hash: str):
    """Disable an active key or enable a disabled one."""
    key = _key(request, hash)

    def toggle():
        request.principal.check_key_manage(key)
        return services.apikey_update(key=key, actor=actor(request), disabled=not key.disabled)

    def done(key) -> str:
        state = "disabled: it stops working at once" if key.disabled else "enabled"
        return f"Key {key.name} {state}."

    return perform(
        request, toggle, done=done, then=reverse("keys", kwargs={"org": request.organization.slug})
    )


@organization_page(scope="keys:write")
@require_http_methods(["GET", "POST"])
def key_delete(request, hash: str):
    key = _key(request, hash)
    back = reverse("keys", kwargs={"org": request.organization.slug})
    if request.method == "GET":
        return confirm(
            request,
            title=f"Delete the key {key.name}?",
            question=(
                f"The key {key.label} stops working at once, for good. Its usage history stays."
            ),
            action="Delete the key",
            cancel=back,
        )

    def delete():
        request.principal.check_key_manage(key)
        services.apikey_delete(key=key, actor=actor(request))

    return perform(request, delete, done=f"Key {key.name} deleted.", then=back)
