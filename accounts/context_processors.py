"""What the page frame (`templates/base.html`) needs on every page: the organization switcher, the
navigation by section (each link only for roles that may open it), and the live balance and
notification bell widgets."""

from __future__ import annotations

from django.urls import NoReverseMatch, reverse

from .pages import page_url
from .selectors import organizations_for_user

# (label, URL names tried in order). A section is shown to those its page lets in (`page_url`:
# the scope the page's `organization_page` names); one whose page does not exist (yet) is left
# out rather than breaking the frame.
SECTIONS = (
    ("Dashboard", ("dashboard",)),
    ("Usage", ("usage", "usage-explorer")),
    ("Ledger", ("ledger",)),
    ("Budgets", ("budgets",)),
    ("My usage", ("me",)),
    ("Teams", ("teams",)),
    ("Members", ("members",)),
    ("Keys", ("keys",)),
    ("Audit", ("audit",)),
    ("Webhooks", ("webhooks",)),
    ("Upstreams", ("upstreams",)),
    # The billing area (billing members, admins and owners): its pages in a second row.
    ("Billing", ("billing-orders",)),
    ("Settings", ("org-settings",)),
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

# The second row of a section: (label, URL name, URL-name prefixes it covers), each shown as
# its page lets in (`page_url`).
SUBSECTIONS = {
    "Billing": (
        ("Orders", "billing-orders", ("billing-order",)),
        ("Buy credits", "billing-buy", ()),
        ("Invoices", "billing-documents", ("billing-invoice", "billing-credit")),
        ("Statements", "billing-statements", ("billing-statement",)),
        ("Top-up", "billing-topup", ()),
        ("Exports", "billing-exports", ("billing-export",)),
        ("Upstream sync", "billing-openrouter", ()),
        ("Billing settings", "billing-settings", ()),
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


# Sections whose page decides inside its view, which `page_url` cannot see.
_DECIDED_IN_VIEW = {"Teams": may_open_teams}


def _section_url(request, label: str, names: tuple[str, ...]) -> str | None:
    rule = _DECIDED_IN_VIEW.get(label)
    if rule is not None and not rule(request.principal):
        return None
    return next((url for name in names if (url := page_url(request, name)) is not None), None)


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
    for label, names in SECTIONS:
        url = _section_url(request, label, names)
        if url is None:
            continue
        active = _active(current, names + SECTION_PREFIXES.get(label, ()))
        item = {"label": label, "url": url, "active": active, "children": []}
        if active:
            for sub_label, name, covers in SUBSECTIONS.get(label, ()):
                sub_url = page_url(request, name)
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
