"""Request parsing with limits. DRF reads the body stream itself and so skips Django's
`DATA_UPLOAD_MAX_MEMORY_SIZE`: this parser applies it (413). It also refuses, with 400 in the error
format and before anything reaches the database, JSON that no column can store or that would
exhaust the stack: nesting deeper than `MAX_JSON_DEPTH`, and strings (keys included) holding a NUL
character (PostgreSQL refuses it in text and jsonb) or a lone UTF-16 surrogate such as `"\\ud800"`
(not encodable as UTF-8)."""

import io

from django.conf import settings
from rest_framework.parsers import JSONParser

from portal.errors import PayloadTooLarge, ValidationFailed

MAX_JSON_DEPTH = 64


def _bad_string(value: str) -> str | None:
    if "\x00" in value:
        return "NUL characters are not allowed."
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "Lone surrogates (invalid Unicode) are not allowed."
    return None


def check_json(data) -> None:
    """Raise ValidationFailed naming the first place (`metadata.k`, `events[0].id`) where `data`
    nests deeper than MAX_JSON_DEPTH or has a string no database column can store."""
    stack = [(data, "", 1)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ValidationFailed(
                    {where or "body": [f"Nested deeper than {MAX_JSON_DEPTH} levels."]}
                )
            if isinstance(value, dict):
                for key, item in value.items():
                    path = f"{where}.{key}" if where else str(key)
                    problem = _bad_string(key)
                    if problem:
                        raise ValidationFailed({_printable(path): [problem]})
                    stack.append((item, path, depth + 1))
            else:
                stack.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))
        elif isinstance(value, str):
            problem = _bad_string(value)
            if problem:
                raise ValidationFailed({_printable(where or "body"): [problem]})


def _printable(path: str) -> str:
    """The path as it can go into the error body (itself JSON, stored nowhere)."""
    return path.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")


class LimitedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = (parser_context or {}).get("request")
        length = request.META.get("CONTENT_LENGTH") if request is not None else None
        if length and length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(f"Request body over {limit} bytes.", limit_bytes=limit)
        if stream is not None and hasattr(stream, "read"):
            data = stream.read(limit + 1)
            if len(data) > limit:
                raise PayloadTooLarge(f"Request body over {limit} bytes.", limit_bytes=limit)

            stream = io.BytesIO(data)
        try:
            parsed = super().parse(stream, media_type, parser_context)
        except RecursionError:  # deeper than the decoder's own limit (about 1,000 levels)
            raise ValidationFailed(
                {"body": [f"Nested deeper than {MAX_JSON_DEPTH} levels."]}
            ) from None
        check_json(parsed)
        return parsed
