"""Pages of the notifications app under `/o/<org-slug>/` (included by `portal.urls`)."""

from django.urls import path

from . import views

urlpatterns = [
    path("notifications/", views.notification_list, name="notifications"),
    path("notifications/bell/", views.notification_bell, name="notification-bell"),
    path("notifications/read-all/", views.notification_read_all, name="notifications-read-all"),
    path(
        "notifications/preferences/",
        views.notification_preferences,
        name="notification-preferences",
    ),
    path("notifications/<str:id>/read/", views.notification_read, name="notification-read"),
    path("webhooks/", views.webhook_list, name="webhooks"),
    path("webhooks/new/", views.webhook_create, name="webhook-create"),
    path("webhooks/<str:id>/", views.webhook_edit, name="webhook-edit"),
    path("webhooks/<str:id>/secret/", views.webhook_secret, name="webhook-secret"),
    path("webhooks/<str:id>/rotate/", views.webhook_rotate, name="webhook-rotate"),
    path("webhooks/<str:id>/delete/", views.webhook_delete, name="webhook-delete"),
    path("webhooks/<str:id>/test/", views.webhook_test, name="webhook-test"),
    path("webhooks/<str:id>/deliveries/", views.webhook_deliveries, name="webhook-deliveries"),
    path(
        "webhooks/<str:id>/deliveries/<str:message_id>/resend/",
        views.webhook_resend,
        name="webhook-resend",
    ),
]
