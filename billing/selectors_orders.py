"""Reads of orders, scoped to one organization (the API's and the pages' tenant)."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from accounts.models import Organization
from portal.errors import NotFound

from .models import Order


def orders_of(organization: Organization) -> QuerySet[Order]:
    """The organization's orders, newest first, with their invoice."""
    return Order.objects.filter(organization=organization).select_related("invoice")


def order_get(*, organization: Organization, public_id) -> Order:
    """One of the organization's orders by its public id. Raises NotFound for another
    organization's order, an unknown or malformed id (the same answer: no existence leak)."""
    try:
        public_id = uuid.UUID(str(public_id))
    except (ValueError, TypeError):
        raise NotFound("No such order.") from None
    order = orders_of(organization).filter(public_id=public_id).first()
    if order is None:
        raise NotFound("No such order.")
    return order
