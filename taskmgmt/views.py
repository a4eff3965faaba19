"""The JSON views Django itself needs (400, 404, 500, unknown API paths), the
schema and its docs pages, and the health check."""

from django.contrib import admin
from django.db import DatabaseError, connection
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema, inline_serializer
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerView,
)
from rest_framework import serializers, viewsets
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from taskmgmt.errors import error_response, error_responses
from taskmgmt.renderers import JSON_CONTENT_TYPE, JSONRenderer
from taskmgmt.throttling import CACHE_ERRORS, counts_cache

# --- Django's own error views, and the catch-all under /api/ ----------------


def bad_request(request, exception=None):
    return error_response(400, "The request could not be understood.")


def not_found(request, exception=None):
    """JSON for the API and every machine path; the admin site's own HTML page for
    a person browsing it (DEBUG=False: Django's debug page answers otherwise)."""
    if request.path.startswith(reverse("admin:index")):
        context = {**admin.site.each_context(request), "title": "Page not found"}
        return render(request, "admin/404.html", context, status=404)
    return error_response(404, "No such page or object.")


def server_error(request):
    return error_response(500, "Something went wrong on our side; it has been logged.")


@csrf_exempt
def api_not_found(request):
    """Every unknown path under /api/, with or without DEBUG.

    Matching them all also keeps APPEND_SLASH from redirecting under /api/
    (a redirected POST loses its body, and DEBUG turns it into a 500).
    """
    return error_response(404, f"No API endpoint at {request.path}.")


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


class ApiRootViewSet(viewsets.ViewSet):
    """/api answers 200 {message}, as the original's did: its clients and container health
    checks wait on it. No token needed, nothing read: /healthz says whether the database
    answers."""

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Greet, as the original did: a client's check that the API is up",
        responses={
            200: inline_serializer("ApiRoot", {"message": serializers.CharField()}),
            **error_responses(429),
        },
    )
    def greet(self, request):
        return Response({"message": "Welcome to Task Manager"})


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


def favicon(request):
    """No icon, said without an error: browsers ask for /favicon.ico on every page, and
    a 404 is an error in the console of every admin page."""
    return HttpResponse(status=204)


@csrf_exempt
def healthz(request):
    """200 when every dependency the API needs answers, 503 naming the one that does not.

    The cache is one: without it no login can be counted, so none is served.
    """
    if request.method not in HEALTHZ_METHODS:
        response = error_response(405, f'Method "{request.method}" not allowed.')
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
        content_type=JSON_CONTENT_TYPE,
    )
