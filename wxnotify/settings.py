"""Settings for wxnotify.

Everything is read from environment variables with embedded defaults, so a bare checkout runs on
SQLite, the database cache and the django-q2 ORM broker.  Setting ``DATABASE_URL`` and
``REDIS_URL`` moves the same code onto PostgreSQL and Redis, which is how it scales past one host.

Size: over 450 lines on purpose: Django reads one settings module, and an operator looking for a variable
(``deploy/wxnotify.env.example`` lists them all) should find every one of them here.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from wxnotify.encryption import GENERATE_KEY_COMMAND
from wxnotify.encryption import check_keys as check_encryption_keys
from wxnotify.encryption import derived_key as derived_encryption_key
from wxnotify.wechat import PRODUCTION_API_BASE

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("WXNOTIFY_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool = False) -> bool:
    """Read a boolean environment variable ("1", "true", "yes", "on" are true)."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from exc


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


# --- Core -----------------------------------------------------------------------------------------

INSECURE_DEFAULT_SECRET_KEY = "django-insecure-wxnotify-development-key-do-not-use-in-production"
DEBUG = env_bool("DJANGO_DEBUG", default=False)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", INSECURE_DEFAULT_SECRET_KEY)
if not DEBUG and SECRET_KEY == INSECURE_DEFAULT_SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is not set. Set it to a long random value, or set DJANGO_DEBUG=1 for development."
    )

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])
# JSON under /api/, Django's page elsewhere (like handler400 and handler500 in wxnotify.urls).
CSRF_FAILURE_VIEW = "wxnotify.http_errors.csrf_failure"

INSTALLED_APPS = [
    # Before the admin: its admin/index.html adds the operations dashboard link to the admin's index.
    "operations.apps.OperationsConfig",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # django-axes (sign-in throttling) under a translated name in the admin, where its attempts are unlocked.
    "wxnotify.apps.SignInThrottlingConfig",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    # django_q under a translated name in the admin (its own comes untranslated from Q_CLUSTER["label"]).
    "wxnotify.apps.TaskQueueConfig",
    "wxnotify.apps.WxnotifyConfig",
    # Before django-auditlog: its auditlogflush command is replaced by audit's, which refuses.
    "audit",
    "auditlog",
    "accounts",
    "templates_app",
    "subscriptions",
    "messaging",
    "callbacks",
    "webhooks",
    "sandbox",
]

MIDDLEWARE = [
    "wxnotify.middleware.UnreadBodyMiddleware",
    "wxnotify.middleware.RequestIdMiddleware",
    "wxnotify.middleware.OutageMiddleware",
    "wxnotify.middleware.ForwardedHeadersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # WeChat's callback URLs stop here: nothing below serves them (see callbacks.middleware).
    "callbacks.middleware.CallbackShortcutMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Who (read when an entry is written, so API token users count) and from where, for the audit log.
    "audit.context.AuditMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: turns a locked-out sign-in into its lock-out page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "wxnotify.urls"
WSGI_APPLICATION = "wxnotify.wsgi.application"
ASGI_APPLICATION = "wxnotify.asgi.application"

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

# --- Database -------------------------------------------------------------------------------------

DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=600, conn_health_checks=True)}
else:
    # SQLite shared by a web process and qcluster workers: WAL lets readers run beside the writer,
    # IMMEDIATE transactions take the write lock up front (no upgrade deadlocks) and the timeout
    # makes a writer wait for the lock instead of failing with "database is locked".
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "wxnotify.sqlite3",
            "CONN_MAX_AGE": 600,
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            "TEST": {"NAME": VAR_DIR / "test-wxnotify.sqlite3"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache, broker and locks ----------------------------------------------------------------------

REDIS_URL = os.environ.get("REDIS_URL", "")
CACHE_TABLE = "wxnotify_cache"
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "wxnotify",
            # A Redis that stops answering must fail requests (and /healthz) within seconds, not hang them.  The
            # read timeout stays above the 1 s BLPOP of django-q2's broker, which shares this connection pool.
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                "SOCKET_CONNECT_TIMEOUT": env_int("REDIS_CONNECT_TIMEOUT", 2),
                "SOCKET_TIMEOUT": env_int("REDIS_SOCKET_TIMEOUT", 5),
            },
        }
    }
