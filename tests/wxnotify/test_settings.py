"""Settings are read from the environment: each case imports ``wxnotify.settings`` in a fresh interpreter.

A subprocess is the only honest way to test this: the settings module runs its environment logic once
at import, and the test process has already imported it with the test environment.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.test import Client

from tests.factories import run_manage_py
from wxnotify.encryption import derived_key
from wxnotify.wechat import PRODUCTION_API_BASE

BASE_DIR = Path(__file__).resolve().parents[2]

# Every test here reads the settings in a fresh interpreter.
pytestmark = pytest.mark.slow

DUMP_SETTINGS = """
import json
from django.conf import settings as s
print(json.dumps({
    name: getattr(s, name)
    for name in (
        "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "DATABASES", "CACHES", "Q_CLUSTER", "WECHAT_API_BASE",
        "WXNOTIFY_ENCRYPTION_KEYS", "SECURE_SSL_REDIRECT", "SECURE_REDIRECT_EXEMPT", "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD", "SECURE_PROXY_SSL_HEADER", "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE", "SILENCED_SYSTEM_CHECKS",
    )
}, default=str))
"""

# What a production start needs besides the environment a test names: a key of its own and a long secret key.
PRODUCTION_SECRETS = {
    "DJANGO_SECRET_KEY": "a-long-random-production-key-0123456789-abcdefghijklmnopqrstuvwxyz",
    "WXNOTIFY_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
}

# Opens the configured default database through Django and reports what SQLite actually runs with.
SQLITE_PRAGMAS = """
import json
import django
django.setup()
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute("PRAGMA journal_mode")
    journal_mode = cursor.fetchone()[0]
    cursor.execute("PRAGMA busy_timeout")
    busy_timeout = cursor.fetchone()[0]
name = str(connection.settings_dict["NAME"])
print(json.dumps({"journal_mode": journal_mode, "busy_timeout": busy_timeout, "name": name}))
"""


def run_python(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` with only the given variables set (plus what an interpreter needs)."""
    clean_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(BASE_DIR),
        "WXNOTIFY_VAR_DIR": str(tmp_path / "var"),
        "DJANGO_SETTINGS_MODULE": "wxnotify.settings",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=BASE_DIR,
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def load_settings(tmp_path: Path, **env: str) -> dict:
    result = run_python(DUMP_SETTINGS, tmp_path, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_refuses_default_secret_key_when_debug_is_off(tmp_path):
    result = run_python(DUMP_SETTINGS, tmp_path)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "DJANGO_SECRET_KEY is not set" in result.stderr
    assert result.stdout == ""


def test_manage_py_refuses_to_start_with_default_secret_key(tmp_path):
    result = run_manage_py(tmp_path, "check")

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in result.stderr


def test_debug_on_allows_the_development_key_and_local_hosts(tmp_path):
    loaded = load_settings(tmp_path, DJANGO_DEBUG="1")

    assert loaded["DEBUG"] is True
    assert loaded["SECRET_KEY"].startswith("django-insecure-")
    assert loaded["ALLOWED_HOSTS"] == ["127.0.0.1", "localhost", "[::1]"]


def test_production_key_and_hosts_come_from_the_environment(tmp_path):
    loaded = load_settings(tmp_path, **PRODUCTION_SECRETS, DJANGO_ALLOWED_HOSTS="a.example, b.example")

    assert loaded["DEBUG"] is False
    assert loaded["SECRET_KEY"] == PRODUCTION_SECRETS["DJANGO_SECRET_KEY"]
    assert loaded["WXNOTIFY_ENCRYPTION_KEYS"] == [PRODUCTION_SECRETS["WXNOTIFY_ENCRYPTION_KEYS"]]
    assert loaded["ALLOWED_HOSTS"] == ["a.example", "b.example"]


def test_the_insecure_key_escape_hatch_is_gone(tmp_path):
    """WXNOTIFY_ALLOW_INSECURE_KEY once let production run on the public development key; it no longer does."""
    result = run_python(DUMP_SETTINGS, tmp_path, WXNOTIFY_ALLOW_INSECURE_KEY="1")

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in result.stderr


# --- Encryption keys ---------------------------------------------------------------------------------------------


def test_production_refuses_to_start_without_encryption_keys_and_says_how_to_make_one(tmp_path):
    result = run_python(DUMP_SETTINGS, tmp_path, DJANGO_SECRET_KEY=PRODUCTION_SECRETS["DJANGO_SECRET_KEY"])

    assert result.returncode != 0
    assert "ImproperlyConfigured: WXNOTIFY_ENCRYPTION_KEYS is not set" in result.stderr
    assert "Fernet.generate_key()" in result.stderr
    assert "docs/security.md" in result.stderr
    # The command the message gives really prints a key the settings accept.
    command = re.search(r"python -c '([^']+)'", result.stderr).group(1)
    generated = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True, check=True).stdout
    loaded = load_settings(tmp_path, **{**PRODUCTION_SECRETS, "WXNOTIFY_ENCRYPTION_KEYS": generated.strip()})
    assert loaded["WXNOTIFY_ENCRYPTION_KEYS"] == [generated.strip()]


