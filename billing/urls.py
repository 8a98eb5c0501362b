"""Pages of the billing app under `/o/<org-slug>/` (included by `portal.urls`)."""

from django.urls import path

from . import views_sync

urlpatterns = [
    # The OpenRouter credit sync (upstream sync)
    path("billing/openrouter/", views_sync.openrouter_page, name="billing-openrouter"),
    path(
        "billing/openrouter/connection/",
        views_sync.openrouter_connection,
        name="billing-openrouter-connection",
    ),
    path(
        "billing/openrouter/sync/", views_sync.openrouter_sync_now, name="billing-openrouter-sync"
    ),
    path(
        "billing/openrouter/disconnect/",
        views_sync.openrouter_disconnect,
        name="billing-openrouter-disconnect",
    ),
]