else:
    # The database cache is shared by every process on the host (and beyond, on a shared DB);
    # its atomic add() backs the token single-flight lock when there is no Redis.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": CACHE_TABLE,
            "KEY_PREFIX": "wxnotify",
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }
# Per-process memo of hot look-ups (API tokens, account access, templates): see wxnotify.memo for how stale it
# may get.  0 seconds turns it off.
CACHES["lookups"] = {
    "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
    "LOCATION": "wxnotify-lookups",
    "OPTIONS": {"MAX_ENTRIES": 10_000},
}
# The API throttles' request counters (messaging.api.throttles): in Redis, shared by every process and host; without
# Redis in each web process's memory rather than in SQLite, whose single writer every request would queue behind.
CACHES["throttles"] = (
    {**CACHES["default"]}
    if REDIS_URL
    else {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "wxnotify-throttles",
        "OPTIONS": {"MAX_ENTRIES": 100_000},
    }
)
WXNOTIFY_LOOKUP_MEMO_SECONDS = env_int("WXNOTIFY_LOOKUP_MEMO_SECONDS", 10)

Q_CLUSTER = {
    "name": "wxnotify",
    "workers": env_int("WXNOTIFY_Q_WORKERS", 2),
    "timeout": 120,
    "retry": 300,
    "max_attempts": 1,
    "ack_failures": True,
    "save_limit": 1000,
    "catch_up": False,
    "sync": env_bool("WXNOTIFY_TASKS_SYNC", default=False),
}
if REDIS_URL:
    Q_CLUSTER["django_redis"] = "default"
else:
    Q_CLUSTER["orm"] = "default"
    Q_CLUSTER["poll"] = 0.2

# --- WeChat ---------------------------------------------------------------------------------------

WECHAT_API_BASE = os.environ.get("WECHAT_API_BASE", PRODUCTION_API_BASE).rstrip("/")
WECHAT_HTTP_POOL_SIZE = env_int("WECHAT_HTTP_POOL_SIZE", 64)
WECHAT_CONNECT_TIMEOUT = float(os.environ.get("WECHAT_CONNECT_TIMEOUT", "3.05"))
WECHAT_READ_TIMEOUT = float(os.environ.get("WECHAT_READ_TIMEOUT", "10"))
# A cached token is refreshed when less than this many seconds of validity remain.
WECHAT_TOKEN_REFRESH_MARGIN = env_int("WECHAT_TOKEN_REFRESH_MARGIN", 300)
# The scheduled refresher renews tokens that expire within this window, so sends never wait.
WECHAT_TOKEN_PREFETCH_WINDOW = env_int("WECHAT_TOKEN_PREFETCH_WINDOW", 900)
# Callback endpoint: bodies above this size are refused (413); WeChat's messages are a few KiB at most.
WECHAT_CALLBACK_MAX_BODY_BYTES = env_int("WECHAT_CALLBACK_MAX_BODY_BYTES", 64 * 1024)
# An oversized body up to this size is read and dropped before the 413, so the client reads the 413 instead of a
# connection reset; a larger one is not read at all.
WECHAT_CALLBACK_MAX_DRAIN_BYTES = env_int("WECHAT_CALLBACK_MAX_DRAIN_BYTES", 1024 * 1024)
# Any other request body a view left unread, up to this size, is read and dropped before the answer (so a client or
# proxy reads a 401 or a redirect instead of a reset): the largest body the API takes (BULK_BODY_MAX_BYTES) and nginx
# lets through (deploy/nginx/wxnotify.conf).  A larger one is not read.
WXNOTIFY_UNREAD_BODY_DRAIN_BYTES = env_int("WXNOTIFY_UNREAD_BODY_DRAIN_BYTES", 16 * 1024 * 1024)
# Our replay policy (WeChat documents none): a callback whose signed timestamp is further than this many
# seconds from our clock is refused (403).
WECHAT_CALLBACK_MAX_CLOCK_SKEW = env_int("WECHAT_CALLBACK_MAX_CLOCK_SKEW", 300)

