"""Cursor pagination (stable under inserts, O(1) per page) for every list of the API."""

from rest_framework import pagination


class CursorPagination(pagination.CursorPagination):
    ordering = "-id"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 500