def test_a_malformed_encryption_key_is_named_by_position_never_shown(tmp_path):
    good, bad = Fernet.generate_key().decode(), "not-a-fernet-key-but-maybe-a-password"
    result = run_python(DUMP_SETTINGS, tmp_path, DJANGO_DEBUG="1", WXNOTIFY_ENCRYPTION_KEYS=f"{good},{bad}")

    assert result.returncode != 0
    assert "WXNOTIFY_ENCRYPTION_KEYS: key 2 of 2 is not a Fernet key" in result.stderr
    assert bad not in result.stderr and good not in result.stderr


def test_debug_derives_a_key_from_the_secret_key_only_when_none_is_given(tmp_path):
    derived = load_settings(tmp_path, DJANGO_DEBUG="1", DJANGO_SECRET_KEY="debug-secret-one")
    other = load_settings(tmp_path, DJANGO_DEBUG="1", DJANGO_SECRET_KEY="debug-secret-two")
    explicit = load_settings(
        tmp_path,
        DJANGO_DEBUG="1",
        DJANGO_SECRET_KEY="debug-secret-one",
        WXNOTIFY_ENCRYPTION_KEYS=PRODUCTION_SECRETS["WXNOTIFY_ENCRYPTION_KEYS"],
    )

    assert derived["WXNOTIFY_ENCRYPTION_KEYS"] == [derived_key("debug-secret-one")]
    assert other["WXNOTIFY_ENCRYPTION_KEYS"] == [derived_key("debug-secret-two")] != derived["WXNOTIFY_ENCRYPTION_KEYS"]
    assert explicit["WXNOTIFY_ENCRYPTION_KEYS"] == [PRODUCTION_SECRETS["WXNOTIFY_ENCRYPTION_KEYS"]]


# --- HTTPS, HSTS and the proxy -------------------------------------------------------------------------------------