# AppSecrets at rest and access_tokens in the shared cache are encrypted with these Fernet keys (wxnotify.encryption):
# the first encrypts, every key decrypts, so a key is rotated by putting a new one first, running
# ``manage.py rotate_app_secrets`` and then dropping the old one (docs/security.md).  Production needs keys of its
# own: a key derived from SECRET_KEY would make every stored secret unreadable the day SECRET_KEY is rotated, which is
# the normal answer to a leak.  The derived key is a convenience for DEBUG runs only.
WXNOTIFY_ENCRYPTION_KEYS = env_list("WXNOTIFY_ENCRYPTION_KEYS", [])
if WXNOTIFY_ENCRYPTION_KEYS:
    check_encryption_keys(WXNOTIFY_ENCRYPTION_KEYS)
elif DEBUG:
    WXNOTIFY_ENCRYPTION_KEYS = [derived_encryption_key(SECRET_KEY)]
else:
    raise ImproperlyConfigured(
        "WXNOTIFY_ENCRYPTION_KEYS is not set. Set it to a Fernet key of its own (comma-separated keys: the first "
        f"encrypts, all decrypt); generate one with: {GENERATE_KEY_COMMAND}  An installation whose AppSecrets were "
        "stored under the key derived from DJANGO_SECRET_KEY also lists that key, after the new one, and runs "
        "`manage.py rotate_app_secrets`: see 'Moving off the derived key' in docs/security.md."
    )
# Where WeChat reaches this service: the callback URL shown to paste into WeChat's console.
WXNOTIFY_PUBLIC_BASE_URL = os.environ.get("WXNOTIFY_PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/")

# --- Send pipeline (messaging) --------------------------------------------------------------------

# Sends in flight per worker process for campaigns (the bulk lane's thread pool, over the pooled HTTP session); single
# messages and due retries have a lane of a quarter of that on top (messaging.sendpool).
WXNOTIFY_SEND_CONCURRENCY = env_int("WXNOTIFY_SEND_CONCURRENCY", 32)
# How many delivery tasks work through one campaign side by side (each keeps WXNOTIFY_SEND_CONCURRENCY sends in
# flight); more than the cluster's worker processes only makes tasks wait for a worker.
WXNOTIFY_CAMPAIGN_PARALLELISM = env_int("WXNOTIFY_CAMPAIGN_PARALLELISM", 4)
# Messages per claim of the explicit-id delivery task and per sweep of lost work.
WXNOTIFY_SEND_BATCH_SIZE = env_int("WXNOTIFY_SEND_BATCH_SIZE", 200)
# Attempts before a message that keeps failing transiently is failed with the last reason.
WXNOTIFY_MAX_ATTEMPTS = env_int("WXNOTIFY_MAX_ATTEMPTS", 5)
# Exponential backoff: the n-th retry waits base * 2**(n-1) seconds (at most the cap), half of it fixed and half
# random, so the retries of a batch spread out.
WXNOTIFY_RETRY_BASE_DELAY = float(os.environ.get("WXNOTIFY_RETRY_BASE_DELAY", "5"))
WXNOTIFY_RETRY_MAX_DELAY = float(os.environ.get("WXNOTIFY_RETRY_MAX_DELAY", "600"))
# A message whose outcome is unknown (no answer from WeChat, or its worker died) may be sent again only this many
# seconds after that attempt began; WeChat de-duplicates a client_msg_id for about 10 minutes.  Past it the message
# fails with wxnotify's errcode -9001 ("outcome unknown, may have been delivered").
WXNOTIFY_RESEND_WINDOW_SECONDS = env_int("WXNOTIFY_RESEND_WINDOW_SECONDS", 480)
# A delivery task renews the claim ("lease") on its messages every third of this; when its worker dies the
# messages are taken back and sent again (same client_msg_id) after the lease runs out.
WXNOTIFY_SEND_LEASE_SECONDS = env_int("WXNOTIFY_SEND_LEASE_SECONDS", 30)
# A delivery task stops claiming after this many seconds and hands its work to a fresh task, well inside
# django-q2's timeout (Q_CLUSTER["timeout"]) even with a last WeChat call of WECHAT_READ_TIMEOUT in flight.
WXNOTIFY_DELIVERY_TASK_SECONDS = float(os.environ.get("WXNOTIFY_DELIVERY_TASK_SECONDS", "20"))
# With nothing to do, a delivery task waits this long for new single messages before it stops.
WXNOTIFY_DELIVERY_IDLE_SECONDS = float(os.environ.get("WXNOTIFY_DELIVERY_IDLE_SECONDS", "1"))
# One delivery task stays (handing over to the next) while a retry is due within this many seconds; retries due
# later are woken by the sweeper, which runs every minute.
WXNOTIFY_RETRY_WAIT_HORIZON_SECONDS = env_int("WXNOTIFY_RETRY_WAIT_HORIZON_SECONDS", 150)
# Messages and campaigns may be scheduled at most this many days ahead (send_at; bench/RESULTS.md "Scheduled sends").
WXNOTIFY_SCHEDULE_MAX_DAYS = env_int("WXNOTIFY_SCHEDULE_MAX_DAYS", 30)
# A delivery receipt still waiting for its message after this long is marked unmatched.
WXNOTIFY_RECEIPT_MATCH_WINDOW_SECONDS = env_int("WXNOTIFY_RECEIPT_MATCH_WINDOW_SECONDS", 300)
# Messages per second for accounts without a limit of their own (0 = no limit).
WXNOTIFY_DEFAULT_SEND_RATE_LIMIT = env_int("WXNOTIFY_DEFAULT_SEND_RATE_LIMIT", 0)

