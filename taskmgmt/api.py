"""The API's one error format, and the JSON views Django itself needs.

Every error is `{"title", "message"}`, plus `errors: [{field, message}]` for
validation; this module is the only place that shapes them.
"""

import logging

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, connection
from django.http import JsonResponse
from django_ratelimit.exceptions import Ratelimited
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from tasks.models import TaskRuleError

logger = logging.getLogger("taskmgmt.api")

# Model field names as the API spells them, for errors raised below the serializers.
API_FIELD_NAMES = {
    "name": "taskName",
    "details": "taskDetails",
    "assigned_node": "assignedNode",
    "locked_at": "lockedAt",
    "status": "taskStatus",
    "old_password": "oldPassword",
    "new_password": "newPassword",
}

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The database is unavailable; try again shortly."
    default_code = "service_unavailable"


def error_body(status_code: int, message: str, title: str | None = None, errors=None) -> dict:
    body = {"title": title or _TITLES.get(status_code, "Error"), "message": message}
    if errors is not None:
        body["errors"] = errors
    return body


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
    if field == "non_field_errors":
        field = None
    return [{"field": API_FIELD_NAMES.get(field, field), "message": str(detail)}]


def exception_handler(exc, context):
    """DRF's handler, with our domain and library exceptions mapped first."""
    if isinstance(exc, TaskRuleError):
        return Response(error_body(exc.status_code, exc.message, exc.title), exc.status_code)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
    elif isinstance(exc, Ratelimited):
        return rate_limited_response()
    elif isinstance(exc, DatabaseError):
        logger.error("database error", exc_info=exc)
        exc = ServiceUnavailable()

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail) or [{"field": None, "message": "Invalid input."}]
        first = errors[0]
        message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more)"
        response.data = error_body(400, message, "Validation error", errors)
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        if isinstance(detail, dict | list):
            detail = "; ".join(error["message"] for error in _flatten(detail))
        response.data = error_body(response.status_code, str(detail))
    return response


def rate_limited_response(retry_after: int = 60) -> Response:
    response = Response(
        error_body(429, "Too many requests; slow down and retry later."),
        status=status.HTTP_429_TOO_MANY_REQUESTS,
    )
    response["Retry-After"] = str(retry_after)
    return response


def _json_error(status_code: int, message: str) -> JsonResponse:
    return JsonResponse(error_body(status_code, message), status=status_code)


def not_found(request, exception=None):
    return _json_error(404, "No such page or object.")


def server_error(request):
    return _json_error(500, "Something went wrong on our side; it has been logged.")


def healthz(request):
    """200 when the database answers, 503 when it does not."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return JsonResponse({"status": "unavailable", "database": "down"}, status=503)
    return JsonResponse({"status": "ok", "database": "up"})
