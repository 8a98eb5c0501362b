"""API authorization by scope (Sentry's `scope_map`): each view names the scope each HTTP method
needs; the request's principal (`accounts.access.Principal`: an API key, or a member's session)
must hold it. Finer decisions (bindings, team managers, the role hierarchy) are the principal's
`check_*` methods, called by the views."""

from __future__ import annotations

from rest_framework import permissions


class HasScope(permissions.BasePermission):
    """Grants a request when its principal holds `view.scope_map[request.method]`, or when the
    view's `delegated(principal, **kwargs)` says a team manager may go on (the view then checks
    the object itself).

    A view without an entry for the method is refused: forgetting a scope never opens a route.
    401 (not 403) when there is no principal at all."""

    message = "This API key lacks the scope this action needs."

    def has_permission(self, request, view) -> bool:
        principal = getattr(request, "principal", None)
        if principal is None:
            if getattr(request.user, "is_authenticated", False):
                named = request.headers.get("X-Organization")
                self.message = (
                    f"You are not a member of an organization '{named[:50]}'."
                    if named  # the same whether it exists or not
                    else "Name the organization in the X-Organization header."
                )
            return False
        if not callable(getattr(view, request.method.lower(), None)):
            return True  # the view has no such method: DRF answers 405, not 403
        needed = getattr(view, "scope_map", {}).get(request.method)
        if request.method in ("HEAD", "OPTIONS"):
            needed = getattr(view, "scope_map", {}).get("GET", needed)
        if needed is None:
            return False
        if principal.has(needed):
            return True
        delegated = getattr(view, "delegated", None)
        if delegated is not None and delegated(principal, **view.kwargs):
            return True
        who = "API key" if principal.key is not None else "role"
        self.message = f"This {who} lacks the '{needed}' scope."
        return False
