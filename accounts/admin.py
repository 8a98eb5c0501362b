"""Operators' views of users and tenants. Tenant rows (organizations, teams, memberships,
invitations, API keys, permissions, the audit log) are read-only here; operators act on them with
admin actions that call `accounts.services` and are audited (see `portal.admin`)."""

from django import forms
from django.contrib import admin
from django.contrib.admin.helpers import ActionForm
from django.contrib.auth import forms as auth_forms
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from portal.admin import ReadOnlyAdmin, ReadOnlyInline

from . import services
from .models import (
    ApiKey,
    AuditEvent,
    Invitation,
    Membership,
    Organization,
    Team,
    TeamGroupObjectPermission,
    TeamMembership,
    TeamUserObjectPermission,
    User,
)
from .roles import Role


class _EmailInLowerCase:
    """An e-mail as the services keep it (lower case), unique whatever its case."""

    def clean_email(self):
        email = self.cleaned_data["email"].strip().lower()
        if User.objects.filter(email__iexact=email).exclude(pk=self.instance.pk).exists():
            raise forms.ValidationError("A user with this e-mail address exists.")
        return email


class UserChangeForm(_EmailInLowerCase, auth_forms.UserChangeForm):
    class Meta(auth_forms.UserChangeForm.Meta):
        model = User
        fields = "__all__"


class UserCreationForm(_EmailInLowerCase, auth_forms.UserCreationForm):
    class Meta(auth_forms.UserCreationForm.Meta):
        model = User
        fields = ("email",)


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    """People are the installation's, not a tenant's: operators edit them (deactivate rather than
    delete: deleting would drop their memberships past the services)."""

    form = UserChangeForm
    add_form = UserCreationForm
    ordering = ["email"]
    list_display = ["email", "first_name", "last_name", "is_staff", "is_active", "last_login"]
    search_fields = ["email", "first_name", "last_name"]
    fieldsets = [
        (None, {"fields": ["email", "password"]}),
        ("Person", {"fields": ["first_name", "last_name"]}),
        ("Access", {"fields": ["is_active", "is_staff", "is_superuser", "groups"]}),
        ("Dates", {"fields": ["last_login", "date_joined"]}),
    ]
    add_fieldsets = [(None, {"classes": ["wide"], "fields": ["email", "password1", "password2"]})]

    def has_delete_permission(self, request, obj=None):
        return False


class MembershipInline(ReadOnlyInline):
    model = Membership
    fields = ["user", "role", "created_at"]


@admin.register(Organization)
class OrganizationAdmin(ReadOnlyAdmin):
    list_display = ["slug", "name", "currency", "time_zone", "billing_email", "created_at"]
    search_fields = ["slug", "name", "billing_email"]
    inlines = [MembershipInline]


class TeamMembershipInline(ReadOnlyInline):
    model = TeamMembership
    fields = ["user", "role", "created_at"]


@admin.register(Team)
class TeamAdmin(ReadOnlyAdmin):
    list_display = ["slug", "name", "organization", "funding", "created_at"]
    list_filter = ["funding", "organization"]
    list_select_related = ["organization"]
    search_fields = ["slug", "name", "organization__slug"]
    inlines = [TeamMembershipInline]


class RoleActionForm(ActionForm):
    role = forms.ChoiceField(
        choices=[("", "(for “Set the role”)")] + list(Role.choices), required=False
    )


@admin.register(Membership)
class MembershipAdmin(ReadOnlyAdmin):
    list_display = ["user", "organization", "role", "created_at"]
    list_filter = ["role", "organization"]
    list_select_related = ["user", "organization"]
    search_fields = ["user__email", "organization__slug"]
    action_form = RoleActionForm
    actions = ["set_role", "remove_members"]

    @admin.action(description="Set the role of the selected members", permissions=["operate"])
    def set_role(self, request, queryset):
        role = request.POST.get("role", "")
        self.apply_service(
            request,
            queryset,
            lambda m, actor: services.membership_role_set(membership=m, role=role, actor=actor),
            f"Role set to {role or '(none)'}",
        )

    @admin.action(description="Remove the selected members", permissions=["operate"])
    def remove_members(self, request, queryset):
        self.apply_service(
            request,
            queryset,
            lambda m, actor: services.membership_remove(membership=m, actor=actor),
            "Members removed",
        )


