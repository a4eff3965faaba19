"""The API's JSON parser: DRF's, with the failures it lets through turned into 4xx."""

import io

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from taskmgmt.api import PayloadTooLarge


class JSONParser(parsers.JSONParser):
    """Refuses bodies over DATA_UPLOAD_MAX_MEMORY_SIZE (413) and too deeply nested JSON (400).

    DRF reads a JSON body without Django's size check, and Python's json
    raises RecursionError, not ValueError, on deep nesting: both were 500s.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        body = stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(body) > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        try:
            return super().parse(io.BytesIO(body), media_type, parser_context)
        except RecursionError as error:
            raise ParseError("JSON parse error - nested too deeply.") from error
