"""Cursor pagination (stable under inserts, O(1) per page) for every list of the API.

A cursor is opaque to clients but only base64 of a query string: a crafted one (`p=abc` where the
position is an integer id) answered 500. Any cursor that does not decode to a position of the
ordering field's type is a 400 in the error format (DRF's own answer was a 404)."""

from django.core.exceptions import FieldDoesNotExist, ValidationError
from rest_framework import exceptions, pagination

from portal.errors import ValidationFailed


class CursorPagination(pagination.CursorPagination):
    ordering = "-id"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 500

    def paginate_queryset(self, queryset, request, view=None):
        self._model = queryset.model
        return super().paginate_queryset(queryset, request, view)

    def decode_cursor(self, request):
        try:
            cursor = super().decode_cursor(request)
        except exceptions.NotFound:
            raise self._invalid() from None
        if cursor is None or cursor.position is None:
            return cursor
        ordering = self.ordering[0] if isinstance(self.ordering, list | tuple) else self.ordering
        if "\x00" in cursor.position:
            raise self._invalid()
        try:
            field = self._model._meta.get_field(ordering.lstrip("-"))
        except FieldDoesNotExist:  # an annotation: compared as given
            return cursor
        try:
            position = field.to_python(cursor.position)
        except (ValidationError, ValueError, TypeError, OverflowError):
            raise self._invalid() from None
        return cursor._replace(position=position)

    def _invalid(self) -> ValidationFailed:
        return ValidationFailed({self.cursor_query_param: ["Invalid cursor."]})
