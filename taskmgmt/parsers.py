"""The API's JSON parser: DRF's, with the failure it lets through turned into a 400;
and the one route-wide exception to the request body's size limit."""

import codecs
import functools
from io import BytesIO

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from taskmgmt.exceptions import PayloadTooLarge


class JSONParser(parsers.JSONParser):
    """Python's json raises RecursionError, not ValueError, on deeply nested
    input, which DRF's parser let through as a 500; and refuses a body that starts
    with a UTF-8 byte order mark, which the original's Express parser skipped."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(past_bom(stream), media_type, parser_context)
        except RecursionError as error:
            raise ParseError("JSON parse error - nested too deeply.") from error


def past_bom(stream):
    """`stream`, read from past a UTF-8 byte order mark if it starts with one."""
    head = stream.read(len(codecs.BOM_UTF8))
    if head == codecs.BOM_UTF8:
        return stream
    if stream.seekable():  # DRF's and the hot path's: the body, in memory
        stream.seek(0)
        return stream
    return BytesIO(head + stream.read())


def body_up_to(setting: str):
    """Lets a viewset action take a body up to `settings.<setting>` bytes where every
    other route stops at DATA_UPLOAD_MAX_MEMORY_SIZE (a bulk create of a thousand tasks
    with payloads). Put it above any decorator that reads `request.data`. It runs after
    DRF's authentication, permissions and throttles: only a caller the route admits
    makes the server read that much."""

    def decorator(action):
        @functools.wraps(action)
        def wrapper(self, request, *args, **kwargs):
            read_body(request._request, getattr(settings, setting))
            return action(self, request, *args, **kwargs)

        return wrapper

    return decorator


def read_body(request, limit: int) -> None:
    """Reads the body of a Django request of at most `limit` bytes (or of the general
    limit, if higher) before Django's `request.body` would refuse it as over
    DATA_UPLOAD_MAX_MEMORY_SIZE; PayloadTooLarge (413) past it.

    Django's only way round its check is the read body it keeps (`_body`, and its
    stream for readers): set as `HttpRequest.body` sets them (tested through Django's
    test client in tests/tasks/test_api_bulk.py, through gunicorn in test_serving.py).
    """
    general = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if general is None or hasattr(request, "_body") or request._read_started:
        return  # no limit, or read already: Django's own path
    limit = max(limit, general)
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise ParseError("The Content-Length header is not a number.") from None
    if length > limit:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
    if length <= general:
        return  # within Django's own limit
    body = request.read()  # WSGI's stream ends at the Content-Length
    request._body = body
    request._stream = BytesIO(body)
