"""Pages of the accounts app under `/o/<org-slug>/` (included by `portal.urls`)."""

from django.urls import path

from . import views_keys, views_members, views_organization, views_teams

urlpatterns = [
    # Teams
    path("teams/", views_teams.team_list, name="teams"),
    path("teams/new/", views_teams.team_create, name="team-create"),
    path("teams/<slug:slug>/", views_teams.team_detail, name="team-detail"),
    path("teams/<slug:slug>/edit/", views_teams.team_edit, name="team-edit"),
    path("teams/<slug:slug>/members/", views_teams.team_member_add, name="team-member-add"),
    path(
        "teams/<slug:slug>/members/<int:pk>/role/",
        views_teams.team_member_role,
        name="team-member-role",
    ),
    path(
        "teams/<slug:slug>/members/<int:pk>/remove/",
        views_teams.team_member_remove,
        name="team-member-remove",
    ),
    # Members and invitations
    path("members/", views_members.member_list, name="members"),
    path("members/invite/", views_members.member_invite, name="member-invite"),
    path("members/<int:pk>/role/", views_members.member_role, name="member-role"),
    path("members/<int:pk>/remove/", views_members.member_remove, name="member-remove"),
    path(
        "invitations/<int:pk>/resend/",
        views_members.invitation_resend,
        name="invitation-resend",
    ),
    path(
        "invitations/<int:pk>/revoke/",
        views_members.invitation_revoke,
        name="invitation-revoke",
    ),
    # API keys
    path("keys/", views_keys.key_list, name="keys"),
    path("keys/new/", views_keys.key_create, name="key-create"),
    path("keys/<str:hash>/", views_keys.key_edit, name="key-edit"),
    path("keys/<str:hash>/created/", views_keys.key_created, name="key-created"),
    path("keys/<str:hash>/toggle/", views_keys.key_toggle, name="key-toggle"),
    path("keys/<str:hash>/delete/", views_keys.key_delete, name="key-delete"),
    # The organization
    path("audit/", views_organization.audit_log, name="audit"),
    path("settings/", views_organization.organization_settings, name="org-settings"),
]
