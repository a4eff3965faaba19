"""The API's one error format, and the JSON views Django itself needs.

Every error is `{"title", "message"}`, plus `errors: [{field, message}]` for
validation; this module is the only place that shapes them.
"""

import logging

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import NON_FIELD_ERRORS, RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError, connection
from django.http import JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django_ratelimit.exceptions import Ratelimited
from drf_spectacular.utils import OpenApiResponse
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerView,
)
from redis.exceptions import RedisError
from rest_framework import exceptions, serializers, status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from taskmgmt.errors import DomainError
from taskmgmt.throttling import CACHE_ERRORS, CacheUnavailable, RefusedRateThrottle, counts_cache

logger = logging.getLogger("taskmgmt.api")

# Task model fields as the API spells them: a model's clean() reports model
# names, and Task is the only model whose clean() errors reach the API.
API_FIELD_NAMES = {
    "name": "taskName",
    "details": "taskDetails",
    "assigned_node": "assignedNode",
    "locked_at": "lockedAt",
    "status": "taskStatus",
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
    414: "URI Too Long",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


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


# --- Django's own error views, and the catch-all under /api/ ----------------


def _json_error(status_code: int, message: str) -> JsonResponse:
    return JsonResponse(error_body(status_code, message), status=status_code)


def bad_request(request, exception=None):
    return _json_error(400, "The request could not be understood.")


def not_found(request, exception=None):
    """JSON for the API and every machine path; the admin site's own HTML page for
    a person browsing it (DEBUG=False: Django's debug page answers otherwise)."""
    if request.path.startswith(reverse("admin:index")):
        context = {**admin.site.each_context(request), "title": "Page not found"}
        return render(request, "admin/404.html", context, status=404)
    return _json_error(404, "No such page or object.")


def server_error(request):
    return _json_error(500, "Something went wrong on our side; it has been logged.")


@csrf_exempt
def api_not_found(request):
    """Every unknown path under /api/, with or without DEBUG.

    Matching them all also keeps APPEND_SLASH from redirecting under /api/
    (a redirected POST loses its body, and DEBUG turns it into a 500).
    """
    return _json_error(404, f"No API endpoint at {request.path}.")


# --- The schema and its docs page ----------------------------------------------


class JsonErrorsMixin:
    """Errors and OPTIONS as the API's JSON, whatever the view renders when it succeeds.

    The schema (YAML) and Swagger UI (HTML) views answered a 405 or a 429 in
    their own format: an HTML error page under /api/.
    """

    def _answer_json(self):
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type

    def handle_exception(self, exc):
        self._answer_json()
        return super().handle_exception(exc)

    def options(self, request, *args, **kwargs):
        self._answer_json()
        return super().options(request, *args, **kwargs)


class SchemaView(JsonErrorsMixin, SpectacularAPIView):
    pass


class OwnOriginOnlyMixin:
    """A docs page may load from this server only, whatever its bundle asks for.

    ReDoc's bundle shows a logo from cdn.redoc.ly; with this policy the browser never
    requests it, so the page works the same with or without internet.
    """

    content_security_policy = (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; worker-src 'self' blob:"
    )

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Content-Security-Policy"] = self.content_security_policy
        return response


class DocsView(JsonErrorsMixin, OwnOriginOnlyMixin, SpectacularSwaggerView):
    pass


class RedocView(JsonErrorsMixin, OwnOriginOnlyMixin, SpectacularRedocView):
    # drf-spectacular's own page loads Google's web fonts; ours uses the system's.
    template_name = "taskmgmt/redoc.html"


HEALTHZ_METHODS = ("GET", "HEAD")


def _database_answers() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return False
    return True


def _cache_answers() -> bool:
    try:
        counts_cache().get("healthz")
    except CACHE_ERRORS:
        return False
    return True


@csrf_exempt
def healthz(request):
    """200 when every dependency the API needs answers, 503 naming the one that does not.

    The cache is one: without it no login can be counted, so none is served.
    """
    if request.method not in HEALTHZ_METHODS:
        response = _json_error(405, f'Method "{request.method}" not allowed.')
        response["Allow"] = ", ".join(HEALTHZ_METHODS)
        return response
    dependencies = {
        "database": "up" if _database_answers() else "down",
        "cache": "up" if _cache_answers() else "down",
    }
    healthy = all(state == "up" for state in dependencies.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", **dependencies},
        status=200 if healthy else 503,
    )
