"""Error handlers: the API's error format under /api/, plain pages elsewhere."""

from django.views.defaults import page_not_found
from django.views.defaults import server_error as html_server_error

from .errors import json_error_response


def not_found(request, exception=None):
    if request.path.startswith("/api/"):
        return json_error_response(404, "Not found.", "not_found")
    return page_not_found(request, exception)


def server_error(request):
    if request.path.startswith("/api/"):
        return json_error_response(500, "Internal error; it was logged.", "internal_error")
    return html_server_error(request)
