"""Shared plumbing of management commands: application errors become a clean CommandError."""

from __future__ import annotations

from contextlib import contextmanager

from django.core.management.base import CommandError

from accounts.models import Organization
from portal.errors import ApplicationError


@contextmanager
def command_errors():
    try:
        yield
    except ApplicationError as exc:
        details = exc.metadata.get("errors")
        raise CommandError(f"{exc.message}" + (f" {details}" if details else "")) from None


def organization_arg(slug: str) -> Organization:
    organization = Organization.objects.filter(slug=slug).first()
    if organization is None:
        raise CommandError(f"No organization '{slug}'.")
    return organization
