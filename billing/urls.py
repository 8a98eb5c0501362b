"""Pages of the billing app under `/o/<org-slug>/` (included by `portal.urls`)."""

from django.urls import path

from . import views_exports

urlpatterns = [
    # Exports (billing/views_exports.py)
    path("billing/exports/", views_exports.exports, name="billing-exports"),
    path("billing/exports/jobs/", views_exports.export_jobs, name="billing-export-jobs"),
    path(
        "billing/exports/<uuid:id>/download/",
        views_exports.export_download,
        name="billing-export-download",
    ),
    # (end of exports)
]
