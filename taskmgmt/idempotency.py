"""Safe retries of the writes that create something: the `Idempotency-Key` header.

A client whose request timed out sends it again with the same key. The first
request to arrive under a key holds it while it runs; its answer is then kept
in the shared cache (Redis in production, so every worker and host sees it) for
IDEMPOTENCY_KEY_TTL seconds and replayed to every repeat. Keys are per user.
The rules follow the IETF draft "The Idempotency-Key HTTP Header Field":
422 for a key reused with another body, 409 while the first is still running.
"""

import functools
import hashlib
import json
import logging

import redis
from django.conf import settings
from django.core.cache import cache
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter
from rest_framework import exceptions, status

from taskmgmt.exceptions import CacheUnavailable
from taskmgmt.renderers import JSON_CONTENT_TYPE

logger = logging.getLogger("taskmgmt.api")

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# How long a key stays held by a request that never finished (its worker was
# killed): far longer than these writes take, short enough for a client to retry.
IN_FLIGHT_SECONDS = 60
# The client error that the same body always gets again (invalid input). A 409 (a
# conflict with the state, which may change), a 429 or a 5xx is not kept: a retry may succeed.
KEPT_CLIENT_ERRORS = {status.HTTP_400_BAD_REQUEST}

IDEMPOTENCY_KEY_PARAMETER = OpenApiParameter(
    HEADER,
    # Printable ASCII, not only spaces.
    {"type": "string", "maxLength": MAX_KEY_LENGTH, "pattern": "^[ -~]*[!-~][ -~]*$"},
    OpenApiParameter.HEADER,
    description=(
        "Any unique string (a UUID, say) naming this request, so that a retry cannot act "
        "twice: a repeat with the same key and body, by the same user, gets the first "
        "answer again (`Idempotent-Replayed: true`); with another body a 422; while the "
        "first is still running a 409 with Retry-After. Kept for IDEMPOTENCY_KEY_TTL "
        f"(default 24 h). 1 to {MAX_KEY_LENGTH} printable ASCII characters."
    ),
)


class KeyInvalid(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "idempotency_key_invalid"


class KeyReused(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = f"This {HEADER} was already used with another request body; use a new key."
    default_code = "idempotency_key_reused"


class KeyInFlight(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = f"A request with this {HEADER} is still being processed; retry shortly."
    default_code = "idempotency_key_in_flight"
    wait = 1


def idempotent(view):
    """Decorates a viewset action of an authenticated view; without the header it is as before."""

    @functools.wraps(view)
    def wrapper(self, request, *args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return view(self, request, *args, **kwargs)
        check_key(key)
        cache_key = f"idempotency:{request.user.pk}:{hashlib.sha256(key.encode()).hexdigest()}"
        fingerprint = request_fingerprint(view.__qualname__, request.data)
        kept = hold(cache_key, fingerprint)
        if kept is not None:
            response = HttpResponse(
                kept["body"], status=kept["status"], content_type=JSON_CONTENT_TYPE
            )
            response["Idempotent-Replayed"] = "true"
            return response

        response = None
        try:
            try:
                response = view(self, request, *args, **kwargs)
            except Exception as exc:
                response = self.handle_exception(exc)
            # Rendered now, so a repeat gets these very bytes.
            response = self.finalize_response(request, response, *args, **kwargs)
            response.render()
        finally:
            release(cache_key, fingerprint, response)
        return response

    return wrapper


def check_key(key: str) -> None:
    if not 0 < len(key) <= MAX_KEY_LENGTH or not key.strip():
        raise KeyInvalid(f"{HEADER} must be 1 to {MAX_KEY_LENGTH} characters, not blank.")
    if any(not " " <= character <= "~" for character in key):
        raise KeyInvalid(f"{HEADER} must be printable ASCII characters only.")


def request_fingerprint(operation: str, data) -> str:
    """The operation and the body as JSON values: key order and spacing do not count."""
    canonical = json.dumps([operation, data], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def hold(cache_key: str, fingerprint: str) -> dict | None:
    """Takes the key for this request (None), or returns the answer kept under it.

    `add` is atomic in every cache backend (SET NX in Redis), so of two requests
    arriving at once exactly one holds the key.
    """
    try:
        for _ in range(2):
            if cache.add(cache_key, {"fingerprint": fingerprint}, IN_FLIGHT_SECONDS):
                return None
            entry = cache.get(cache_key)
            if entry is None:
                continue  # expired between the two calls: try to take it again
            if entry["fingerprint"] != fingerprint:
                raise KeyReused()
            if "status" not in entry:
                raise KeyInFlight()
            return entry
    except redis.RedisError as error:
        logger.error("idempotency cache unavailable", exc_info=error)
        raise CacheUnavailable(
            f"Requests with an {HEADER} cannot be served right now; retry shortly."
        ) from error
    raise KeyInFlight()


def release(cache_key: str, fingerprint: str, response) -> None:
    """Keeps a 2xx or 400 answer for IDEMPOTENCY_KEY_TTL; frees the key after any other."""
    try:
        if response is not None and (
            status.is_success(response.status_code) or response.status_code in KEPT_CLIENT_ERRORS
        ):
            entry = {
                "fingerprint": fingerprint,
                "status": response.status_code,
                "body": response.content.decode(),
            }
            cache.set(cache_key, entry, settings.IDEMPOTENCY_KEY_TTL)
        else:
            cache.delete(cache_key)
    except redis.RedisError as error:
        # The work is done and answered; a repeat within IN_FLIGHT_SECONDS gets a 409.
        logger.error("idempotency answer not kept", exc_info=error)
