"""Fixtures shared by every test module: users, real JWT clients, a clean cache."""

import math

import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import Client
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from nodes import serving
from tests.factories import AdminFactory, NodeFactory


@pytest.fixture(autouse=True)
def _clear_cache():
    """Rate-limit counters live in the cache; each test starts from zero."""
    cache.clear()
    yield
    cache.clear()


# Each process records that the API serves at most once a second (nodes.serving):
# left on, that query would land in some tests' query counts and not in others' (and
# in requests made while collecting, outside any database fixture). Its own tests
# turn it on with `serving_recorded`; the fleet's gunicorn records as in production.
serving._next_record = math.inf


@pytest.fixture
def serving_recorded(monkeypatch):
    """The next answered request records that the API serves, as in production."""
    monkeypatch.setattr(serving, "_next_record", 0.0)


@pytest.fixture(autouse=True)
def _settings_restored():
    """Fails the test that leaves a settings override behind, not a later one.

    (Mixing `@override_settings` with the `settings` fixture in one test undoes
    them out of order and leaks the decorator's values.)
    """
    before = settings._wrapped
    yield
    assert settings._wrapped is before, "this test left a settings override in place"


@pytest.fixture
def admin_user(db):
    return AdminFactory()


@pytest.fixture
def node(db):
    return NodeFactory()


@pytest.fixture
def other_node(db):
    return NodeFactory()


@pytest.fixture
def anon_client():
    return APIClient()


@pytest.fixture
def client_for():
    """An APIClient sending a real access token for `user`, as issued at login."""

    def make(user):
        client = APIClient()
        token = RefreshToken.for_user(user).access_token
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        return client

    return make


@pytest.fixture
def admin_client(admin_user, client_for):
    return client_for(admin_user)


@pytest.fixture
def node_client(node, client_for):
    return client_for(node)


@pytest.fixture
def admin_site_client(admin_user):
    """A browser session logged in to the admin site (/admin/) as `admin_user`."""
    client = Client()
    client.force_login(admin_user)
    return client
