"""Pages of the credits app under `/o/<org-slug>/` (included by `portal.urls`)."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("balance/", views.balance_widget, name="balance-widget"),
    path("usage/", views.usage, name="usage"),
    path("usage/export.csv", views.usage_export, name="usage-export"),
    path("ledger/", views.ledger, name="ledger"),
    path("ledger/accounts/<int:pk>/", views.ledger_account, name="ledger-account"),
    path("team-balances/", views.team_balances, name="team-balances"),
    path("teams/<slug:slug>/allocate/", views.team_allocate, name="team-allocate"),
    path("me/", views.me, name="me"),
]
