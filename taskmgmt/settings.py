"""taskmgmt settings, read from the environment and an optional `.env` file.

Every variable is documented in `.env.example`. Defaults are the safe choice
for production (DEBUG off, HTTPS cookies) except where noted, so a missing
variable never silently opens the service up.
"""

import ipaddress
import re
import sys
from datetime import timedelta
from pathlib import Path

import environ
from corsheaders.defaults import default_headers
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


class _Env(environ.Env):
    """django-environ's, with a value it cannot read (`JWT_ACCESS_MINUTES=abc`) an
    ImproperlyConfigured naming the variable, which manage.py says in one line, not a
    ValueError's traceback."""

    def get_value(self, var, *args, **kwargs):
        try:
            return super().get_value(var, *args, **kwargs)
        except ValueError as error:
            raise ImproperlyConfigured(f"{var} cannot be read: {error}.") from None


env = _Env()
environ.Env.read_env(BASE_DIR / ".env")

# --- Core -------------------------------------------------------------------

# Off unless asked for: a forgotten DEBUG=True leaks settings and stack traces.
DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it in the environment or .env "
            "(see .env.example); for local development, `make run` writes a .env."
        )
    SECRET_KEY = "django-insecure-local-development-only"

# Localhost only by default: a public host name has to be named on purpose.
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    # django.contrib.admin with a site that opens on the dashboard.
    "tasks.apps.AdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_crontab",
    "taskmgmt",
    "accounts",
    "nodes",
    "tasks",
]

MIDDLEWARE = [
    "taskmgmt.middleware.RequestLogMiddleware",
    # Liveness counts a node's silence only while the API answers (nodes.serving).
    "nodes.serving.ServingMiddleware",
    "taskmgmt.metrics.MetricsMiddleware",
    "taskmgmt.middleware.RequestLimitsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    # Django's session, user and messages, for every path but the API's (taskmgmt.middleware).
    "taskmgmt.middleware.SiteSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "taskmgmt.middleware.SiteAuthenticationMiddleware",
    "taskmgmt.middleware.SiteMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "tasks.actor.ActorMiddleware",
]

ROOT_URLCONF = "taskmgmt.urls"
WSGI_APPLICATION = "taskmgmt.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------


def _database() -> dict:
    """DATABASE_URL wins; else the original's DB_* variables; else SQLite.

    SQLite is the embedded default so a new user needs nothing but Python.
    """
    if env.str("DATABASE_URL", default=""):
        # A scheme django-environ does not know (`mysql//host/name`) gave a warning and
        # then a KeyError traceback: one line instead.
        if env.str("DATABASE_URL").partition("://")[0] not in environ.Env.DB_SCHEMES:
            raise ImproperlyConfigured(
                "DATABASE_URL must be a database URL such as"
                " mysql://user:password@127.0.0.1:3306/taskmgmt or sqlite:////path/db.sqlite3."
            )
        db = env.db("DATABASE_URL")
    elif env.str("DB_ENGINE", default="sqlite") == "mysql":
        db = {
            "ENGINE": "django.db.backends.mysql",
            "NAME": env.str("DB_NAME", default="taskmgmt"),
            "USER": env.str("DB_USER", default="root"),
            "PASSWORD": env.str("DB_PASSWORD", default=""),
            "HOST": env.str("DB_HOST", default="127.0.0.1"),
            "PORT": env.str("DB_PORT", default="3306"),
        }
    elif env.str("DB_ENGINE", default="sqlite") == "sqlite":
        db = {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env.str("DB_NAME", default=str(BASE_DIR / "db.sqlite3")),
        }
    else:
        raise ImproperlyConfigured("DB_ENGINE must be 'sqlite' or 'mysql'.")
    return _tuned(db)


