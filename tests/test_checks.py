"""System checks: our cache and Django-version warnings, and `check --deploy` clean
under a production env."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import django
import pytest
from django.core.checks import run_checks
from django.test import override_settings

from taskmgmt.checks import django_version_warnings

ROOT = Path(__file__).resolve().parent.parent
LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
REDIS = {
    "default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://127.0.0.1:6379/0"}
}

# The production env docs/security.md documents.
PRODUCTION_ENV = {
    "SECRET_KEY": secrets.token_urlsafe(50),
    "DEBUG": "false",
    "ALLOWED_HOSTS": "taskmgmt.example.com",
    "CACHE_URL": "redis://127.0.0.1:6379/0",
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "CORS_ALLOWED_ORIGINS": "https://ops.example.com",
    "DATABASE_URL": "mysql://taskmgmt:secret@127.0.0.1:3306/taskmgmt",
    "CSRF_TRUSTED_ORIGINS": "https://taskmgmt.example.com",
    "RATELIMIT_IP_META_KEY": "HTTP_X_REAL_IP",
}


def cache_check_ids() -> list[str]:
    return [message.id for message in run_checks(tags=["caches"])]


@override_settings(DEBUG=False, CACHES=LOCMEM)
def test_a_per_process_cache_with_debug_off_draws_our_warning():
    assert "taskmgmt.W001" in cache_check_ids()


@override_settings(DEBUG=True, CACHES=LOCMEM)
def test_a_per_process_cache_is_fine_for_local_development():
    assert "taskmgmt.W001" not in cache_check_ids()


@override_settings(DEBUG=False, CACHES=REDIS)
def test_redis_draws_no_warning():
    assert cache_check_ids() == []


def test_the_installed_django_is_the_tested_series():
    assert "taskmgmt.W002" not in [message.id for message in run_checks(tags=["compatibility"])]
    assert django_version_warnings(django.VERSION) == []


@pytest.mark.parametrize("version", [(5, 2, 0), (5, 2, 19, "final", 0)])
def test_any_5_2_release_draws_no_version_warning(version):
    assert django_version_warnings(version) == []


@pytest.mark.parametrize("version", [(5, 1, 9, "final", 0), (6, 0, 0, "final", 0), (5, 3, 0)])
def test_a_django_outside_5_2_draws_our_warning(version):
    (warning,) = django_version_warnings(version)

    assert warning.id == "taskmgmt.W002"
    assert "tested on 5.2.x" in warning.msg


def check_deploy(**overrides) -> subprocess.CompletedProcess:
    """`check --deploy` in a new process; an override of None unsets the variable."""
    env = {**os.environ, **PRODUCTION_ENV, **overrides}
    env = {
        key: value
        for key, value in env.items()
        if value is not None and key != "DJANGO_SETTINGS_MODULE"
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.process
def test_check_deploy_is_clean_under_the_production_env():
    result = check_deploy()

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


@pytest.mark.process
@pytest.mark.parametrize(
    ("overrides", "warning"),
    [
        ({"SECURE_SSL_REDIRECT": "false"}, "security.W008"),
        ({"DEBUG": "true"}, "security.W018"),
        ({"CACHE_URL": None}, "taskmgmt.W001"),
    ],
)
def test_check_deploy_names_what_a_weaker_env_gets_wrong(overrides, warning):
    result = check_deploy(**overrides)

    assert result.returncode != 0
    assert warning in result.stderr
