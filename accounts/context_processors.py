"""What the page frame (`templates/base.html`) needs on every page: the organization switcher, the
navigation by section (each link only for roles that may open it), and the live balance and
notification bell widgets."""

from __future__ import annotations

from django.urls import NoReverseMatch, reverse

from .selectors import organizations_for_user

# (label, URL names tried in order, who may open it). A section whose page does not exist (yet)
# is left out rather than breaking the frame.
SECTIONS = (
    ("Dashboard", ("dashboard",), "org:read"),
    ("Usage", ("usage", "usage-explorer"), "usage:read"),
    ("Ledger", ("ledger",), "credits:read"),
    ("Budgets", ("budgets",), "credits:read"),
    ("My usage", ("me",), "usage:read"),
    ("Teams", ("teams",), "teams"),
    ("Members", ("members",), "members:read"),
    ("Keys", ("keys",), "keys:read"),
    ("Audit", ("audit",), "audit:read"),
    ("Webhooks", ("webhooks",), "org:write"),
    ("Upstreams", ("upstreams",), "org:write"),
    # The billing area (billing members, admins and owners): its pages in a second row.
    ("Billing", ("billing-orders",), "billing:read"),
    ("Settings", ("org-settings",), "org:read"),
)
# Notifications are reached from the bell in the header (every member).

# URL names of each section's pages: the current section is marked for screen readers too.
SECTION_PREFIXES = {
    "Teams": ("team",),
    "Members": ("member", "invitation"),
    "Keys": ("key",),
    "Budgets": ("budget",),
    "Webhooks": ("webhook",),
    "Upstreams": ("upstream",),
    "Billing": ("billing",),
}

# The second row of a section: (label, URL name, who may open it, URL-name prefixes it covers).
SUBSECTIONS = {
    "Billing": (
        ("Orders", "billing-orders", "billing:read", ("billing-order",)),
        ("Buy credits", "billing-buy", "billing:write", ()),
        ("Invoices", "billing-documents", "billing:read", ("billing-invoice", "billing-credit")),
        ("Statements", "billing-statements", "billing:read", ("billing-statement",)),
        ("Top-up", "billing-topup", "billing:read", ()),
        ("Exports", "billing-exports", "billing:read", ("billing-export",)),
        ("Upstream sync", "billing-openrouter", "billing:read", ()),
        ("Billing settings", "billing-settings", "billing:read", ()),
    ),
}


def _active(current: str, names) -> bool:
    return bool(current) and any(
        current == name or current.startswith(f"{name}-") for name in names
    )


def may_open_teams(principal) -> bool:
    """The teams pages: members with `members:read`, and team managers (their teams only); a
    viewer never, whatever else they hold."""
    if principal.role == "viewer":
        return False
    return principal.has("members:read") or bool(principal.managed_team_ids)


def _reverse(names: tuple[str, ...], org: str) -> str | None:
    for name in names:
        try:
            return reverse(name, kwargs={"org": org})
        except NoReverseMatch:
            continue
    return None


def _allowed(principal, rule: str) -> bool:
    return may_open_teams(principal) if rule == "teams" else principal.has(rule)


def navigation(request) -> list[dict]:
    """The sections the principal may open, each `{"label", "url", "active", "children"}`; the
    active section's `children` are its second row (the billing pages), in the same shape."""
    principal = getattr(request, "principal", None)
    organization = getattr(request, "organization", None)
    if principal is None or organization is None:
        return []
    match = getattr(request, "resolver_match", None)
    current = match.url_name if match else ""
    items = []
    for label, names, rule in SECTIONS:
        if not _allowed(principal, rule):
            continue
        url = _reverse(names, organization.slug)
        if url is None:
            continue
        active = _active(current, names + SECTION_PREFIXES.get(label, ()))
        item = {"label": label, "url": url, "active": active, "children": []}
        if active:
            for sub_label, name, sub_rule, covers in SUBSECTIONS.get(label, ()):
                sub_url = _reverse((name,), organization.slug) if principal.has(sub_rule) else None
                if sub_url is not None:
                    item["children"].append(
                        {
                            "label": sub_label,
                            "url": sub_url,
                            "active": _active(current, (name, *covers)),
                        }
                    )
        items.append(item)
    return items


def organizations(request):
    """The organization switcher, the section navigation and the balance widget's URL."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    organization = getattr(request, "organization", None)
    principal = getattr(request, "principal", None)
    balance_url = None
    if organization is not None and principal is not None and principal.has("credits:read"):
        balance_url = _reverse(("balance-widget",), organization.slug)
    bell_url = notifications_url = None
    if organization is not None and principal is not None and principal.has("org:read"):
        bell_url = _reverse(("notification-bell",), organization.slug)
        notifications_url = _reverse(("notifications",), organization.slug)
    return {
        "my_organizations": organizations_for_user(user=user),
        "current_organization": organization,
        "nav_sections": navigation(request),
        "balance_widget_url": balance_url,
        "notification_bell_url": bell_url,
        "notifications_url": notifications_url,
    }
