"""Settings are read from the environment: each case imports ``wxnotify.settings`` in a fresh interpreter.

A subprocess is the only honest way to test this: the settings module runs its environment logic once
at import, and the test process has already imported it with the test environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wxnotify.wechat import PRODUCTION_API_BASE

BASE_DIR = Path(__file__).resolve().parent.parent

DUMP_SETTINGS = """
import json
import wxnotify.settings as s
print(json.dumps({
    name: getattr(s, name)
    for name in ("DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "DATABASES", "CACHES", "Q_CLUSTER", "WECHAT_API_BASE")
}, default=str))
"""

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
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "WXNOTIFY_VAR_DIR": str(tmp_path / "var"),
    }
    result = subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), "check"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in result.stderr


def test_debug_on_allows_the_development_key_and_local_hosts(tmp_path):
    loaded = load_settings(tmp_path, DJANGO_DEBUG="1")

    assert loaded["DEBUG"] is True
    assert loaded["SECRET_KEY"].startswith("django-insecure-")
    assert loaded["ALLOWED_HOSTS"] == ["127.0.0.1", "localhost", "[::1]"]


def test_production_key_and_hosts_come_from_the_environment(tmp_path):
    loaded = load_settings(
        tmp_path,
        DJANGO_SECRET_KEY="a-long-random-production-key-0123456789",
        DJANGO_ALLOWED_HOSTS="a.example, b.example",
    )

    assert loaded["DEBUG"] is False
    assert loaded["SECRET_KEY"] == "a-long-random-production-key-0123456789"
    assert loaded["ALLOWED_HOSTS"] == ["a.example", "b.example"]


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
