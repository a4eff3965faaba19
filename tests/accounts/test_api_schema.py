"""The OpenAPI schema describes the auth endpoints as they behave."""

import pytest
from django.urls import include, path
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema

ERROR_REF = "#/components/schemas/Error"

# path, method, request body component (None: no body), success code,
# error codes, whether a JWT is required.
AUTH_OPERATIONS = [
    ("/api/auth/login", "post", "LoginRequest", "200", {"400", "401", "403", "429"}, False),
    ("/api/auth/refresh", "post", "RefreshRequest", "200", {"400", "401", "429"}, False),
    ("/api/auth/signup", "post", "SignupRequest", "201", {"400", "401", "403", "409"}, True),
    ("/api/auth/profile", "get", None, "200", {"401", "429"}, True),
    ("/api/auth/edit-profile", "put", "ProfileEditRequest", "200", {"400", "401", "409"}, True),
    (
        "/api/auth/update-password",
        "put",
        "PasswordChangeRequest",
        "200",
        {"400", "401", "429"},
        True,
    ),
    ("/api/auth/users", "get", None, "200", {"401", "403", "429"}, True),
]


@pytest.fixture(scope="module")
def auth_schema():
    """The auth endpoints' schema alone, and the warnings drf-spectacular gave for them."""
    GENERATOR_STATS.reset()
    patterns = [
        path("api/auth/", include("accounts.urls")),
        path("api/auth/", include("tasks.profile_urls")),
    ]
    generator = SchemaGenerator(patterns=patterns)
    schema = generator.get_schema(request=None, public=True)
    warnings = dict(GENERATOR_STATS._warn_cache) | dict(GENERATOR_STATS._error_cache)
    GENERATOR_STATS.reset()
    return schema, warnings


def test_the_auth_schema_generates_without_warnings_and_validates(auth_schema):
    schema, warnings = auth_schema

    assert warnings == {}
    validate_schema(schema)
    assert set(schema["paths"]) == {operation[0] for operation in AUTH_OPERATIONS}


@pytest.mark.parametrize(
    ("path", "method", "request_component", "success", "error_codes", "needs_jwt"),
    AUTH_OPERATIONS,
)
def test_each_auth_operation_documents_its_body_answers_and_security(
    auth_schema, path, method, request_component, success, error_codes, needs_jwt
):
    schema, _ = auth_schema
    operation = schema["paths"][path][method]

    if request_component:
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{request_component}"}
    else:
        assert "requestBody" not in operation
    responses = operation["responses"]
    assert success in responses
    assert error_codes <= set(responses)
    for code in error_codes:
        assert responses[code]["content"]["application/json"]["schema"] == {"$ref": ERROR_REF}
    assert operation["security"] == ([{"jwtAuth": []}] if needs_jwt else [{}])


def test_the_schema_names_the_camelcase_fields(auth_schema):
    components = auth_schema[0]["components"]["schemas"]

    assert set(components["PasswordChangeRequest"]["required"]) == {"oldPassword", "newPassword"}
    assert set(components["LoginResult"]["properties"]) == {"token", "refresh", "userDetails"}
    assert set(components["UserListItem"]["properties"]) == {"nodeId", "name", "email", "role"}
    assert "role" not in components["SignupRequest"]["properties"]
    assert set(components["Error"]["required"]) == {"title", "message"}
    assert components["Error"]["properties"]["errors"]["type"] == "array"
    assert auth_schema[0]["components"]["securitySchemes"]["jwtAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }


def test_the_served_schema_includes_the_auth_endpoints(anon_client):
    response = anon_client.get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    assert "/api/auth/login" in response.json()["paths"]