def _tuned(db: dict, *, connect_timeout: int = 5) -> dict:
    db["CONN_HEALTH_CHECKS"] = True
    if db["ENGINE"] == "django.db.backends.mysql":
        # Persistent connections save a TCP + auth round trip per request;
        # health checks drop a dead one after a server restart.
        db["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
        db["OPTIONS"] = {
            # A server that takes the connection but never answers (hung, or a proxy in
            # front of a dead one) is down after this many seconds: a 503, and /healthz
            # says so, instead of every request waiting minutes. `?connect_timeout=` wins.
            "connect_timeout": connect_timeout,
            "charset": "utf8mb4",
            "init_command": "SET sql_mode='STRICT_TRANS_TABLES'",
            "isolation_level": "read committed",
            **db.get("OPTIONS", {}),
        }
        db["TEST"] = {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"}
        # Django's backend with two round trips fewer per transaction (its docstring).
        db["ENGINE"] = "taskmgmt.mariadb"
    else:
        # IMMEDIATE: a transaction takes the write lock when it begins, so two
        # requests cannot both read a row and then race to change it.
        db["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE", **db.get("OPTIONS", {})}
    return db


def _replica() -> dict | None:
    """REPLICA_DATABASE_URL: a replica of the primary for the heavy reads (taskmgmt.replica)."""
    url = env.str("REPLICA_DATABASE_URL", default="")
    if not url:
        return None
    # A replica that does not answer costs a page this long before it falls back
    # to the primary (then it is skipped for a while, taskmgmt.replica).
    db = _tuned(env.db_url_config(url), connect_timeout=2)
    # Tests read the primary's test database through this alias too.
    db["TEST"] = {**db.get("TEST", {}), "MIRROR": "default"}
    return db


DATABASES = {"default": _database()}
if _replica_db := _replica():
    DATABASES["replica"] = _replica_db
# The alias the heavy reads use (taskmgmt.replica): None reads everything from the primary.
READ_REPLICA_ALIAS = "replica" if _replica_db else None
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The demo data lives at the project root (`loaddata demo`), not inside an app.
FIXTURE_DIRS = [BASE_DIR / "fixtures"]

# --- Users and passwords ----------------------------------------------------

AUTH_USER_MODEL = "accounts.User"

PASSWORD_HASHERS = [
    "accounts.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]

# Argon2 hashes one process computes at once (each holds 100 MiB); more wait.
PASSWORD_HASH_CONCURRENCY = env.int("PASSWORD_HASH_CONCURRENCY", default=1)
# Longest a password check waits for a slot; one that would wait longer is a 503 with
# Retry-After at once. 10 s: a client's usual timeout is longer (so it hears the 503),
# and a worker's four threads queue at most ~1 s of hashes on a quiet box (docs/security.md).
PASSWORD_HASH_WAIT_SECONDS = env.float("PASSWORD_HASH_WAIT_SECONDS", default=10.0)

AUTH_PASSWORD_VALIDATORS = [
    {
        # Django's default attributes (username, first_name, …) are not this model's.
        "NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator",
        "OPTIONS": {"user_attributes": ("email", "name")},
    },
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Internationalisation and time ------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
# One datetime format with its zone on every admin page (taskmgmt/formats).
FORMAT_MODULE_PATH = ["taskmgmt.formats"]
USE_TZ = True

# --- Static files -----------------------------------------------------------

STATIC_URL = "static/"
# Where `collectstatic` puts the admin's files for whitenoise to serve.
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- Cache (shared by rate limits) ------------------------------------------

# No CACHE_URL: per-process memory, fine for the one-process embedded default;
# the `taskmgmt.W001` check warns when it is combined with DEBUG=False.
# An empty CACHE_URL (as a copied .env.example leaves it) means the same.
CACHES = {
    "default": env.cache_url_config(env.str("CACHE_URL", default="") or "locmemcache://taskmgmt")
}
if CACHES["default"]["BACKEND"] == "django_redis.cache.RedisCache":
    # A Redis that stops answering (a host gone, packets dropped) fails the count in a
    # second instead of holding the request forever; a count takes well under 1 ms.
    # `?socket_timeout=…&socket_connect_timeout=…` in CACHE_URL wins.
    CACHES["default"]["OPTIONS"] = {
        "SOCKET_CONNECT_TIMEOUT": 1,
        "SOCKET_TIMEOUT": 1,
        **CACHES["default"].get("OPTIONS", {}),
    }

# --- REST API ---------------------------------------------------------------

# Seconds a POST's Idempotency-Key and its answer are kept (taskmgmt.idempotency):
# a day covers a client retrying through an outage, as Stripe's 24 h does.
IDEMPOTENCY_KEY_TTL = env.int("IDEMPOTENCY_KEY_TTL", default=24 * 60 * 60)
if IDEMPOTENCY_KEY_TTL < 1:
    # 0 would make the cache forget every answer at once: retries would act twice.
    raise ImproperlyConfigured("IDEMPOTENCY_KEY_TTL must be at least 1 (seconds).")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.JWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # DRF's, plus JSON columns copied into lists unparsed (taskmgmt/renderers.py).
    "DEFAULT_RENDERER_CLASSES": ["taskmgmt.renderers.JSONRenderer"],
    # JSON whatever the Accept header asks, as the original answered (never a 406).
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "taskmgmt.renderers.JSONWhateverAccepted",
    # JSON only: other bodies get a 415; deeply nested JSON a 400, not a 500.
    "DEFAULT_PARSER_CLASSES": ["taskmgmt.parsers.JSONParser"],
    "DEFAULT_THROTTLE_CLASSES": ["taskmgmt.throttling.ApiRateThrottle"],
    # OPTIONS answers the methods `Allow` lists (DRF's own metadata could 500).
    # CORS preflights are answered by the CORS middleware before any view.
    "DEFAULT_METADATA_CLASS": "taskmgmt.metadata.AllowedMethodsMetadata",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "taskmgmt.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DATETIME_FORMAT": "iso-8601",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

# Largest `limit` a list endpoint accepts.
MAX_PAGE_SIZE = env.int("MAX_PAGE_SIZE", default=1000)

JWT_ACCESS_MINUTES = env.int("JWT_ACCESS_MINUTES", default=15)
JWT_REFRESH_DAYS = env.int("JWT_REFRESH_DAYS", default=7)
# 0 or less: every token is born expired, and every call after a login is a 401.
if JWT_ACCESS_MINUTES < 1 or JWT_REFRESH_DAYS < 1:
    raise ImproperlyConfigured("JWT_ACCESS_MINUTES and JWT_REFRESH_DAYS must be at least 1.")
if MAX_PAGE_SIZE < 1:
    raise ImproperlyConfigured("MAX_PAGE_SIZE must be at least 1: no limit would be valid.")

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=JWT_ACCESS_MINUTES),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=JWT_REFRESH_DAYS),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    # A token carries a digest of the password hash: changing the password
    # revokes every token issued before.
    "CHECK_REVOKE_TOKEN": True,
    "UPDATE_LAST_LOGIN": False,
    "AUTH_HEADER_TYPES": ("Bearer",),
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "user_id",
    "ALGORITHM": "HS256",
    "SIGNING_KEY": env.str("JWT_SIGNING_KEY", default=SECRET_KEY),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "taskmgmt API",
    "DESCRIPTION": (
        "Assigns tasks to worker nodes. Authenticate with POST /api/auth/login "
        "and send `Authorization: Bearer <token>`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # A task's `status` and the `taskStatus` sent to shift-status are one enum; so are
    # a task's `failureCause` and a history row's `cause`.
    "ENUM_NAME_OVERRIDES": {
        "TaskStatusEnum": "tasks.models.TaskStatus",
        "FailureCauseEnum": "tasks.models.FailureCause",
    },
    # Swagger UI and ReDoc from our static files (drf-spectacular-sidecar), not a
    # CDN: the docs render with no internet, as on most production networks.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Rate limits (django-ratelimit) -----------------------------------------

RATELIMIT_LOGIN_IP = env.str("RATELIMIT_LOGIN_IP", default="30/m")
RATELIMIT_LOGIN_USER = env.str("RATELIMIT_LOGIN_USER", default="5/m")
RATELIMIT_API = env.str("RATELIMIT_API", default="600/m")
# django-ratelimit reads a rate with a prefix match and no check: "lots" made every API
# call a 500, "600/M" or "5/x" counted per second, "600/0m" divided by zero. Refused here:
# a count, "/", an optional multiplier, then s, m, h or d (any word after it: "10/min").
for _name in ("RATELIMIT_LOGIN_IP", "RATELIMIT_LOGIN_USER", "RATELIMIT_API"):
    if not re.fullmatch(r"[0-9]+/([1-9][0-9]*)?[smhd][a-z]*", globals()[_name]):
        raise ImproperlyConfigured(
            f"{_name} must be a rate such as 30/m (a count per s, m, h or d, e.g. 100/5m),"
            f" not {globals()[_name]!r}."
        )
RATELIMIT_ENABLE = env.bool("RATELIMIT_ENABLE", default=True)

# A node's heartbeat, progress reports and task reads answered without Django's request
# plumbing when they need nothing else (taskmgmt.hot_paths); false: Django answers all.
HOT_PATHS = env.bool("HOT_PATHS", default=True)
# Where the client's address is: REMOTE_ADDR unless a proxy sits in front, which
# must then set this header itself (e.g. HTTP_X_REAL_IP), or every client
# shares the proxy's per-IP login limit.
RATELIMIT_IP_META_KEY = env.str("RATELIMIT_IP_META_KEY", default="") or None
# LocMem cannot be shared between workers; our own check (taskmgmt.W001)
# replaces django-ratelimit's error so the embedded default still starts.
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.E003", "django_ratelimit.W001"]

# --- CORS and security headers ----------------------------------------------

CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
CORS_URLS_REGEX = r"^/(api|cron)(/.*)?$"  # /api itself too: the original greeted there
# Browser scripts may send an Idempotency-Key and their own X-Request-ID, and read
# these on our answers: the 429/503 wait, the log id, and whether a keyed POST was
# answered again.
CORS_ALLOW_HEADERS = (*default_headers, "idempotency-key", "x-request-id")
CORS_EXPOSE_HEADERS = ["Retry-After", "X-Request-ID", "Idempotent-Replayed"]

# TLS usually ends at the proxy, so no redirect unless asked for.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
# A load balancer's health check and a Prometheus scrape ask each host over plain HTTP
# (deploy/haproxy.cfg): redirected, they saw a 301 and took every host out of service.
SECURE_REDIRECT_EXEMPT = [r"^healthz/?$", r"^metrics/?$"]
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
# Off unless asked for: once a domain is on browsers' preload list, leaving it takes months.
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# The admin's messages live in its session. Django's default (a signed cookie,
# then the session) built a cookie signer on every API request too.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
X_FRAME_OPTIONS = "DENY"

# Bodies larger than this are refused before they reach a view.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=1024 * 1024)

# --- Nodes: liveness and failover (SPEC, Nodes) -----------------------------

# What nodes are told to beat at; a node is stale after 1.5 intervals without a beat.
NODE_HEARTBEAT_SECONDS = env.int("NODE_HEARTBEAT_SECONDS", default=10)
# Down after three missed beats: long enough that a slow network or a GC pause is
# not a death, short enough that a dead node's work moves within a minute.
NODE_DOWN_AFTER = env.int("NODE_DOWN_AFTER", default=3 * NODE_HEARTBEAT_SECONDS)
if NODE_HEARTBEAT_SECONDS < 1:
    raise ImproperlyConfigured("NODE_HEARTBEAT_SECONDS must be at least 1.")
# Not above the stale mark (1.5 beats): a node would be down between two beats, and
# with 0 every node at once (FAILOVER=reassign would move all their work).
if NODE_DOWN_AFTER <= 1.5 * NODE_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured(
        "NODE_DOWN_AFTER must be more than 1.5 x NODE_HEARTBEAT_SECONDS (a node is stale"
        f" after 1.5 beats): {NODE_DOWN_AFTER} with beats every {NODE_HEARTBEAT_SECONDS} s."
    )
# Where the cache is Redis, beats wait there and the first beat this long after
# the last flush writes them all (nodes/heartbeats.py); liveness reads flush first.
NODE_HEARTBEAT_FLUSH_SECONDS = env.float("NODE_HEARTBEAT_FLUSH_SECONDS", default=1.0)
if not 0 < NODE_HEARTBEAT_FLUSH_SECONDS <= NODE_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured(
        "NODE_HEARTBEAT_FLUSH_SECONDS must be above 0 and at most NODE_HEARTBEAT_SECONDS."
    )
# off: a down node's tasks wait for their deadline and a human (the original's
# behaviour, so the safe default); reassign: the sweep moves them to alive nodes.
FAILOVER = env.str("FAILOVER", default="off")
if FAILOVER not in ("off", "reassign"):
    raise ImproperlyConfigured(f"FAILOVER must be off or reassign, not {FAILOVER!r}.")
# When more than this share of the recently alive nodes are down at once, the sweep
# fails none of them over and says so: so many deaths at once are likelier the
# server's or the network's fault than the nodes' (SPEC, Nodes). 1 turns it off.
FAILOVER_MAX_DOWN_SHARE = env.float("FAILOVER_MAX_DOWN_SHARE", default=0.5)
if not 0 < FAILOVER_MAX_DOWN_SHARE <= 1:
    raise ImproperlyConfigured("FAILOVER_MAX_DOWN_SHARE must be above 0 and at most 1.")
# Starts a task may have before failover leaves it failed for a human.
TASK_MAX_ATTEMPTS = env.int("TASK_MAX_ATTEMPTS", default=3)
# A task given out again without a deadline, whose deadline is past or sooner
# than this, gets now + this many minutes (tasks.models.fresh_deadline).
REASSIGN_DEADLINE_MINUTES = env.int("REASSIGN_DEADLINE_MINUTES", default=60)
# How long a node has to acknowledge a cancel request before the sweep cancels the
# task itself (cause cancel_timeout): a few heartbeats plus a worker's own grace to
# stop (Buildkite gives 10 s, GitHub runners 7.5 + 2.5 s), so 60 s is generous.
CANCEL_GRACE_SECONDS = env.int("CANCEL_GRACE_SECONDS", default=60)
# A drain without a deadline lets in-progress work run this long (Nomad's default is 1 h).
DRAIN_DEADLINE_MINUTES = env.int("DRAIN_DEADLINE_MINUTES", default=60)
# Work data's limits in bytes of compact JSON (docs/api.md, Work data): Nomad's dispatch
# payload is 16 KiB; these keep a list page of 50 tasks within a few MiB at worst.
TASK_PAYLOAD_MAX_BYTES = env.int("TASK_PAYLOAD_MAX_BYTES", default=65_536)
TASK_RESULT_MAX_BYTES = env.int("TASK_RESULT_MAX_BYTES", default=65_536)
# Smaller: a node may send its checkpoint every few seconds.
TASK_CHECKPOINT_MAX_BYTES = env.int("TASK_CHECKPOINT_MAX_BYTES", default=16_384)
# Tasks one POST /api/tasks/bulk may create: 1,000 take well under a second on MariaDB
# (docs/placement.md); the request body's size limit bounds it too.
BULK_MAX_TASKS = env.int("BULK_MAX_TASKS", default=1000)
# The largest body of a bulk create (every other route: DATA_UPLOAD_MAX_MEMORY_SIZE):
# 1,000 tasks with ~8 KiB payloads. Parsed in memory, several times its size, by an
# admin only; each INSERT is kept to a few MiB (MariaDB's max_allowed_packet: 16 MiB).
BULK_MAX_BODY_BYTES = env.int("BULK_MAX_BODY_BYTES", default=8 * 1024 * 1024)

# --- Operations: the admin dashboard and /metrics (docs/operations.md) ------

# How long the dashboard's figures are reused: a few seconds of staleness (said on
# the page) turns a refresh storm into one set of queries.
DASHBOARD_CACHE_SECONDS = env.int("DASHBOARD_CACHE_SECONDS", default=5)
# /metrics answers a scraper sending `Authorization: Bearer <METRICS_TOKEN>` and/or
# one from METRICS_ALLOWED_NETWORKS (CIDRs, e.g. 10.0.0.0/8); both set, both must
# hold. Neither set (the default): 404, so the metrics are never open by accident.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_NETWORKS = env.list("METRICS_ALLOWED_NETWORKS", default=[])
for _network in METRICS_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError as error:
        raise ImproperlyConfigured(f"METRICS_ALLOWED_NETWORKS: {error}") from None

# --- The sweep --------------------------------------------------------------

# Tasks failed per transaction: short row locks, few round trips (docs/performance.md).
SWEEP_BATCH_SIZE = env.int("SWEEP_BATCH_SIZE", default=5000)
SWEEP_SCHEDULE = env.str("SWEEP_SCHEDULE", default="* * * * *")
# django-crontab writes the schedule unchecked and `crontab add` exits 0 whatever cron
# makes of it: a sixth field would start cron's command (no sweep would ever run), a
# typo is refused by crontab(1) alone. Five fields or a periodic @-keyword, checked here.
_CRON_FIELD = r"[0-9A-Za-z*/,-]+"
if not re.fullmatch(
    rf"@(yearly|annually|monthly|weekly|daily|midnight|hourly)|{_CRON_FIELD}(\s+{_CRON_FIELD}){{4}}",
    SWEEP_SCHEDULE.strip(),
):
    raise ImproperlyConfigured(
        f"SWEEP_SCHEDULE must be a cron schedule of five fields (e.g. */5 * * * *) or"
        f" @hourly, @daily, ..., not {SWEEP_SCHEDULE!r}."
    )
# Sweep runs older than this many days are let go by the sweep (0: keep every run); what
# they did stays in /metrics' totals (tasks.models.SweepTotals).
SWEEP_RUNS_KEEP_DAYS = env.int("SWEEP_RUNS_KEEP_DAYS", default=30)
# `manage.py crontab add` writes: <schedule> <prefix> <python> <manage.py> crontab run <hash>,
# with absolute paths. Cron's environment is bare, but settings read BASE_DIR/.env
# wherever cron starts; CRONTAB_COMMAND_PREFIX may add variables (DATABASE_URL=…).
# `crontab run` finds its job by a hash of the CRONJOBS entry, schedule included:
# it needs the settings `crontab add` had, best from .env (else it fails, loudly).
CRONJOBS = [(SWEEP_SCHEDULE, "tasks.management.commands.collect_failed.run_from_crontab")]
CRONTAB_COMMAND_PREFIX = env.str("CRONTAB_COMMAND_PREFIX", default="")
CRONTAB_COMMAND_SUFFIX = env.str("CRONTAB_COMMAND_SUFFIX", default="")
CRONTAB_DJANGO_MANAGE_PATH = str(BASE_DIR / "manage.py")
# `crontab add` replaces the lines carrying this comment: one per checkout on a host.
CRONTAB_COMMENT = f"taskmgmt sweep in {BASE_DIR}"
CRONTAB_EXECUTABLE = env.str("CRONTAB_EXECUTABLE", default="/usr/bin/crontab")
# A run still going when the next minute starts makes that one skip (its sweep is
# safe anyway, SKIP LOCKED shares the work).
CRONTAB_LOCK_JOBS = True

# --- Logging: one JSON line per event ---------------------------------------

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# A server logs to stdout for its supervisor to collect. Any other manage.py command
# (the sweep from cron) logs to stderr: its stdout is its output, kept for people.
_MANAGE_COMMAND = sys.argv[1] if Path(sys.argv[0]).name == "manage.py" and sys.argv[1:] else None
LOG_STREAM = "ext://sys.stdout" if _MANAGE_COMMAND in (None, "runserver") else "ext://sys.stderr"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "taskmgmt.logging.JsonFormatter"}},
    "filters": {
        "request_id": {"()": "taskmgmt.logging.RequestIdFilter"},
        "disallowed_host": {"()": "taskmgmt.logging.DisallowedHostFilter"},
        "answered_error": {"()": "taskmgmt.logging.AnsweredErrorFilter"},
    },
    "handlers": {
        "json": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "filters": ["request_id"],
            "stream": LOG_STREAM,
        },
        "discard": {"class": "logging.NullHandler"},
    },
    "root": {"handlers": ["json"], "level": LOG_LEVEL},
    "loggers": {
        # Our request log replaces Django's, which logs 4xx as warnings twice.
        "django.request": {"level": "ERROR", "filters": ["answered_error"]},
        # Django's own handlers printed a second, plain copy of lines: ours is the one.
        "django": {"handlers": [], "level": "INFO"},
        # runserver's access line; the request log above has every request once.
        # (A logger without handlers would reach Python's last-resort handler instead.)
        "django.server": {"handlers": ["discard"], "propagate": False},
        "django.security.DisallowedHost": {"filters": ["disallowed_host"]},
    },
}
