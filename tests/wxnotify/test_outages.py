"""Degraded, not broken: a database or Redis outage answers 503 with Retry-After (never 500), the API throttles
fail open, and everything works again when the service is back, without a restart.

The live tests break real services, never the shared ones: a redis-server of their own on a free port, and a
throwaway PostgreSQL cluster (initdb/pg_ctl, as ``.ci/run`` starts one) serving a gunicorn of the project.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from cryptography.fernet import Fernet
from django.core.cache import caches
from django.db import IntegrityError, OperationalError, connections, transaction
from django.test import RequestFactory
from redis.exceptions import ConnectionError as RedisConnectionError
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts import binding
from accounts.models import OfficialAccount
from messaging.api import throttles
from messaging.api.authentication import MemoizedTokenAuthentication
from messaging.models import DeliveryReceipt
from messaging.services import ReceivedReceipt, record_delivery_receipts
from tests.servers import free_port
from wxnotify import outages
from wxnotify.http_errors import server_error
from wxnotify.outages import write_checking_the_connection_itself

BASE_DIR = Path(__file__).resolve().parents[2]


def wait_until(predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.0f} s")
        time.sleep(0.1)


@pytest.fixture
def api(staff_a: Any) -> APIClient:
    client = APIClient()
    token, _created = Token.objects.get_or_create(user=staff_a)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def assert_outage_json(response: Any) -> None:
    assert response.status_code == 503
    assert response["Retry-After"] == str(outages.RETRY_AFTER_SECONDS)
    body = response.json()
    assert body["status"] == 503
    assert body["code"] == "service_unavailable"
    assert body["errors"] == {}


# --- What counts as an outage ---------------------------------------------------------------------------------


def test_connection_errors_are_outages_and_bugs_are_not():
    assert outages.is_outage(OperationalError("server closed the connection unexpectedly"))
    assert outages.is_outage(RedisConnectionError("Connection refused"))
    wrapped = RuntimeError("while counting")
    wrapped.__cause__ = RedisConnectionError("Connection refused")
    assert outages.is_outage(wrapped)
    assert not outages.is_outage(IntegrityError("duplicate key"))
    assert not outages.is_outage(ValueError("bug"))
    assert not outages.is_outage(None)


def test_an_outage_is_logged_once_a_minute_per_kind(caplog, monkeypatch):
    monkeypatch.setattr(outages, "_last_logged", {})
    logger = logging.getLogger("wxnotify.test-outages")
    with caplog.at_level(logging.WARNING, logger="wxnotify.test-outages"):
        for _ in range(5):
            outages.log_outage(logger, "Redis", RedisConnectionError("Connection refused"))
        outages.log_outage(logger, "Database", OperationalError("gone"))
    assert [record.getMessage().split(" (")[0] for record in caplog.records] == [
        "Redis unavailable",
        "Database unavailable",
    ]


# --- The API -------------------------------------------------------------------------------------------------


def test_database_outage_in_an_api_view_is_503_json(api, monkeypatch):
    def unavailable(self, request):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(MemoizedTokenAuthentication, "authenticate", unavailable)
    assert_outage_json(api.get("/api/v1/messages/"))


def test_throttles_fail_open_while_the_cache_is_down(api, monkeypatch, caplog, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"burst": "1/m"}}
    calls = []

    def unavailable(windows):
        calls.append(windows)
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(throttles, "count_requests", unavailable)
    monkeypatch.setattr(outages, "_last_logged", {})
    with caplog.at_level(logging.WARNING, logger="wxnotify.messaging.api"):
        answers = [api.get("/api/v1/messages/").status_code for _ in range(3)]
    assert answers == [200, 200, 200]  # over the 1/m rate: nothing was counted
    assert len(calls) == 1  # the next requests did not wait on the failed cache again
    assert len([r for r in caplog.records if "throttle counters" in r.getMessage()]) == 1


def test_throttles_count_again_after_the_pause(api, monkeypatch, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"burst": "2/m"}}
    monkeypatch.setattr(throttles, "OUTAGE_PAUSE_SECONDS", 0.05)
    real = throttles.count_requests

    def unavailable(windows):
        monkeypatch.setattr(throttles, "count_requests", real)
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(throttles, "count_requests", unavailable)
    assert api.get("/api/v1/messages/").status_code == 200
    time.sleep(0.1)
    assert [api.get("/api/v1/messages/").status_code for _ in range(3)] == [200, 200, 429]


# --- Pages outside the API, and errors raised outside views ----------------------------------------------------


def test_database_outage_on_a_page_is_a_plain_503(client, staff_a, monkeypatch):
    client.force_login(staff_a)

    def unavailable(user):
        raise OperationalError("database is locked")

    monkeypatch.setattr(binding, "bind_targets_for", unavailable)
    response = client.get("/bind/")
    assert response.status_code == 503
    assert response["Retry-After"] == str(outages.RETRY_AFTER_SECONDS)
    assert response["Content-Type"].startswith("text/plain")
    assert b"locked" not in response.content


@pytest.mark.parametrize("path", ["/api/v1/messages/", "/admin/"])
def test_handler500_answers_an_outage_outside_views_with_503(path):
    """Django calls handler500 while handling the exception: an outage raised by a middleware is recognised."""
    request = RequestFactory().get(path)
    try:
        raise OperationalError("terminating connection due to administrator command")
    except OperationalError:
        response = server_error(request)
    assert response.status_code == 503
    assert response["Retry-After"] == str(outages.RETRY_AFTER_SECONDS)


def test_handler500_still_answers_500_for_bugs():
    request = RequestFactory().get("/api/v1/messages/")
    try:
        raise ValueError("a bug")
    except ValueError:
        response = server_error(request)
    assert response.status_code == 500


# --- A real Redis that stops and comes back ---------------------------------------------------------------------


class ThrowawayRedis:
    """A redis-server of this test alone on a free port, stopped and started at will (same port every time)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        wait_until(lambda: self._answers(client), what="redis-server answering")

    @staticmethod
    def _answers(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def throwaway_redis() -> Iterator[ThrowawayRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = ThrowawayRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_api_keeps_answering_while_redis_is_down_and_limits_again_when_it_returns(
    api, throwaway_redis, settings, monkeypatch
):
    redis_cache = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": throwaway_redis.url,
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
    }
    settings.CACHES = {**settings.CACHES, "default": redis_cache, "throttles": redis_cache}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"burst": "3/m"}}
    monkeypatch.setattr(throttles, "OUTAGE_PAUSE_SECONDS", 0.2)
    assert [api.get("/api/v1/messages/").status_code for _ in range(4)] == [200, 200, 200, 429]

    throwaway_redis.stop()
    answers = [api.get("/api/v1/messages/").status_code for _ in range(5)]
    assert answers == [200] * 5  # failing open: no 500, no 429 (nothing can be counted)

    throwaway_redis.start()  # an empty Redis on the same port: counting starts over
    time.sleep(0.3)
    assert [api.get("/api/v1/messages/").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert caches["default"].get("absent") is None  # the same cache object talks to the new server


# --- A real PostgreSQL that restarts -----------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return candidates[-1].parent if candidates else None


class ThrowawayPostgres:
    """A PostgreSQL cluster of this test alone (trust auth, no fsync) in a temporary directory."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="wxnotify-test-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *command: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True)

    def init(self) -> None:
        self._as_postgres(
            str(self.bin_dir / "initdb"), "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres", "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.dir} -c fsync=off"
        self._as_postgres(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w", "-o",
            options, "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._as_postgres(str(self.bin_dir / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        if (self.dir / "data" / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    bin_dir = postgres_bin()
    if bin_dir is None or shutil.which("runuser") is None or os.geteuid() != 0:
        pytest.skip("needs PostgreSQL's server binaries (/usr/lib/postgresql/*/bin) and root to run them as postgres")
    cluster = ThrowawayPostgres(bin_dir)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def web_on(throwaway_postgres: ThrowawayPostgres) -> Iterator[str]:
    """gunicorn as in production (gunicorn.conf.py, persistent connections with health checks) on that cluster."""
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "wxnotify.settings",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "outage-test-" + "x" * 50,
        "WXNOTIFY_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "WXNOTIFY_SSL_REDIRECT": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": throwaway_postgres.url,
        "REDIS_URL": "",
        "WXNOTIFY_LOG_LEVEL": "ERROR",
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity=0"], cwd=BASE_DIR, env=env, check=True)
    command = [sys.executable, "-m", "gunicorn", "wxnotify.wsgi:application", "--config", "gunicorn.conf.py"]
    command += ["--workers", "1", "--threads", "2", "--bind", f"127.0.0.1:{port}", "--log-level", "error"]
    server = subprocess.Popen(command, cwd=BASE_DIR, env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(base_url), timeout=30, what="gunicorn answering")
        yield base_url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _up(base_url: str) -> bool:
    try:
        requests.get(f"{base_url}/wechat/callback/wx0000000000000000/", timeout=2)
        return True
    except requests.RequestException:
        return False


@pytest.mark.slow
def test_web_process_answers_503_while_postgres_is_down_and_reconnects_by_itself(throwaway_postgres, web_on):
    callback = f"{web_on}/wechat/callback/wx0000000000000000/"  # looks the account up: touches the database
    api = f"{web_on}/api/v1/messages/"  # looks the token up
    bad_token = {"Authorization": "Token " + "0" * 40}
    assert requests.get(callback, timeout=5).status_code == 404
    assert requests.get(api, headers=bad_token, timeout=5).status_code == 401

    # Restarted between two requests: the worker's persistent connection is dead, the health check notices.
    throwaway_postgres.stop()
    throwaway_postgres.start()
    assert requests.get(callback, timeout=5).status_code == 404
    assert requests.get(api, headers=bad_token, timeout=5).status_code == 401

    throwaway_postgres.stop()
    down = [requests.get(callback, timeout=10), requests.get(api, headers=bad_token, timeout=10)]
    assert [response.status_code for response in down] == [503, 503]
    assert all(response.headers.get("Retry-After") for response in down)
    assert down[1].json()["code"] == "service_unavailable"

    throwaway_postgres.start()
    assert requests.get(callback, timeout=5).status_code == 404
    assert requests.get(api, headers=bad_token, timeout=5).status_code == 401


# --- A repeatable write as its own connection check ---------------------------------------------------------------


class CountedWrite:
    """A write that fails ``failures`` times with ``error`` before it answers how many times it ran."""

    def __init__(self, failures: int = 0, error: Exception | None = None) -> None:
        self.calls = 0
        self.failures = failures
        self.error = error or OperationalError("server closed the connection unexpectedly")

    def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.calls


@pytest.fixture
def request_connection(transactional_db, monkeypatch):
    """The default connection as a new request finds it: open, health checks on, not checked yet."""
    connection = connections["default"]
    connection.ensure_connection()
    monkeypatch.setattr(connection, "health_check_enabled", True)
    monkeypatch.setattr(connection, "health_check_done", False)
    checks: list[bool] = []
    real = connection.is_usable
    monkeypatch.setattr(connection, "is_usable", lambda: checks.append(True) or real())
    return connection, checks


def test_a_repeatable_write_on_a_live_connection_sends_no_health_check(request_connection):
    connection, checks = request_connection
    write = CountedWrite()
    assert write_checking_the_connection_itself(write, "default") == 1
    assert checks == []  # no SELECT 1: the write was the check
    assert connection.health_check_done


def test_a_write_failing_on_a_dead_connection_runs_once_more_on_a_new_one(request_connection, monkeypatch):
    connection, _checks = request_connection
    monkeypatch.setattr(connection, "is_usable", lambda: False)
    closed: list[bool] = []
    real_close = connection.close
    monkeypatch.setattr(connection, "close", lambda: closed.append(True) or real_close())
    write = CountedWrite(failures=1)
    assert write_checking_the_connection_itself(write, "default") == 2
    assert closed == [True]


def test_a_write_failing_on_a_live_connection_or_twice_is_raised(request_connection):
    with pytest.raises(OperationalError):
        write_checking_the_connection_itself(CountedWrite(failures=1), "default")  # the connection still answers
    connection, _checks = request_connection
    connection.health_check_done = False
    connection.is_usable = lambda: False
    write = CountedWrite(failures=2)
    with pytest.raises(OperationalError):
        write_checking_the_connection_itself(write, "default")
    assert write.calls == 2


def test_a_write_inside_a_transaction_is_not_run_again(request_connection):
    connection, _checks = request_connection
    connection.is_usable = lambda: False
    write = CountedWrite(failures=1)
    with pytest.raises(OperationalError), transaction.atomic():
        connection.health_check_done = False
        write_checking_the_connection_itself(write, "default")
    assert write.calls == 1


@pytest.mark.skipif(connections["default"].vendor != "postgresql", reason="a server that ends a backend")
def test_a_receipt_insert_survives_a_backend_ended_by_the_server(request_connection):
    """PostgreSQL ends this connection's backend (as on a restart) between two requests: the next receipt INSERT
    fails on it, reconnects and is stored."""
    connection, checks = request_connection
    account = OfficialAccount.objects.create(appid="wx0000000000000dea", name="Dead connection", app_secret="s")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    with connections["default"].get_new_connection(connections["default"].get_connection_params()) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    connection.health_check_done = False
    assert record_delivery_receipts([ReceivedReceipt(account.pk, 8_300_001, "success")]) == 1
    assert checks  # asked once the INSERT failed, and answered "dead" (on a live one it is never asked, above)
    assert DeliveryReceipt.objects.filter(account=account, msgid=8_300_001).exists()
