"""Settings for the test suite: production settings with a test key and fast hashing.

The database still comes from the environment, so the same suite runs on
SQLite (default) and on MariaDB (DATABASE_URL=mysql://…).
"""

import hashlib
import os
import tempfile

# The suite tests production settings: neither a shell's DEBUG nor the development
# .env that `make run` writes (DEBUG=true) may switch them, nor that .env's demo
# failover and short liveness times. Pinned once, in the suite's own process: a
# server a test starts on these settings (gunicorn in tests/fleet) inherits the
# pinned values, and keeps those the test gives it instead.
if not os.environ.get("TASKMGMT_SUITE_ENV_PINNED"):
    os.environ |= {
        "DEBUG": "false",
        "FAILOVER": "off",
        "NODE_HEARTBEAT_SECONDS": "10",
        "NODE_DOWN_AFTER": "30",
        "TASKMGMT_SUITE_ENV_PINNED": "1",
    }
# At least 32 bytes: it also signs the JWTs, and PyJWT warns about shorter HS256 keys.
os.environ.setdefault("SECRET_KEY", "tests-only-not-secret-but-long-enough-for-hs256")

from taskmgmt.settings import *  # noqa: F403

# One name per checkout: several checkouts on one machine keep their files apart.
_checkout = hashlib.sha256(str(BASE_DIR).encode()).hexdigest()[:8]  # noqa: F405

# Argon2 costs ~50 ms per hash by design; tests hash hundreds of passwords.
# tests/accounts/test_passwords.py checks that production puts Argon2 first.
PRODUCTION_PASSWORD_HASHERS = PASSWORD_HASHERS  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# No collectstatic before tests: without a root WhiteNoise has no missing folder to warn about.
STATIC_ROOT = None

STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# A replica for tests/test_replica.py: a database of its own (so a test can hold data
# only there), which no read uses unless a test sets READ_REPLICA_ALIAS = "replica".
# SQLite: a file, not memory, so a test can close it and point it at nowhere.
_primary = DATABASES["default"]  # noqa: F405
if _primary["ENGINE"] == "django.db.backends.sqlite3":
    _replica_name = f"{tempfile.gettempdir()}/taskmgmt-test-replica-{_checkout}.sqlite3"
    _replica_test = {"NAME": _replica_name}
else:
    _replica_name = f"{_primary['NAME']}_replica"
    _replica_test = {**_primary.get("TEST", {}), "NAME": f"test_{_replica_name}"}
DATABASES["replica"] = {**_primary, "NAME": _replica_name, "TEST": _replica_test}  # noqa: F405
READ_REPLICA_ALIAS = None
