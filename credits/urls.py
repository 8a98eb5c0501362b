"""Pages of the credits app under `/o/<org-slug>/` (included by `portal.urls`)."""

from django.urls import path

from . import views, views_budgets, views_upstreams

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path(
        "dashboard/conversations/",
        views.dashboard_conversations,
        name="dashboard-conversations",
    ),
    path("balance/", views.balance_widget, name="balance-widget"),
    path("usage/", views.usage, name="usage"),
    path("usage/export.csv", views.usage_export, name="usage-export"),
    path("ledger/", views.ledger, name="ledger"),
    path("ledger/accounts/<int:pk>/", views.ledger_account, name="ledger-account"),
    path("team-balances/", views.team_balances, name="team-balances"),
    path("teams/<slug:slug>/allocate/", views.team_allocate, name="team-allocate"),
    path("me/", views.me, name="me"),
    path("budgets/", views_budgets.budgets, name="budgets"),
    path("budgets/<uuid:id>/edit/", views_budgets.budget_edit, name="budget-edit"),
    path("budgets/<uuid:id>/delete/", views_budgets.budget_delete, name="budget-delete"),
    path(
        "budgets/alerts/<uuid:id>/acknowledge/",
        views_budgets.alert_acknowledge,
        name="budget-alert-acknowledge",
    ),
    path("upstreams/", views_upstreams.upstream_list, name="upstreams"),
    path("upstreams/new/", views_upstreams.upstream_new, name="upstream-create"),
    path("upstreams/<uuid:id>/", views_upstreams.upstream_edit, name="upstream-edit"),
    path("upstreams/<uuid:id>/delete/", views_upstreams.upstream_remove, name="upstream-delete"),
]
