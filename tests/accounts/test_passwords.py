"""Passwords are hashed with Argon2 in production (the suite itself uses MD5 for speed)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import hashers
from django.contrib.auth.hashers import check_password, identify_hasher, make_password
from django.test import override_settings
from django.utils.module_loading import import_string

from accounts.models import User
from tests.factories import PASSWORD, NodeFactory

PRODUCTION = override_settings(PASSWORD_HASHERS=settings.PRODUCTION_PASSWORD_HASHERS)
DEMO = json.loads((Path(settings.BASE_DIR) / "fixtures" / "demo.json").read_text())


def test_production_hashes_with_argon2_first():
    hasher = import_string(settings.PRODUCTION_PASSWORD_HASHERS[0])

    assert issubclass(hasher, hashers.Argon2PasswordHasher)
    assert hasher.algorithm == "argon2"


# Eight threads verify one password at once, as a gthread worker's threads do in a
# burst of logins; prints how far the burst raised the process's peak memory (MiB).
BURST = """
import resource, threading
from django.conf import settings
settings.configure(PASSWORD_HASH_CONCURRENCY={concurrency}, PASSWORD_HASH_WAIT_SECONDS=60)
from accounts.hashers import Argon2PasswordHasher
hasher = Argon2PasswordHasher()
encoded = hasher.encode("password", hasher.salt())
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
burst = [threading.Thread(target=hasher.verify, args=("password", encoded)) for _ in range(8)]
for thread in burst:
    thread.start()
for thread in burst:
    thread.join()
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def burst_growth_mib(concurrency: int) -> int:
    script = BURST.format(concurrency=concurrency)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(settings.BASE_DIR)},
    )
    return int(done.stdout)


def test_a_burst_of_logins_holds_one_hash_s_memory_per_process():
    # One hash at a time: the burst reuses the 100 MiB the first hash peaked at.
    assert burst_growth_mib(concurrency=1) < 50
    # Unbounded, the same burst holds several times 100 MiB at once.
    assert burst_growth_mib(concurrency=8) > 150


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