def test_production_redirects_to_https_with_hsts_by_default(tmp_path):
    loaded = load_settings(tmp_path, **PRODUCTION_SECRETS)

    assert loaded["SECURE_SSL_REDIRECT"] is True
    assert loaded["SECURE_REDIRECT_EXEMPT"] == [r"^healthz$", r"^metrics$"]
    assert loaded["SECURE_HSTS_SECONDS"] == 31_536_000
    assert loaded["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert loaded["SECURE_HSTS_PRELOAD"] is False
    assert loaded["SESSION_COOKIE_SECURE"] is True and loaded["CSRF_COOKIE_SECURE"] is True
    # Not behind a proxy: a client's X-Forwarded-Proto must not make plain HTTP look like HTTPS.
    assert loaded["SECURE_PROXY_SSL_HEADER"] is None


def test_the_proxy_header_is_trusted_only_behind_a_proxy(tmp_path):
    behind = load_settings(tmp_path, **PRODUCTION_SECRETS, WXNOTIFY_BEHIND_PROXY="1")
    not_behind = load_settings(tmp_path, **PRODUCTION_SECRETS, WXNOTIFY_BEHIND_PROXY="0")

    assert behind["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert not_behind["SECURE_PROXY_SSL_HEADER"] is None


def test_the_redirect_and_hsts_can_be_switched_off_for_a_proxy_that_does_them(tmp_path):
    loaded = load_settings(tmp_path, **PRODUCTION_SECRETS, WXNOTIFY_SSL_REDIRECT="0", WXNOTIFY_HSTS_SECONDS="0")

    assert loaded["SECURE_SSL_REDIRECT"] is False
    assert loaded["SECURE_HSTS_SECONDS"] == 0
    assert "security.W008" in loaded["SILENCED_SYSTEM_CHECKS"]


def test_debug_has_no_redirect_and_no_hsts(tmp_path):
    loaded = load_settings(tmp_path, DJANGO_DEBUG="1")

    assert loaded["SECURE_SSL_REDIRECT"] is False
    assert loaded["SECURE_HSTS_SECONDS"] == 0


def readme_production_environment() -> dict[str, str]:
    """The production environment README.md documents, with its ``<placeholders>`` filled in as an operator would."""
    readme = (BASE_DIR / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- production-environment[^>]*-->\s*```bash\n(.*?)```", readme, re.S).group(1)
    fillings = {
        "<50 or more random characters>": secrets.token_urlsafe(50),
        "<a Fernet key of its own>": Fernet.generate_key().decode(),
        "<password>": secrets.token_urlsafe(16),
    }
    environment = {}
    for line in block.splitlines():
        name, _, value = line.partition("=")
        for placeholder, filling in fillings.items():
            value = value.replace(placeholder, filling)
        assert "<" not in value, f"a placeholder of README's production environment has no filling: {line}"
        environment[name] = value
    return environment


def test_check_deploy_is_clean_with_the_production_environment_of_the_readme(tmp_path):
    environment = readme_production_environment()
    assert {"DJANGO_SECRET_KEY", "WXNOTIFY_ENCRYPTION_KEYS", "DJANGO_ALLOWED_HOSTS"} <= environment.keys()

    result = run_manage_py(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **environment)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_database_url_selects_postgresql_with_persistent_connections(tmp_path):
    loaded = load_settings(tmp_path, DJANGO_DEBUG="1", DATABASE_URL="postgres://app:pw@db.internal:6543/wxnotify")

    database = loaded["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["HOST"], database["PORT"], database["NAME"], database["USER"]) == (
        "db.internal",
        6543,
        "wxnotify",
        "app",
    )
    assert database["CONN_MAX_AGE"] == 600
    assert database["CONN_HEALTH_CHECKS"] is True


def test_without_database_url_sqlite_lives_in_the_var_dir(tmp_path):
    loaded = load_settings(tmp_path, DJANGO_DEBUG="1")

    database = loaded["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.sqlite3"
    assert Path(database["NAME"]) == tmp_path / "var" / "wxnotify.sqlite3"
    assert database["CONN_MAX_AGE"] == 600
    assert database["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_sqlite_connections_run_in_wal_mode_with_a_busy_timeout(tmp_path):
    result = run_python(SQLITE_PRAGMAS, tmp_path, DJANGO_DEBUG="1")

    assert result.returncode == 0, result.stderr
    pragmas = json.loads(result.stdout)
    assert pragmas["journal_mode"] == "wal"
    assert pragmas["busy_timeout"] == 30_000
    assert Path(pragmas["name"]) == tmp_path / "var" / "wxnotify.sqlite3"
    assert (tmp_path / "var" / "wxnotify.sqlite3").exists()


def test_redis_url_selects_django_redis_cache_and_redis_broker(tmp_path):
    loaded = load_settings(tmp_path, DJANGO_DEBUG="1", REDIS_URL="redis://cache.internal:6380/3")

    cache = loaded["CACHES"]["default"]
    assert cache["BACKEND"] == "django_redis.cache.RedisCache"
    assert cache["LOCATION"] == "redis://cache.internal:6380/3"
    assert cache["KEY_PREFIX"] == "wxnotify"
    assert (cache["OPTIONS"]["SOCKET_CONNECT_TIMEOUT"], cache["OPTIONS"]["SOCKET_TIMEOUT"]) == (2, 5)
    assert loaded["Q_CLUSTER"]["django_redis"] == "default"
    assert "orm" not in loaded["Q_CLUSTER"]


def test_without_redis_url_the_database_is_cache_and_broker(tmp_path):
    loaded = load_settings(tmp_path, DJANGO_DEBUG="1")

    cache = loaded["CACHES"]["default"]
    assert cache["BACKEND"] == "django.core.cache.backends.db.DatabaseCache"
    assert cache["LOCATION"] == "wxnotify_cache"
    assert loaded["Q_CLUSTER"]["orm"] == "default"
    assert "django_redis" not in loaded["Q_CLUSTER"]


def test_wechat_api_base_defaults_to_wechat_and_can_point_at_the_sandbox(tmp_path):
    assert load_settings(tmp_path, DJANGO_DEBUG="1")["WECHAT_API_BASE"] == PRODUCTION_API_BASE
    pointed = load_settings(tmp_path, DJANGO_DEBUG="1", WECHAT_API_BASE="http://127.0.0.1:9100/")
    assert pointed["WECHAT_API_BASE"] == "http://127.0.0.1:9100"


@pytest.mark.parametrize("name", ["WXNOTIFY_Q_WORKERS", "WECHAT_HTTP_POOL_SIZE", "WECHAT_TOKEN_REFRESH_MARGIN"])
def test_a_malformed_integer_names_the_variable(tmp_path, name):
    result = run_python(DUMP_SETTINGS, tmp_path, DJANGO_DEBUG="1", **{name: "lots"})

    assert result.returncode != 0
    assert f"{name} must be an integer, got 'lots'" in result.stderr


@pytest.mark.django_db
def test_the_redirect_spares_the_per_host_probes(settings, tmp_path):
    """What the production values do to requests (applied here in-process: the test settings run with DEBUG on)."""
    production = load_settings(tmp_path, **PRODUCTION_SECRETS)
    settings.SECURE_SSL_REDIRECT = production["SECURE_SSL_REDIRECT"]
    settings.SECURE_REDIRECT_EXEMPT = production["SECURE_REDIRECT_EXEMPT"]
    settings.SECURE_HSTS_SECONDS = production["SECURE_HSTS_SECONDS"]
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = production["SECURE_HSTS_INCLUDE_SUBDOMAINS"]
    client = Client()

    redirected = client.get("/console/login/")
    assert redirected.status_code == 301
    assert redirected["Location"] == "https://testserver/console/login/"
    assert client.get("/healthz").status_code != 301
    assert client.get("/metrics").status_code != 301
    assert "Strict-Transport-Security" not in redirected  # sent over HTTPS only, as browsers require
    secure = client.get("/console/login/", secure=True)
    assert secure.status_code == 200
    assert secure["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
