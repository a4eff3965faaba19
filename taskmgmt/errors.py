"""The API's one error format: the exception handler, the error bodies and their schema.

Every error is `{"title", "message"}`, plus `errors: [{field, message}]` for
validation; this module is the only place that shapes them, for the exceptions
of taskmgmt.exceptions (the apps' DomainError among them) and the libraries'.
"""

import logging

from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, InterfaceError, OperationalError
from django.http import JsonResponse
from django_ratelimit.exceptions import Ratelimited
from drf_spectacular.utils import OpenApiResponse
from redis.exceptions import RedisError
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from taskmgmt.exceptions import (
    CacheUnavailable,
    Conflict,
    DomainError,
    PayloadTooLarge,
    ServiceUnavailable,
)
from taskmgmt.renderers import JSON_CONTENT_TYPE
from taskmgmt.throttling import RefusedRateThrottle

logger = logging.getLogger("taskmgmt.api")

# Task model fields as the API spells them: a model's clean() reports model
# names, and Task is the only model whose clean() errors reach the API.
API_FIELD_NAMES = {
    "name": "taskName",
    "details": "taskDetails",
    "assigned_node": "assignedNode",
    "locked_at": "lockedAt",
    "status": "taskStatus",
    "node_selector": "nodeSelector",
}

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    411: "Length Required",
    413: "Payload Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def error_body(status_code: int, message: str, title: str | None = None, errors=None) -> dict:
    body = {"title": title or _TITLES.get(status_code, "Error"), "message": message}
    if errors is not None:
        body["errors"] = errors
    return body


def error_response(status_code: int, message: str, title: str | None = None) -> JsonResponse:
    """An error answered outside DRF (middleware, Django's handlers), in the same form."""
    return JsonResponse(
        error_body(status_code, message, title), status=status_code, content_type=JSON_CONTENT_TYPE
    )


def _flatten(detail, field: str | None = None) -> list[dict]:
    """DRF's nested error detail as a flat list of {field, message}."""
    if isinstance(detail, dict):
        return [
            error
            for key, value in detail.items()
            for error in _flatten(value, key if field is None else f"{field}.{key}")
        ]
    if isinstance(detail, list):
        return [error for item in detail for error in _flatten(item, field)]
    if field == api_settings.NON_FIELD_ERRORS_KEY:
        field = None
    return [{"field": field, "message": str(detail)}]


def _from_django_validation(error: DjangoValidationError) -> exceptions.ValidationError:
    """A model's ValidationError, with its field names as the API spells them."""
    if not hasattr(error, "error_dict"):
        return exceptions.ValidationError(error.messages)
    return exceptions.ValidationError(
        {
            api_settings.NON_FIELD_ERRORS_KEY
            if field == NON_FIELD_ERRORS
            else API_FIELD_NAMES.get(field, field): messages
            for field, messages in error.message_dict.items()
        }
    )


def _as_api_exception(exc: Exception) -> Exception:
    """The API exception standing for `exc`; anything else is left as it is (a bug)."""
    if isinstance(exc, DjangoValidationError):
        return _from_django_validation(exc)
    if isinstance(exc, RequestDataTooBig):
        return PayloadTooLarge(
            f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."
        )
    if isinstance(exc, SuspiciousOperation):
        # Django answers these 400 outside DRF; in a view they reach us (too many
        # query parameters for request.GET, say) and were a 500.
        return exceptions.ParseError(f"The request could not be understood: {exc}")
    if isinstance(exc, IntegrityError):
        # A uniqueness race lost to a concurrent request, after validation passed.
        return Conflict("The request conflicts with data saved at the same moment; retry.")
    if isinstance(exc, OperationalError | InterfaceError):
        logger.error("database unavailable", exc_info=exc)
        return ServiceUnavailable()
    if isinstance(exc, RedisError):
        logger.error("cache unavailable", exc_info=exc)
        return CacheUnavailable()
    return exc


def exception_handler(exc, context):
    """DRF's handler, with our domain and library exceptions mapped first.

    Anything unexpected becomes a logged JSON 500 here, so not even DEBUG's
    HTML error page can answer under /api/. Refusals (401, 403) are counted per
    IP, and answered 429 past the API's rate.
    """
    response = _error_response(exc, context)
    if response.status_code in (status.HTTP_401_UNAUTHORIZED, status.HTTP_403_FORBIDDEN):
        throttle = RefusedRateThrottle()
        if not throttle.allow_request(context["request"], context["view"]):
            return _error_response(exceptions.Throttled(throttle.wait()), context)
    return response


def _error_response(exc, context) -> Response:
    if isinstance(exc, DomainError):
        return Response(error_body(exc.status_code, exc.message, exc.title), exc.status_code)
    if isinstance(exc, Ratelimited):
        # It subclasses PermissionDenied, which DRF would answer with a 403.
        return _rate_limited()

    api_exc = _as_api_exception(exc)
    response = drf_exception_handler(api_exc, context)
    if response is None:
        logger.error("unhandled exception in an API view", exc_info=exc)
        set_rollback()
        return Response(
            error_body(500, "Something went wrong on our side; it has been logged."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    if isinstance(api_exc, exceptions.ValidationError):
        errors = _flatten(api_exc.detail) or [{"field": None, "message": "Invalid input."}]
        first = errors[0]
        message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more)"
        response.data = error_body(400, message, "Validation error", errors)
    else:
        response.data = error_body(response.status_code, _message(response.data))
    return response


def _message(data) -> str:
    """One line from the body DRF built: `{"detail": ...}` (simplejwt adds
    "code" and "messages" beside it) or an APIException's own list or dict."""
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"])
    return "; ".join(error["message"] for error in _flatten(data))


def _rate_limited() -> Response:
    response = Response(
        error_body(429, "Too many requests; slow down and retry later."),
        status=status.HTTP_429_TOO_MANY_REQUESTS,
    )
    # django-ratelimit's exception does not say when its window ends.
    response["Retry-After"] = "60"
    return response


# --- The error format in the OpenAPI schema ----------------------------------


class FieldErrorSerializer(serializers.Serializer):
    field = serializers.CharField(allow_null=True, help_text="camelCase field name; null: the body")
    message = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    title = serializers.CharField()
    message = serializers.CharField()
    errors = FieldErrorSerializer(many=True, required=False, help_text="Validation errors only.")


_ERROR_DESCRIPTIONS = {
    400: "Invalid input: malformed JSON or a field that fails validation.",
    401: "Missing, invalid or expired token, or wrong credentials.",
    403: "Authenticated, but not allowed to do this.",
    404: "No such object.",
    409: "Conflicts with the current state.",
    413: "Request body too large.",
    415: "Request body is not JSON.",
    422: "The Idempotency-Key was already used with another request body.",
    429: "Rate limited; see the Retry-After header.",
    503: "Unavailable for now (e.g. every password-hash slot busy); see the Retry-After header.",
}


def error_responses(*status_codes: int) -> dict[int, OpenApiResponse]:
    """Schema entries for the error answers an endpoint can give."""
    return {
        code: OpenApiResponse(ErrorSerializer, description=_ERROR_DESCRIPTIONS[code])
        for code in status_codes
    }
