"""Request parsing with a size limit: DRF reads the body stream itself and so skips Django's
`DATA_UPLOAD_MAX_MEMORY_SIZE`; this parser applies it and answers 413 in the error format."""

import io

from django.conf import settings
from rest_framework.parsers import JSONParser

from portal.errors import PayloadTooLarge


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
        return super().parse(stream, media_type, parser_context)
