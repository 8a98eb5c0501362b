"""URLs: the pages (`/`, `/o/<org-slug>/...`), Django admin (`/admin/`), the REST API under
`/api/v1/` with its OpenAPI schema, and the operators' endpoints (`/healthz`, `/readyz`,
`/metrics`: docs/operations.md). API paths have no trailing slash (OpenRouter's SDKs send
none)."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts import apis as accounts_apis
from accounts import apis_openrouter as accounts_openrouter
from accounts import views
from billing import urls as billing_urls
from credits import apis as credits_apis
from credits import (
    apis_budgets,
    apis_gateway,
    apis_guardrails,
    apis_keys,
    apis_openrouter,
    apis_usage,
)
from notifications import apis as notifications_apis
from portal import health, metrics

from .views import LoginView, PasswordResetView

api_v1 = [
    path("organization", accounts_apis.OrganizationApi.as_view(), name="organization"),
    path("teams", accounts_apis.TeamListApi.as_view(), name="teams"),
    path("teams/<slug:slug>", accounts_apis.TeamDetailApi.as_view(), name="team"),
    path("teams/<slug:slug>/members", accounts_apis.TeamMembersApi.as_view(), name="team-members"),
    path(
        "teams/<slug:slug>/members/<int:pk>",
        accounts_apis.TeamMemberDetailApi.as_view(),
        name="team-member",
    ),
    path("members", accounts_apis.MemberListApi.as_view(), name="members"),
    path("members/<int:pk>", accounts_apis.MemberDetailApi.as_view(), name="member"),
    path("invitations", accounts_apis.InvitationListApi.as_view(), name="invitations"),
    path("invitations/<int:pk>", accounts_apis.InvitationDetailApi.as_view(), name="invitation"),
    path(
        "invitations/<int:pk>/resend",
        accounts_apis.InvitationResendApi.as_view(),
        name="invitation-resend",
    ),
    path("keys", apis_keys.KeyListApi.as_view(), name="keys"),
    path("keys/<str:hash>", apis_keys.KeyDetailApi.as_view(), name="key-detail"),
    path("key", apis_openrouter.CurrentKeyApi.as_view(), name="key-current"),
    path("credits", apis_openrouter.CreditsApi.as_view(), name="credits"),
    path("generation", apis_openrouter.GenerationApi.as_view(), name="generation"),
    path("activity", apis_openrouter.ActivityApi.as_view(), name="activity"),
    path("chat/completions", apis_gateway.ChatCompletionsApi.as_view(), name="chat-completions"),
    path("models", apis_gateway.ModelsApi.as_view(), name="models"),
    path("upstreams", apis_gateway.UpstreamListApi.as_view(), name="upstreams"),
    path("upstreams/<str:id>", apis_gateway.UpstreamDetailApi.as_view(), name="upstream"),
    path(
        "organization/members",
        accounts_openrouter.OrganizationMembersApi.as_view(),
        name="organization-members",
    ),
    path("audit-events", accounts_apis.AuditEventListApi.as_view(), name="audit-events"),
    path("credits/balance", credits_apis.BalanceApi.as_view(), name="credits-balance"),
    path("credits/accounts", credits_apis.AccountListApi.as_view(), name="credits-accounts"),
    path(
        "credits/accounts/<int:pk>", credits_apis.AccountDetailApi.as_view(), name="credits-account"
    ),
    path(
        "credits/accounts/<int:pk>/entries",
        credits_apis.AccountEntriesApi.as_view(),
        name="credits-account-entries",
    ),
    path("credits/lots", credits_apis.LotListApi.as_view(), name="credits-lots"),
    path("credits/allocations", credits_apis.AllocationApi.as_view(), name="credits-allocations"),
    path("credits/usage", apis_usage.UsageApi.as_view(), name="credits-usage"),
    path(
        "credits/authorizations",
        apis_usage.AuthorizationCreateApi.as_view(),
        name="credits-authorizations",
    ),
    path(
        "credits/authorizations/<str:id>/capture",
        apis_usage.AuthorizationCaptureApi.as_view(),
        name="credits-authorization-capture",
    ),
    path(
        "credits/authorizations/<str:id>/void",
        apis_usage.AuthorizationVoidApi.as_view(),
        name="credits-authorization-void",
    ),
    path("credits/report", apis_usage.ReportApi.as_view(), name="credits-report"),
    path("credits/forecast", credits_apis.ForecastApi.as_view(), name="credits-forecast"),
    path("notifications", notifications_apis.NotificationListApi.as_view(), name="notifications"),
    path(
        "notifications/read-all",
        notifications_apis.NotificationReadAllApi.as_view(),
        name="notifications-read-all",
    ),
    path(
        "notifications/<str:id>/read",
        notifications_apis.NotificationReadApi.as_view(),
        name="notification-read",
    ),
    path(
        "notification-preferences",
        notifications_apis.NotificationPreferencesApi.as_view(),
        name="notification-preferences",
    ),
    path("webhooks", notifications_apis.WebhookListApi.as_view(), name="webhooks"),
    path("webhooks/<str:id>", notifications_apis.WebhookDetailApi.as_view(), name="webhook"),
    path(
        "webhooks/<str:id>/rotate-secret",
        notifications_apis.WebhookRotateSecretApi.as_view(),
        name="webhook-rotate-secret",
    ),
    path(
        "webhooks/<str:id>/test", notifications_apis.WebhookTestApi.as_view(), name="webhook-test"
    ),
    path(
        "webhooks/<str:id>/deliveries",
        notifications_apis.WebhookDeliveriesApi.as_view(),
        name="webhook-deliveries",
    ),
    path(
        "webhooks/<str:id>/deliveries/<str:message_id>/resend",
        notifications_apis.WebhookResendApi.as_view(),
        name="webhook-resend",
    ),
    path("budgets", apis_budgets.BudgetListApi.as_view(), name="budgets"),
    path("budgets/<uuid:id>", apis_budgets.BudgetDetailApi.as_view(), name="budget-detail"),
    path("alerts", apis_budgets.AlertListApi.as_view(), name="alerts"),
    path(
        "alerts/<uuid:id>/acknowledge",
        apis_budgets.AlertAcknowledgeApi.as_view(),
        name="alert-acknowledge",
    ),
    path("guardrails", apis_guardrails.GuardrailListApi.as_view(), name="guardrails"),
    path(
        "guardrails/assignments/keys",
        apis_guardrails.KeyAssignmentsApi.as_view(),
        name="guardrail-key-assignments-all",
    ),
    path(
        "guardrails/assignments/members",
        apis_guardrails.MemberAssignmentsApi.as_view(),
        name="guardrail-member-assignments-all",
    ),
    path("guardrails/<uuid:id>", apis_guardrails.GuardrailDetailApi.as_view(), name="guardrail"),
    path(
        "guardrails/<uuid:id>/assignments/keys",
        apis_guardrails.GuardrailKeyAssignmentsApi.as_view(),
        name="guardrail-key-assignments",
    ),
    path(
        "guardrails/<uuid:id>/assignments/keys/remove",
        apis_guardrails.GuardrailKeyUnassignApi.as_view(),
        name="guardrail-key-unassign",
    ),
    path(
        "guardrails/<uuid:id>/assignments/members",
        apis_guardrails.GuardrailMemberAssignmentsApi.as_view(),
        name="guardrail-member-assignments",
    ),
    path(
        "guardrails/<uuid:id>/assignments/members/remove",
        apis_guardrails.GuardrailMemberUnassignApi.as_view(),
        name="guardrail-member-unassign",
    ),
    *billing_urls.api_patterns,
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its start-up script as a file: no inline script (the CSP).
    path(
        "schema/swagger/",
        SpectacularSwaggerSplitView.as_view(url_name="api:schema"),
        name="swagger",
    ),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password-reset/", PasswordResetView.as_view(), name="password_reset"),
    path(
        "password-reset/done/",
        auth_views.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "reset/done/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path("invitations/<str:token>/", views.invitation_accept, name="invitation-accept"),
    path("o/<slug:org>/", include("accounts.urls")),
    path("o/<slug:org>/", include("credits.urls")),
    path("o/<slug:org>/", include("notifications.urls")),
    path("o/<slug:org>/", include("billing.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include((api_v1, "api"))),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
]

handler404 = "portal.views.not_found"
handler500 = "portal.views.server_error"
