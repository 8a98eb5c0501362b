"""Pages of the billing app under `/o/<org-slug>/` (included by `portal.urls`)."""

from django.urls import path

from . import views_topup

urlpatterns = [
    # Automatic top-up
    path("billing/topup/", views_topup.topup, name="billing-topup"),
    path("billing/topup/card/", views_topup.topup_card, name="billing-topup-card"),
    path(
        "billing/topup/<uuid:id>/approve/", views_topup.topup_approve, name="billing-topup-approve"
    ),
    path("billing/topup/<uuid:id>/reject/", views_topup.topup_reject, name="billing-topup-reject"),
]
