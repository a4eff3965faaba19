"""Who may call each auth endpoint, as one table: anonymous, admin, node, deactivated user.

Write requests send an empty body, so 400 means "let in, then validated"
and nothing changes whatever the outcome.
"""

import pytest
from rest_framework.test import APIClient

from tests.factories import AdminFactory, NodeFactory

# method, path, then the answer for: anonymous, admin, node, deactivated.
MATRIX = [
    ("post", "/api/auth/login", 400, 400, 400, 400),
    ("post", "/api/auth/refresh", 400, 400, 400, 400),
    ("get", "/api/auth/profile", 401, 200, 200, 401),
    ("put", "/api/auth/edit-profile", 401, 400, 400, 401),
    ("put", "/api/auth/update-password", 401, 400, 400, 401),
    ("get", "/api/auth/users", 401, 200, 403, 401),
    ("post", "/api/auth/signup", 401, 400, 403, 401),
]
CALLERS = ["anonymous", "admin", "node", "deactivated"]


@pytest.fixture
def caller_client(db, client_for):
    def make(caller):
        if caller == "anonymous":
            return APIClient()
        if caller == "deactivated":
            return client_for(NodeFactory(is_active=False))
        return client_for(AdminFactory() if caller == "admin" else NodeFactory())

    return make


@pytest.mark.parametrize(
    ("method", "path", "caller", "expected"),
    [
        pytest.param(method, path, caller, expected, id=f"{caller}-{method}-{path}")
        for method, path, *answers in MATRIX
        for caller, expected in zip(CALLERS, answers, strict=True)
    ],
)
def test_permission_matrix(caller_client, method, path, caller, expected):
    response = getattr(caller_client(caller), method)(path, {} if method != "get" else None)

    assert response.status_code == expected, response.content
    assert set(response.json()) >= ({"title", "message"} if expected >= 400 else set())