# --- Delivery webhooks (the webhooks app) ----------------------------------------------------------
# Networks a webhook may reach although they are not public (private, loopback, link-local ...): comma-separated
# CIDRs, e.g. "10.20.0.0/16".  Empty by default: a webhook never reaches internal services (docs/security.md).
WXNOTIFY_WEBHOOK_ALLOWED_NETWORKS = env_list("WXNOTIFY_WEBHOOK_ALLOWED_NETWORKS", [])
# An event is retried with exponential backoff (from this many seconds, doubling up to an hour) for this long.
WXNOTIFY_WEBHOOK_RETRY_BASE_SECONDS = float(os.environ.get("WXNOTIFY_WEBHOOK_RETRY_BASE_SECONDS", "10"))
WXNOTIFY_WEBHOOK_RETRY_MAX_SECONDS = float(os.environ.get("WXNOTIFY_WEBHOOK_RETRY_MAX_SECONDS", "3600"))
WXNOTIFY_WEBHOOK_RETRY_HOURS = float(os.environ.get("WXNOTIFY_WEBHOOK_RETRY_HOURS", "24"))
WXNOTIFY_WEBHOOK_TIMEOUT_SECONDS = float(os.environ.get("WXNOTIFY_WEBHOOK_TIMEOUT_SECONDS", "10"))
# How many deliveries one worker task keeps in flight, and how many tasks work through a backlog side by side.
WXNOTIFY_WEBHOOK_CONCURRENCY = env_int("WXNOTIFY_WEBHOOK_CONCURRENCY", 16)
WXNOTIFY_WEBHOOK_TASKS = env_int("WXNOTIFY_WEBHOOK_TASKS", 3)

# --- Operations (health and metrics) ---------------------------------------------------------------

