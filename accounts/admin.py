from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from guardian.admin import GuardedModelAdmin

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


@admin.register(User)
class UserAdmin(BaseUserAdmin):
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


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "currency", "billing_email", "created_at"]
    search_fields = ["slug", "name", "billing_email"]
    inlines = [MembershipInline]


class TeamMembershipInline(admin.TabularInline):
    model = TeamMembership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(GuardedModelAdmin):
    list_display = ["slug", "name", "organization", "funding", "created_at"]
    list_filter = ["funding", "organization"]
    search_fields = ["slug", "name", "organization__slug"]
    inlines = [TeamMembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "organization", "role", "created_at"]
    list_filter = ["role", "organization"]
    search_fields = ["user__email", "organization__slug"]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["email", "organization", "role", "status", "created_at", "expires_at"]
    list_filter = ["role", "organization"]
    search_fields = ["email"]
    exclude = ["nonce"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
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
    search_fields = ["name", "label", "hash"]
    readonly_fields = ["hash", "label", "created_at", "updated_at", "last_used_at", "deleted_at"]

    def has_add_permission(self, request):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the audit log is append-only (the database refuses UPDATE and DELETE too)."""

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
    search_fields = ["action", "actor_label", "target_label"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(TeamUserObjectPermission)
class TeamUserObjectPermissionAdmin(admin.ModelAdmin):
    """Team managers' object permissions (django-guardian); set them through team roles."""

    list_display = ["user", "permission", "content_object"]
    list_filter = ["permission"]
    search_fields = ["user__email", "content_object__slug"]


@admin.register(TeamGroupObjectPermission)
class TeamGroupObjectPermissionAdmin(admin.ModelAdmin):
    list_display = ["group", "permission", "content_object"]
    list_filter = ["permission"]