@admin.register(TeamMembership)
class TeamMembershipAdmin(ReadOnlyAdmin):
    list_display = ["user", "team", "role", "created_at"]
    list_filter = ["role"]
    list_select_related = ["user", "team__organization"]
    search_fields = ["user__email", "team__slug", "team__organization__slug"]
    actions = ["remove_from_team"]

    @admin.action(description="Take the selected members off their team", permissions=["operate"])
    def remove_from_team(self, request, queryset):
        self.apply_service(
            request,
            queryset,
            lambda tm, actor: services.team_member_remove(team=tm.team, user=tm.user, actor=actor),
            "Taken off their team",
        )


@admin.register(Invitation)
class InvitationAdmin(ReadOnlyAdmin):
    list_display = ["email", "organization", "role", "status", "created_at", "expires_at"]
    list_filter = ["role", "organization"]
    list_select_related = ["organization"]
    search_fields = ["email"]
    exclude = ["nonce"]
    actions = ["revoke"]

    @admin.action(description="Revoke the selected invitations", permissions=["operate"])
    def revoke(self, request, queryset):
        self.apply_service(
            request,
            queryset,
            lambda inv, actor: services.invitation_revoke(invitation=inv, actor=actor),
            "Invitations revoked",
        )


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdmin):
    """Keys are created through the API or `apikey_create` (the secret is shown only then)."""

    list_display = [
        "name",
        "label",
        "organization",
        "kind",
        "team",
        "user",
        "disabled",
        "limit",
        "limit_reset",
        "last_used_at",
        "deleted_at",
    ]
    list_filter = ["kind", "disabled", "organization"]
    list_select_related = ["organization", "team", "user"]
    search_fields = ["name", "label", "hash"]
    actions = ["disable_keys", "enable_keys", "delete_keys"]

    @admin.action(description="Disable the selected keys", permissions=["operate"])
    def disable_keys(self, request, queryset):
        self.apply_service(
            request,
            queryset,
            lambda key, actor: services.apikey_update(key=key, disabled=True, actor=actor),
            "Keys disabled",
        )

    @admin.action(description="Enable the selected keys", permissions=["operate"])
    def enable_keys(self, request, queryset):
        self.apply_service(
            request,
            queryset.filter(deleted_at__isnull=True),
            lambda key, actor: services.apikey_update(key=key, disabled=False, actor=actor),
            "Keys enabled",
        )

    @admin.action(description="Delete the selected keys for good", permissions=["operate"])
    def delete_keys(self, request, queryset):
        self.apply_service(
            request,
            queryset,
            lambda key, actor: services.apikey_delete(key=key, actor=actor),
            "Keys deleted",
        )


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """The audit log is append-only (the database refuses UPDATE and DELETE too)."""

    list_display = [
        "created_at",
        "organization",
        "sequence",
        "action",
        "actor_label",
        "target_type",
        "target_label",
        "ip_address",
    ]
    list_filter = ["action", "organization"]
    list_select_related = ["organization"]
    search_fields = ["action", "actor_label", "target_label"]
    date_hierarchy = "created_at"


@admin.register(TeamUserObjectPermission)
class TeamUserObjectPermissionAdmin(ReadOnlyAdmin):
    """Team managers' object permissions (django-guardian); they follow team roles."""

    list_display = ["user", "permission", "content_object"]
    list_filter = ["permission"]
    search_fields = ["user__email", "content_object__slug"]


@admin.register(TeamGroupObjectPermission)
class TeamGroupObjectPermissionAdmin(ReadOnlyAdmin):
    list_display = ["group", "permission", "content_object"]
    list_filter = ["permission"]
