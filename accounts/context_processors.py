from .selectors import organizations_for_user


def organizations(request):
    """The organization switcher: the user's organizations and the current one."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {
        "my_organizations": organizations_for_user(user=user),
        "current_organization": getattr(request, "organization", None),
    }