# /healthz fails when the oldest due queued message has waited longer than this many seconds.
WXNOTIFY_HEALTH_MAX_QUEUE_LAG_SECONDS = env_int("WXNOTIFY_HEALTH_MAX_QUEUE_LAG_SECONDS", 300)
# /metrics and the details of /healthz (operations.access): once this bearer token is set, only for requests with
# "Authorization: Bearer <token>".  Without a token, open to anyone with WXNOTIFY_METRICS_PUBLIC=1 (e.g. a port only
# Prometheus reaches) or in DEBUG runs (the demo); otherwise /metrics answers 404 and /healthz only ok / not ok.  The
# token is a secret: masked in logs (operations.apps), never shown, long enough that it cannot be guessed.
WXNOTIFY_METRICS_TOKEN = os.environ.get("WXNOTIFY_METRICS_TOKEN", "").strip()
WXNOTIFY_METRICS_TOKEN_MIN_LENGTH = 16
if WXNOTIFY_METRICS_TOKEN and len(WXNOTIFY_METRICS_TOKEN) < WXNOTIFY_METRICS_TOKEN_MIN_LENGTH:
    raise ImproperlyConfigured(
        f"WXNOTIFY_METRICS_TOKEN must be at least {WXNOTIFY_METRICS_TOKEN_MIN_LENGTH} characters; generate one with: "
        "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
    )
