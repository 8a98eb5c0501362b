"""API authorization by scope (Sentry's `scope_map`): each view names the scope each HTTP method
needs; the calling key must hold it (see `accounts.selectors.key_scopes`)."""

from __future__ import annotations

from rest_framework import permissions

from accounts.models import ApiKey
from accounts.selectors import key_scopes


class HasScope(permissions.BasePermission):
    """Grants a request when its API key holds `view.scope_map[request.method]`.

    A view without an entry for the method is refused: forgetting a scope never opens a route.
    401 (not 403) when there is no key at all."""

    message = "This API key lacks the scope this action needs."

    def has_permission(self, request, view) -> bool:
        key = request.auth
        if not isinstance(key, ApiKey):
            return False
        if not callable(getattr(view, request.method.lower(), None)):
            return True  # the view has no such method: DRF answers 405, not 403
        needed = getattr(view, "scope_map", {}).get(request.method)
        if request.method in ("HEAD", "OPTIONS"):
            needed = getattr(view, "scope_map", {}).get("GET", needed)
        if needed is None:
            return False
        scopes = key_scopes(key)
        if needed not in scopes:
            self.message = f"This API key lacks the '{needed}' scope."
            return False
        return True
