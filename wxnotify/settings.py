"""Settings for wxnotify.

Everything is read from environment variables with embedded defaults, so a bare checkout runs on
SQLite, the database cache and the django-q2 ORM broker.  Setting ``DATABASE_URL`` and
``REDIS_URL`` moves the same code onto PostgreSQL and Redis, which is how it scales past one host.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

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
if not DEBUG and SECRET_KEY == INSECURE_DEFAULT_SECRET_KEY and not env_bool("WXNOTIFY_ALLOW_INSECURE_KEY"):
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is not set. Set it to a long random value, or set DJANGO_DEBUG=1 for development."
    )

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    # Before the admin: its admin/index.html adds the operations dashboard link to the admin's index.
    "wxnotify.ops.apps.OpsConfig",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    # django_q under a translated name in the admin (its own comes untranslated from Q_CLUSTER["label"]).
    "wxnotify.apps.TaskQueueConfig",
    "wxnotify.apps.WxnotifyConfig",
    "accounts",
    "templates_app",
    "messaging",
    "sandbox",
]

MIDDLEWARE = [
    "wxnotify.middleware.RequestIdMiddleware",
    "wxnotify.middleware.OutageMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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
# Our replay policy (WeChat documents none): a callback whose signed timestamp is further than this many
# seconds from our clock is refused (403).
WECHAT_CALLBACK_MAX_CLOCK_SKEW = env_int("WECHAT_CALLBACK_MAX_CLOCK_SKEW", 300)

# AppSecrets are stored encrypted (Fernet). The first key encrypts, every key decrypts, so a key is
# rotated by putting the new one first and re-saving (``manage.py rotate_app_secrets`` re-encrypts).
# Without the variable a key is derived from SECRET_KEY, which then must not change.
WXNOTIFY_ENCRYPTION_KEYS = env_list("WXNOTIFY_ENCRYPTION_KEYS", [])
if not WXNOTIFY_ENCRYPTION_KEYS:
    from base64 import urlsafe_b64encode

    from cryptography.hazmat.primitives.hashes import SHA256
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    _hkdf = HKDF(algorithm=SHA256(), length=32, salt=None, info=b"wxnotify.accounts.app_secret")
    WXNOTIFY_ENCRYPTION_KEYS = [urlsafe_b64encode(_hkdf.derive(SECRET_KEY.encode())).decode()]
# Where WeChat reaches this service: the callback URL shown to paste into WeChat's console.
WXNOTIFY_PUBLIC_BASE_URL = os.environ.get("WXNOTIFY_PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/")

# --- Send pipeline (messaging) --------------------------------------------------------------------

# Sends in flight per worker process (one shared thread pool over the pooled HTTP session).
WXNOTIFY_SEND_CONCURRENCY = env_int("WXNOTIFY_SEND_CONCURRENCY", 32)
# Messages per delivery task: campaigns are cut into batches of this size.
WXNOTIFY_SEND_BATCH_SIZE = env_int("WXNOTIFY_SEND_BATCH_SIZE", 200)
# Attempts before a message that keeps failing transiently is failed with the last reason.
WXNOTIFY_MAX_ATTEMPTS = env_int("WXNOTIFY_MAX_ATTEMPTS", 5)
# Exponential backoff with full jitter: base * 2**(attempt-1), at most the cap (seconds).
WXNOTIFY_RETRY_BASE_DELAY = float(os.environ.get("WXNOTIFY_RETRY_BASE_DELAY", "5"))
WXNOTIFY_RETRY_MAX_DELAY = float(os.environ.get("WXNOTIFY_RETRY_MAX_DELAY", "600"))
# A message stays "sending" this long at most; after that the sweeper assumes its worker died.
WXNOTIFY_SEND_LEASE_SECONDS = env_int("WXNOTIFY_SEND_LEASE_SECONDS", 180)
# The sweeper re-enqueues a due queued message only if it was not enqueued within this many seconds.
WXNOTIFY_REENQUEUE_AFTER_SECONDS = env_int("WXNOTIFY_REENQUEUE_AFTER_SECONDS", 120)
# A delivery receipt still waiting for its message after this long is marked unmatched.
WXNOTIFY_RECEIPT_MATCH_WINDOW_SECONDS = env_int("WXNOTIFY_RECEIPT_MATCH_WINDOW_SECONDS", 300)
# Messages per second for accounts without a limit of their own (0 = no limit).
WXNOTIFY_DEFAULT_SEND_RATE_LIMIT = env_int("WXNOTIFY_DEFAULT_SEND_RATE_LIMIT", 0)

# --- Operations (health and metrics) ---------------------------------------------------------------

# /healthz fails when the oldest due queued message has waited longer than this many seconds.
WXNOTIFY_HEALTH_MAX_QUEUE_LAG_SECONDS = env_int("WXNOTIFY_HEALTH_MAX_QUEUE_LAG_SECONDS", 300)
# Bearer token required by /metrics; empty leaves it open (e.g. behind a private network).
WXNOTIFY_METRICS_TOKEN = os.environ.get("WXNOTIFY_METRICS_TOKEN", "")
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

LANGUAGE_CODE = "zh-hans"
LANGUAGES = [("zh-hans", "简体中文"), ("en", "English")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = os.environ.get("DJANGO_TIME_ZONE", "Asia/Shanghai")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# --- REST framework -------------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "messaging.api.authentication.MemoizedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "messaging.api.exceptions.api_exception_handler",
    # Per-user limits of the API (messaging.api.throttles); "send" applies on top to sending requests.
    "DEFAULT_THROTTLE_RATES": {
        "burst": os.environ.get("WXNOTIFY_API_BURST_RATE", "300/s"),
        "sustained": os.environ.get("WXNOTIFY_API_SUSTAINED_RATE", "200000/h"),
        "send": os.environ.get("WXNOTIFY_API_SEND_RATE", "250/s"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "wxnotify API",
    "DESCRIPTION": "Send WeChat Official Account template messages reliably and see what happened to each one.",
    "VERSION": "1.0.0",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Tags and operation ids from the resource ("messages", "campaigns"), not from the version prefix.
    "SCHEMA_PATH_PREFIX": r"/api/v[0-9]+",
    "SERVE_INCLUDE_SCHEMA": False,
}

# --- Security when DEBUG is off -------------------------------------------------------------------

if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", default=True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    X_FRAME_OPTIONS = "DENY"

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
