"""CORS from the environment's origins, and the security headers on API answers."""

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

ALLOWED_ORIGIN = "https://ops.example.com"

pytestmark = pytest.mark.django_db


def preflight(origin: str, path="/api/auth/login", headers="authorization, content-type"):
    return APIClient().options(
        path,
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS=headers,
    )


@override_settings(CORS_ALLOWED_ORIGINS=[ALLOWED_ORIGIN])
def test_a_preflight_from_an_allowed_origin_is_allowed():
    response = preflight(ALLOWED_ORIGIN)

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "POST" in response["Access-Control-Allow-Methods"]
    assert "authorization" in response["Access-Control-Allow-Headers"]


@override_settings(CORS_ALLOWED_ORIGINS=[ALLOWED_ORIGIN])
def test_a_browser_may_send_an_idempotency_key_and_read_whether_it_was_replayed(admin_client):
    response = preflight(
        ALLOWED_ORIGIN, "/api/tasks", "authorization, content-type, idempotency-key"
    )

    assert response.status_code == 200
    assert "idempotency-key" in response["Access-Control-Allow-Headers"]
    answer = admin_client.get("/api/tasks/all", HTTP_ORIGIN=ALLOWED_ORIGIN)
    assert "Idempotent-Replayed" in answer["Access-Control-Expose-Headers"]


@override_settings(CORS_ALLOWED_ORIGINS=[ALLOWED_ORIGIN])
def test_a_preflight_from_another_origin_gets_no_cors_headers():
    response = preflight("https://evil.example.com")

    assert "Access-Control-Allow-Origin" not in response


@override_settings(CORS_ALLOWED_ORIGINS=[ALLOWED_ORIGIN])
def test_an_allowed_origin_may_read_the_answer_and_its_retry_after(node_client):
    response = node_client.get("/api/auth/profile", HTTP_ORIGIN=ALLOWED_ORIGIN)

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "Retry-After" in response["Access-Control-Expose-Headers"]


@override_settings(CORS_ALLOWED_ORIGINS=[ALLOWED_ORIGIN])
@pytest.mark.parametrize("path", ["/api", "/api/"])
def test_an_allowed_origin_may_read_the_api_root(path):
    response = APIClient().get(path, HTTP_ORIGIN=ALLOWED_ORIGIN)

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN


@override_settings(CORS_ALLOWED_ORIGINS=[ALLOWED_ORIGIN])
def test_cors_does_not_reach_the_admin_site():
    response = preflight(ALLOWED_ORIGIN, path="/admin/login/")

    assert "Access-Control-Allow-Origin" not in response


def test_api_answers_carry_the_security_headers(node_client):
    response = node_client.get("/api/auth/profile")

    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


@override_settings(SECURE_SSL_REDIRECT=True, SECURE_HSTS_SECONDS=31536000)
def test_https_via_the_proxy_header_is_not_redirected_and_gets_hsts(node_client):
    response = node_client.get("/api/auth/profile", HTTP_X_FORWARDED_PROTO="https")

    assert response.status_code == 200
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")


@override_settings(SECURE_SSL_REDIRECT=True)
def test_plain_http_is_redirected_to_https_when_asked_for():
    response = APIClient().get("/api/auth/profile")

    assert response.status_code == 301
    assert response["Location"].startswith("https://")


@override_settings(SECURE_SSL_REDIRECT=True, METRICS_TOKEN="scrape-token")
@pytest.mark.parametrize("path", ["/healthz", "/healthz/", "/metrics"])
def test_health_checks_and_scrapes_over_plain_http_are_not_redirected(path):
    """HAProxy's check and Prometheus ask each host over plain HTTP: a 301 took every
    host out of the balancer (deploy/haproxy.cfg)."""
    response = APIClient().get(path, HTTP_AUTHORIZATION="Bearer scrape-token")

    assert response.status_code == 200
    assert "Location" not in response