WXNOTIFY_METRICS_PUBLIC = env_bool("WXNOTIFY_METRICS_PUBLIC", default=False)
# prometheus_client's multiprocess mode: every web and qcluster process of this host writes its counters here and
# /metrics sums them. It must be set before prometheus_client is imported, and emptied when the host's services
# (re)start, never while they run.
WXNOTIFY_METRICS_DIR = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR", VAR_DIR / "prometheus"))
WXNOTIFY_METRICS_DIR.mkdir(parents=True, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(WXNOTIFY_METRICS_DIR)

# --- Auth, i18n, static ---------------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"

# --- Sign-in throttling (django-axes, wxnotify.login_throttling) -----------------------------------------------------

# The axes backend goes first: it refuses a locked-out sign-in before the password is even checked.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
# Attempts live in the database on both configurations, Redis or not: sign-ins are rare, so the writes cost nothing
# that matters; the admin lists the attempts and unlocks them (the cache handler's live only in Redis, invisible to
# the admin, and an evicted or flushed key would quietly lift a lock-out).
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_FAILURE_LIMIT = env_int("WXNOTIFY_LOGIN_FAILURE_LIMIT", 5)
WXNOTIFY_LOGIN_COOLOFF_MINUTES = env_int("WXNOTIFY_LOGIN_COOLOFF_MINUTES", 15)
AXES_COOLOFF_TIME = timedelta(minutes=WXNOTIFY_LOGIN_COOLOFF_MINUTES)
# Per username and address together: see wxnotify.login_throttling for why.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "wxnotify.login_throttling.client_address"
AXES_LOCKOUT_CALLABLE = "wxnotify.login_throttling.lockout_response"
AXES_VERBOSE = False

LANGUAGE_CODE = "zh-hans"
LANGUAGES = [("zh-hans", "简体中文"), ("en", "English")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = os.environ.get("DJANGO_TIME_ZONE", "Asia/Shanghai")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Where collectstatic puts the files the web server (nginx, deploy/nginx/wxnotify.conf) serves: on its own so that it
# can be a directory the web server may read, apart from the service's private VAR_DIR.
STATIC_ROOT = Path(os.environ.get("DJANGO_STATIC_ROOT", VAR_DIR / "static"))

# --- REST framework -------------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "messaging.api.authentication.MemoizedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "messaging.api.exceptions.api_exception_handler",
    # Per-user limits of the API (messaging.api.throttles); "send" applies on top to sending requests, "token_read"
    # to reads of an account's access_token.
    "DEFAULT_THROTTLE_RATES": {
        "burst": os.environ.get("WXNOTIFY_API_BURST_RATE", "300/s"),
        "sustained": os.environ.get("WXNOTIFY_API_SUSTAINED_RATE", "200000/h"),
        "send": os.environ.get("WXNOTIFY_API_SEND_RATE", "250/s"),
        # Reads of an account's access_token (messaging.api.tokens); a service keeps the token until near expiry.
        "token_read": os.environ.get("WXNOTIFY_API_TOKEN_READ_RATE", "60/m"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "wxnotify API",
    "DESCRIPTION": (
        "Send WeChat Official Account template messages and subscription notifications reliably and see what "
        "happened to each one."
    ),
    "VERSION": "1.0.0",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Tags and operation ids from the resource ("messages", "campaigns"), not from the version prefix.
    "SCHEMA_PATH_PREFIX": r"/api/v[0-9]+",
    "SERVE_INCLUDE_SCHEMA": False,
    # One name per set of channels, whichever serializer shows it: a request may ask for auto, a message never has it.
    "ENUM_NAME_OVERRIDES": {
        "ChannelEnum": "messaging.models.Channel",
        "MessageChannelEnum": "messaging.models.MESSAGE_CHANNELS",
    },
}

# --- Security when DEBUG is off -------------------------------------------------------------------

# Behind a TLS-terminating proxy (load balancer, nginx) that sets X-Forwarded-Proto and appends the client's address
# to X-Forwarded-For.  Only then are those headers believed: without a proxy that overwrites them, any client could
# claim to be on HTTPS or to come from another address.
WXNOTIFY_BEHIND_PROXY = env_bool("WXNOTIFY_BEHIND_PROXY", default=False)
# The proxy's own addresses (or networks): the headers are believed only on connections from them
# (wxnotify.middleware.ForwardedHeadersMiddleware), so a client reaching gunicorn directly cannot claim HTTPS or
# another address.  The variable is gunicorn's own (its forwarded_allow_ips), with gunicorn's default: one list for
# both.
WXNOTIFY_PROXY_ADDRESSES = env_list("FORWARDED_ALLOW_IPS", ["127.0.0.1", "::1"])
if WXNOTIFY_BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", default=True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"
    # Plain-HTTP requests are redirected to HTTPS, except the per-host probes (/healthz, /metrics) that a load
    # balancer or Prometheus sends straight to each web process.  WXNOTIFY_SSL_REDIRECT=0 is for a TLS proxy that
    # redirects by itself (and then Django's reminder of the redirect, security.W008, is silenced).
    SECURE_SSL_REDIRECT = env_bool("WXNOTIFY_SSL_REDIRECT", default=True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
    # Browsers remember to use HTTPS only for a year; 0 turns HSTS off (e.g. while trying HTTPS out).
    SECURE_HSTS_SECONDS = env_int("WXNOTIFY_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("WXNOTIFY_HSTS_INCLUDE_SUBDOMAINS", default=True)
    # Preloading asks browser vendors to hard-code HTTPS for the whole registered domain, a decision for the owner
    # of that domain, not for this service: off unless asked for, and Django's reminder (security.W021) silenced.
    SECURE_HSTS_PRELOAD = env_bool("WXNOTIFY_HSTS_PRELOAD", default=False)
    SILENCED_SYSTEM_CHECKS = [
        *([] if SECURE_SSL_REDIRECT else ["security.W008"]),
        *([] if SECURE_HSTS_PRELOAD else ["security.W021"]),
    ]

# --- Audit log (the audit app, django-auditlog) -------------------------------------------------------------------

# django-auditlog writes into our table (audit.models), which adds the action records and refuses changes.
AUDITLOG_LOGENTRY_MODEL = "audit.AuditLogEntry"
# Its own migrations would still create its (swapped-out, never used) table, whose foreign key to the content types
# makes PostgreSQL refuse to empty them (flush, transactional tests): none of its migrations run, and migrate skips a
# swapped model, so that table never exists.
MIGRATION_MODULES = {"auditlog": None}
# An entry's correlation id is the request's or task's trace id (X-Request-ID).
AUDITLOG_CID_GETTER = "audit.context.current_trace_id"
# Which models are recorded, and which of their fields are masked, is said in audit.tracked.

# --- Logging --------------------------------------------------------------------------------------

LOG_LEVEL = os.environ.get("WXNOTIFY_LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact_secrets": {"()": "wxnotify.log.RedactSecretsFilter"},
        "trace_id": {"()": "wxnotify.tracing.TraceIdFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(process)d [%(trace_id)s] %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact_secrets", "trace_id"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "django_q": {"handlers": ["console"], "level": "WARNING", "propagate": False},
        "urllib3": {"handlers": ["console"], "level": "WARNING", "propagate": False},
        "wxnotify": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
    },
}
