"""The API skips the admin site's session, user and message middlewares: its answers
keep exactly the headers they had, and the admin site keeps its session and CSRF check."""

import pytest
from django.test import Client, override_settings
from rest_framework.test import APIClient

from tests.factories import PASSWORD

ORIGIN = "https://ops.example.com"
SECURITY = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def headers_of(response) -> dict[str, str]:
    """Every header, the request id's value aside (new for each request)."""
    headers = dict(response.headers)
    assert len(headers.pop("X-Request-ID")) == 32
    return headers


def test_a_heartbeat_answers_with_exactly_these_headers(node_client):
    response = node_client.post("/api/nodes/heartbeat")

    assert response.status_code == 200
    assert response.cookies == {}
    assert headers_of(response) == {
        "Content-Type": "application/json; charset=utf-8",
        "Allow": "POST, OPTIONS",
        "Content-Length": str(len(response.content)),
        "Vary": "origin",
        **SECURITY,
    }


@pytest.mark.django_db
def test_a_refused_token_answers_with_exactly_these_headers():
    response = APIClient().post("/api/nodes/heartbeat", HTTP_AUTHORIZATION="Bearer bad")

    assert response.status_code == 401
    assert response.cookies == {}
    assert headers_of(response) == {
        "Content-Type": "application/json; charset=utf-8",
        "WWW-Authenticate": 'Bearer realm="api"',
        "Allow": "POST, OPTIONS",
        "Content-Length": str(len(response.content)),
        "Vary": "origin",
        **SECURITY,
    }


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post"])
def test_an_unknown_api_path_answers_with_exactly_these_headers(method):
    response = getattr(APIClient(), method)("/api/no-such-thing")

    assert response.status_code == 404
    assert response.cookies == {}
    assert headers_of(response) == {
        "Content-Type": "application/json; charset=utf-8",
        "Content-Length": str(len(response.content)),
        "Vary": "origin",
        **SECURITY,
    }


@pytest.mark.django_db
@override_settings(CORS_ALLOWED_ORIGINS=[ORIGIN])
def test_a_preflight_answers_with_exactly_these_headers():
    response = APIClient().options(
        "/api/nodes/heartbeat",
        HTTP_ORIGIN=ORIGIN,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type",
    )

    assert response.status_code == 200
    assert response.cookies == {}
    headers = {name.lower(): value for name, value in headers_of(response).items()}
    assert headers.keys() == {
        "content-length",
        "content-type",
        "vary",
        "access-control-allow-origin",
        "access-control-expose-headers",
        "access-control-allow-headers",
        "access-control-allow-methods",
        "access-control-max-age",
        # corsheaders answers a preflight itself, before the clickjacking middleware's turn.
        *(name.lower() for name in SECURITY if name != "X-Frame-Options"),
    }
    assert headers["access-control-allow-origin"] == ORIGIN
    assert headers["vary"] == "origin"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/healthz", "/api/nodes/heartbeat", "/api/no-such-thing"])
def test_an_api_request_builds_no_session_user_or_messages(path):
    request = APIClient().post(path).wsgi_request

    assert not hasattr(request, "session")
    assert not hasattr(request, "_messages")


def test_the_api_still_sees_its_token_user(node, node_client):
    response = node_client.get("/api/auth/profile")

    assert response.status_code == 200
    assert response.wsgi_request.user == node


def test_the_admin_site_keeps_its_session_and_csrf_check(admin_user):
    client = Client(enforce_csrf_checks=True)

    refused = client.post("/admin/login/", {"username": admin_user.email, "password": PASSWORD})
    assert refused.status_code == 403

    page = client.get("/admin/login/")
    assert page.status_code == 200
    assert "Cookie" in page["Vary"]
    token = page.cookies["csrftoken"].value
    signed_in = client.post(
        "/admin/login/",
        {"username": admin_user.email, "password": PASSWORD, "csrfmiddlewaretoken": token},
    )
    assert signed_in.status_code == 302
    assert "sessionid" in signed_in.cookies
    assert client.get("/admin/").wsgi_request.user == admin_user
