"""Django admin is for the installation's operators (staff). Tenant data is read-only there: no
add, change or delete through admin forms, since those would bypass the services (their rules,
locks and audit events). What operators may do to a tenant's rows is a set of admin actions, each
calling a service with the operator as the actor (`Actor.from_request`), and so audited."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from accounts.audit import Actor
from portal.errors import ApplicationError


class ReadOnlyAdmin(admin.ModelAdmin):
    """Staff may list and view; nobody adds, changes or deletes through the admin's forms.

    Actions that declare `permissions=["operate"]` are for staff holding the model's Django
    `change` permission (superusers do); each must call a service."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_operate_permission(self, request) -> bool:
        user = request.user
        opts = self.opts
        return bool(
            user.is_active
            and user.is_staff
            and user.has_perm(f"{opts.app_label}.change_{opts.model_name}")
        )

    def apply_service(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        call: Callable[[Model, Actor], Any],
        done: str,
    ) -> None:
        """Run `call(obj, actor)` for each selected row; report what was done and each refusal
        (a service's own error message, e.g. "An organization keeps at least one owner.")."""
        actor = Actor.from_request(request)
        succeeded = 0
        for obj in queryset:
            try:
                call(obj, actor)
            except ApplicationError as exc:
                self.message_user(request, f"{obj}: {exc.message}", messages.ERROR)
            else:
                succeeded += 1
        if succeeded:
            self.message_user(request, f"{done}: {succeeded}.", messages.SUCCESS)


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
