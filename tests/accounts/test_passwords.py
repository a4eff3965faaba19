"""Passwords are hashed with Argon2 in production (the suite itself uses MD5 for speed)."""

import json
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.hashers import check_password, identify_hasher, make_password
from django.test import override_settings

from accounts.models import User
from tests.factories import PASSWORD, NodeFactory

PRODUCTION = override_settings(PASSWORD_HASHERS=settings.PRODUCTION_PASSWORD_HASHERS)
DEMO = json.loads((Path(settings.BASE_DIR) / "fixtures" / "demo.json").read_text())


def test_production_hashes_with_argon2_first():
    assert settings.PRODUCTION_PASSWORD_HASHERS[0] == (
        "django.contrib.auth.hashers.Argon2PasswordHasher"
    )


@PRODUCTION
def test_a_new_password_is_stored_as_argon2id():
    encoded = make_password(PASSWORD)

    assert encoded.startswith("argon2$argon2id$")
    assert check_password(PASSWORD, encoded)
    assert not check_password("wrong", encoded)


@PRODUCTION
@pytest.mark.django_db
def test_an_older_hash_is_upgraded_to_argon2_at_the_next_login():
    user = NodeFactory()
    user.password = make_password(PASSWORD, hasher="pbkdf2_sha256")
    user.save()

    assert user.check_password(PASSWORD)

    assert User.objects.get(pk=user.pk).password.startswith("argon2$argon2id$")


@PRODUCTION
@pytest.mark.parametrize(
    "user", [obj for obj in DEMO if obj["model"] == "accounts.user"], ids=lambda u: u["pk"]
)
def test_the_demo_passwords_are_argon2_and_match_the_published_logins(user):
    fields = user["fields"]
    password = "demo-admin-pass" if fields["role"] == "admin" else "demo-node-pass"

    assert identify_hasher(fields["password"]).algorithm == "argon2"
    assert check_password(password, fields["password"])
