"""Pages of the accounts app under `/o/<org-slug>/` (included by `portal.urls`)."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
]
