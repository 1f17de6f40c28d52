"""AccessTokenManager against the sandbox: shared cache, memo, margin, compare-and-delete, force fallback and
single-flight (the access_token requests WeChat got are read from the sandbox's request log)."""

import base64
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager

import pytest
from cryptography.fernet import Fernet
from django.conf import settings as django_settings
from django.core.cache import cache
from django.db import connection, connections
from django_q.models import Schedule

from accounts.apps import TOKEN_REFRESH_SCHEDULE_NAME, ensure_token_refresh_schedule
from accounts.clients import wechat_client_for
from accounts.models import OfficialAccount
from accounts.tasks import refresh_access_tokens
from wxnotify import encryption
from wxnotify.locks import LockUnavailableError, distributed_lock
from wxnotify.log import MASK, redact
from wxnotify.wechat import tokens as tokens_module
from wxnotify.wechat.client import AccessToken, Credentials, WeChatClient
from wxnotify.wechat.errors import TransientError
from wxnotify.wechat.tokens import (
    AccessTokenManager,
    cache_key,
    default_token_manager,
    fetch_counter,
    lock_name,
    token_fetched,
)

SECRET = "app-secret-0123456789abcdef"


STABLE_TOKEN = "/cgi-bin/stable_token"


@pytest.fixture
def appid(wechat_sandbox):
    """A new account, known to the sandbox with ``SECRET``."""
    value = "wx" + uuid.uuid4().hex[:16]
    wechat_sandbox.add_account(appid=value, secret=SECRET)
    yield value
    AccessTokenManager().forget(value)


def token_requests(sandbox) -> list[dict]:
    """Every access_token request the sandbox received in this test, oldest first."""
    found = []
    for request in sandbox.requests():
        if request.path == "/cgi-bin/token":
            found.append({"appid": request.query.get("appid"), "force_refresh": False, "path": request.path})
        elif request.path == STABLE_TOKEN:
            body = request.json()
            found.append({"appid": body["appid"], "force_refresh": bool(body["force_refresh"]), "path": request.path})
    return found


def fetch_count(sandbox, appid: str) -> int:
    return sum(1 for fetch in token_requests(sandbox) if fetch["appid"] == appid)


def make_client(appid, base, manager, endpoint="stable"):
    return WeChatClient(Credentials(appid, SECRET, endpoint), token_manager=manager, api_base=base)


def store(appid: str, value: str, expires_in: float, fetched_ago: float = 3600) -> None:
    now = time.time()
    entry = {"sealed": encryption.encrypt(value), "expires_at": now + expires_in, "fetched_at": now - fetched_ago}
    cache.set(cache_key(appid), entry, timeout=3600)


def test_token_is_fetched_once_and_shared_through_the_cache(db, wechat_sandbox, appid):
    client = make_client(appid, wechat_sandbox.base_url, AccessTokenManager())

    first = client.token_manager.get_token(client)
    other_process = AccessTokenManager()

    assert other_process.get_token(make_client(appid, wechat_sandbox.base_url, other_process)) == first
    assert fetch_count(wechat_sandbox, appid) == 1
    stored = cache.get(cache_key(appid))
    assert encryption.decrypt(stored["sealed"]) == first
    assert stored["expires_at"] == pytest.approx(time.time() + 7200, abs=5)


def test_token_within_the_margin_is_replaced(db, wechat_sandbox, appid, settings):
    settings.WECHAT_TOKEN_REFRESH_MARGIN = 300
    manager = AccessTokenManager()
    store(appid, "OLD-TOKEN-close-to-expiry", expires_in=200)

    token = manager.get_token(make_client(appid, wechat_sandbox.base_url, manager))

    assert token != "OLD-TOKEN-close-to-expiry"
    assert fetch_count(wechat_sandbox, appid) == 1


def test_token_outside_the_margin_is_reused(db, wechat_sandbox, appid, settings):
    settings.WECHAT_TOKEN_REFRESH_MARGIN = 300
    manager = AccessTokenManager()
    store(appid, "STILL-GOOD-TOKEN-value", expires_in=1000)

    assert manager.get_token(make_client(appid, wechat_sandbox.base_url, manager)) == "STILL-GOOD-TOKEN-value"
    assert fetch_count(wechat_sandbox, appid) == 0


def test_a_token_just_fetched_is_not_fetched_again_even_inside_the_margin(db, wechat_sandbox, appid, settings):
    settings.WECHAT_TOKEN_REFRESH_MARGIN = 600
    wechat_sandbox.set_faults(token_ttl=400)  # stable normal mode: WeChat has not rotated it yet
    manager = AccessTokenManager()
    client = make_client(appid, wechat_sandbox.base_url, manager)
    tokens = {manager.get_token(client) for _ in range(50)}
    other_process = AccessTokenManager()
    tokens.add(other_process.get_token(make_client(appid, wechat_sandbox.base_url, other_process)))

    assert len(tokens) == 1
    assert fetch_count(wechat_sandbox, appid) == 1


def test_memo_spares_the_cache_on_the_hot_path(db, wechat_sandbox, appid, monkeypatch):
    manager = AccessTokenManager()
    client = make_client(appid, wechat_sandbox.base_url, manager)
    token = manager.get_token(client)
    reads = []
    monkeypatch.setattr(manager, "peek", lambda appid: reads.append(appid))

    assert all(manager.get_token(client) == token for _ in range(100))
    assert reads == []


def test_memo_is_reread_from_the_cache_after_its_ttl(db, wechat_sandbox, appid, monkeypatch):
    monkeypatch.setattr(tokens_module, "MEMO_TTL", 0.0)
    manager = AccessTokenManager()
    client = make_client(appid, wechat_sandbox.base_url, manager)
    manager.get_token(client)
    store(appid, "REFRESHED-ELSEWHERE-token", expires_in=7000)

    assert manager.get_token(client) == "REFRESHED-ELSEWHERE-token"
    assert fetch_count(wechat_sandbox, appid) == 1


def test_refresh_reuses_a_token_someone_else_already_refreshed(db, wechat_sandbox, appid):
    manager = AccessTokenManager()
    client = make_client(appid, wechat_sandbox.base_url, manager)
    store(appid, "NEWER-TOKEN-from-another-host", expires_in=7000)

    assert manager.refresh(client, failed_token="FAILED-TOKEN-value") == "NEWER-TOKEN-from-another-host"
    assert fetch_count(wechat_sandbox, appid) == 0


def test_refresh_of_the_cached_token_fetches_in_normal_mode(db, wechat_sandbox, appid):
    manager = AccessTokenManager()
    client = make_client(appid, wechat_sandbox.base_url, manager, endpoint="classic")
    failed = manager.get_token(client)

    new = manager.refresh(client, failed_token=failed)

    assert new != failed
    assert manager.get_token(client) == new
    assert encryption.decrypt(cache.get(cache_key(appid))["sealed"]) == new
    assert [fetch["path"] for fetch in token_requests(wechat_sandbox)] == ["/cgi-bin/token", "/cgi-bin/token"]


def test_stable_normal_mode_falls_back_to_force_refresh(db, wechat_sandbox, appid):
    manager = AccessTokenManager()
    client = make_client(appid, wechat_sandbox.base_url, manager)
    failed = manager.get_token(client)  # normal mode would hand this very token out again

    new = manager.refresh(client, failed_token=failed)

    assert new != failed
    assert [fetch["force_refresh"] for fetch in token_requests(wechat_sandbox)] == [False, False, True]


def test_force_refresh_is_not_repeated_within_30_seconds(db, wechat_sandbox, appid):
    manager = AccessTokenManager()
    client = make_client(appid, wechat_sandbox.base_url, manager)
    failed = manager.get_token(client)
    # From now on WeChat ignores a force refresh and keeps handing out the same token.
    same = json.dumps({"access_token": failed, "expires_in": 7200})
    wechat_sandbox.add_api_fault(STABLE_TOKEN, body=same, times=None)
    manager.refresh(client, failed_token=failed)

    with pytest.raises(TransientError) as excinfo:
        manager.refresh(client, failed_token=failed)

    assert excinfo.value.retry_after == 30
    assert [fetch["force_refresh"] for fetch in token_requests(wechat_sandbox)] == [False, False, True, False]


def test_refresh_without_a_failed_token_always_fetches(db, wechat_sandbox, appid):
    manager = AccessTokenManager()
    client = make_client(appid, wechat_sandbox.base_url, manager, endpoint="classic")
    first = manager.get_token(client)

    assert manager.refresh(client) != first
    assert fetch_count(wechat_sandbox, appid) == 2


def test_refresh_if_expiring(db, wechat_sandbox, appid):
    manager = AccessTokenManager()
    client = make_client(appid, wechat_sandbox.base_url, manager, endpoint="classic")
    store(appid, "GOOD-FOR-A-WHILE-token", expires_in=2000)

    assert manager.refresh_if_expiring(client, 900) is False
    assert fetch_count(wechat_sandbox, appid) == 0

    store(appid, "EXPIRING-SOON-token-value", expires_in=600)
    assert manager.refresh_if_expiring(client, 900) is True
    assert fetch_count(wechat_sandbox, appid) == 1
    assert manager.refresh_if_expiring(client, 900) is False
    assert fetch_count(wechat_sandbox, appid) == 1


def test_peek_and_forget(db, wechat_sandbox, appid):
    manager = AccessTokenManager()
    client = make_client(appid, wechat_sandbox.base_url, manager)
    assert manager.peek(appid) is None
    value = manager.get_token(client)

    peeked = manager.peek(appid)
    assert isinstance(peeked, AccessToken)
    assert peeked.value == value
    assert peeked.fetched_at <= time.time() < peeked.expires_at
    assert value not in repr(peeked)

    manager.forget(appid)
    assert manager.peek(appid) is None
    manager.get_token(client)
    assert fetch_count(wechat_sandbox, appid) == 2


def test_fetches_are_counted_and_signalled(db, wechat_sandbox, appid):
    manager = AccessTokenManager()
    received = []

    def receiver(sender, **kwargs):
        received.append(kwargs)

    token_fetched.connect(receiver)
    try:
        manager.get_token(make_client(appid, wechat_sandbox.base_url, manager))
    finally:
        token_fetched.disconnect(receiver)

    assert fetch_counter.get(appid) == 1
    assert [(item["appid"], item["force_refresh"], item["token_endpoint"]) for item in received] == [
        (appid, False, "stable")
    ]


def test_default_manager_is_process_wide():
    assert default_token_manager() is default_token_manager()


def test_lock_wait_timeout_without_a_token_is_transient(transactional_db, wechat_sandbox, appid, monkeypatch):
    monkeypatch.setattr(tokens_module, "LOCK_BLOCKING_TIMEOUT", 0.2)
    manager = AccessTokenManager()
    with distributed_lock(lock_name(appid), timeout=30, blocking_timeout=1) as held:
        assert held
        with pytest.raises(TransientError, match="timed out"):
            manager.get_token(make_client(appid, wechat_sandbox.base_url, manager))
    assert fetch_count(wechat_sandbox, appid) == 0


def test_unreachable_lock_backend_fetches_unlocked(db, wechat_sandbox, appid, monkeypatch):
    @contextmanager
    def redis_down(name, *, timeout, blocking_timeout):
        raise LockUnavailableError(name)
        yield

    monkeypatch.setattr(tokens_module, "distributed_lock", redis_down)
    manager = AccessTokenManager()

    assert manager.get_token(make_client(appid, wechat_sandbox.base_url, manager))
    assert fetch_count(wechat_sandbox, appid) == 1


def test_single_flight_across_32_threads(transactional_db, wechat_sandbox, appid):
    wechat_sandbox.add_api_fault(STABLE_TOKEN, delay_ms=500, times=None)  # keeps the other threads waiting
    manager = AccessTokenManager()
    client = make_client(appid, wechat_sandbox.base_url, manager)
    barrier = threading.Barrier(32)
    results, errors = [], []

    def worker():
        try:
            barrier.wait()
            results.append(manager.get_token(client))
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(results) == 32
    assert len(set(results)) == 1
    assert fetch_count(wechat_sandbox, appid) == 1


PROCESS_SCRIPT = """
import json, os, sys, threading
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
from django.conf import settings
settings.DATABASES["default"]["NAME"] = os.environ["WXNOTIFY_TEST_DB_NAME"]
import django
django.setup()
from django.db import connections
from wxnotify.wechat.client import Credentials, WeChatClient
from wxnotify.wechat.tokens import default_token_manager

appid, base, thread_count = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = WeChatClient(Credentials(appid, "secret-of-the-multiprocess-test"), api_base=base)
manager = default_token_manager()
go = threading.Event()
results, errors = [], []

def worker():
    go.wait()
    try:
        results.append(manager.get_token(client))
    except Exception as exc:
        errors.append(repr(exc))
    finally:
        connections.close_all()

threads = [threading.Thread(target=worker) for _ in range(thread_count)]
for thread in threads:
    thread.start()
print("ready", flush=True)
sys.stdin.readline()
go.set()
for thread in threads:
    thread.join()
print(json.dumps({"tokens": sorted(set(results)), "count": len(results), "errors": errors}), flush=True)
"""


@pytest.mark.slow
def test_single_flight_across_processes(transactional_db, wechat_sandbox, appid):
    process_count, thread_count = 3, 16
    wechat_sandbox.update_account(appid, secret="secret-of-the-multiprocess-test")  # the processes' AppSecret
    wechat_sandbox.add_api_fault(STABLE_TOKEN, delay_ms=500, times=None)  # keeps the other callers waiting
    env = {**os.environ, "WXNOTIFY_TEST_DB_NAME": str(connection.settings_dict["NAME"])}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", PROCESS_SCRIPT, appid, wechat_sandbox.base_url, str(thread_count)],
            cwd=django_settings.BASE_DIR,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(process_count)
    ]
    try:
        for process in processes:
            assert process.stdout.readline().strip() == "ready"
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        reports = [json.loads(process.communicate(timeout=120)[0].strip().splitlines()[-1]) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()

    assert [report["errors"] for report in reports] == [[]] * process_count
    assert [report["count"] for report in reports] == [thread_count] * process_count
    assert len({token for report in reports for token in report["tokens"]}) == 1
    assert fetch_count(wechat_sandbox, appid) == 1


def test_refresh_schedule_exists_after_migrate_and_stays_single(db):
    schedule = Schedule.objects.get(name=TOKEN_REFRESH_SCHEDULE_NAME)
    assert schedule.func == "accounts.tasks.refresh_access_tokens"
    assert schedule.schedule_type == Schedule.MINUTES
    assert schedule.minutes == 1

    ensure_token_refresh_schedule()
    ensure_token_refresh_schedule()

    assert Schedule.objects.filter(name=TOKEN_REFRESH_SCHEDULE_NAME).count() == 1


def make_account(appid: str, *, is_active: bool = True) -> OfficialAccount:
    return OfficialAccount.objects.create(
        name=appid, appid=appid, app_secret=f"secret-{appid}", token="callbacktoken", is_active=is_active
    )


def test_client_for_an_account(db, settings):
    settings.WECHAT_API_BASE = "http://127.0.0.1:9"
    account = make_account("wx" + uuid.uuid4().hex[:16])

    client = wechat_client_for(account)

    assert client.credentials == account.credentials()
    assert client.token_manager is default_token_manager()
    assert client.api_base == "http://127.0.0.1:9"


def test_scheduled_refresh_renews_only_expiring_tokens_and_survives_a_failing_account(
    db, sandbox_api, settings, caplog
):
    settings.WECHAT_TOKEN_PREFETCH_WINDOW = 900
    appids = {key: "wx" + uuid.uuid4().hex[:16] for key in ("broken", "expiring", "fresh", "missing", "inactive")}
    accounts = {key: make_account(appid, is_active=key != "inactive") for key, appid in appids.items()}
    for key, account in accounts.items():
        # WeChat holds another AppSecret for the broken account than we do: 40125.
        secret = "changed-at-wechat" if key == "broken" else account.app_secret
        sandbox_api.add_account(appid=account.appid, secret=secret)
    store(appids["expiring"], "EXPIRING-IN-TEN-MINUTES", expires_in=600)
    store(appids["fresh"], "FRESH-FOR-AN-HOUR-token", expires_in=3600)
    store(appids["inactive"], "INACTIVE-ACCOUNT-token", expires_in=60)

    try:
        with caplog.at_level(logging.WARNING, logger="wxnotify.accounts"):
            assert refresh_access_tokens() == 2
        assert refresh_access_tokens() == 0
    finally:
        for appid in appids.values():
            AccessTokenManager().forget(appid)

    fetched = {fetch["appid"] for fetch in token_requests(sandbox_api)}
    assert fetched == {appids["broken"], appids["expiring"], appids["missing"]}
    assert fetch_count(sandbox_api, appids["expiring"]) == 1
    assert fetch_count(sandbox_api, appids["missing"]) == 1
    assert appids["broken"] in caplog.text
    assert "40125" in caplog.text
    assert accounts["broken"].app_secret not in caplog.text


# --- The token is encrypted in the shared cache -------------------------------------------------------------------


def raw_cache_entries() -> bytes:
    """Every byte the shared cache holds, as stored: the database cache's table or Redis's values."""
    if django_settings.CACHES["default"]["BACKEND"].endswith("RedisCache"):
        from django_redis import get_redis_connection

        redis = get_redis_connection("default")
        return b"".join(redis.get(key) or b"" for key in redis.scan_iter(match="*access_token*"))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT value FROM {django_settings.CACHE_TABLE}")  # noqa: S608 - a setting, not input
        return b"".join(base64.b64decode(value) for (value,) in cursor.fetchall())


def test_the_cached_token_is_ciphertext_in_the_cache_backend(db, wechat_sandbox, appid):
    client = make_client(appid, wechat_sandbox.base_url, AccessTokenManager())

    token = client.token_manager.get_token(client)

    stored = cache.get(cache_key(appid))
    assert set(stored) == {"sealed", "expires_at", "fetched_at"}
    assert token not in stored["sealed"]
    assert encryption.decrypt(stored["sealed"]) == token
    raw = raw_cache_entries()
    assert stored["sealed"].encode() in raw
    assert token.encode() not in raw


def test_a_cached_token_no_key_opens_counts_as_absent_and_is_replaced(db, wechat_sandbox, appid, settings):
    client = make_client(appid, wechat_sandbox.base_url, AccessTokenManager(), endpoint="classic")
    old = client.token_manager.get_token(client)
    settings.WXNOTIFY_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]  # the key it was sealed with is gone

    other_process = AccessTokenManager()
    assert other_process.peek(appid) is None
    new = other_process.get_token(make_client(appid, wechat_sandbox.base_url, other_process, endpoint="classic"))

    assert new != old
    assert fetch_count(wechat_sandbox, appid) == 2
    assert encryption.decrypt(cache.get(cache_key(appid))["sealed"]) == new


def test_a_token_cached_in_clear_by_an_older_version_is_not_used(db, wechat_sandbox, appid):
    now = time.time()
    cache.set(cache_key(appid), {"value": "TOKEN-IN-CLEAR", "expires_at": now + 7000, "fetched_at": now}, 3600)
    manager = AccessTokenManager()

    token = manager.get_token(make_client(appid, wechat_sandbox.base_url, manager))

    assert token != "TOKEN-IN-CLEAR"
    assert fetch_count(wechat_sandbox, appid) == 1
    assert "value" not in cache.get(cache_key(appid))


def test_reencrypt_cached_seals_the_token_again_under_the_first_key(db, appid, settings):
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.WXNOTIFY_ENCRYPTION_KEYS = [old_key]
    store(appid, "TOKEN-TO-ROTATE-0123456789", expires_in=3000)
    settings.WXNOTIFY_ENCRYPTION_KEYS = [new_key, old_key]
    manager = AccessTokenManager()

    assert manager.reencrypt_cached(appid) is True
    assert manager.reencrypt_cached("wx" + uuid.uuid4().hex[:16]) is False

    sealed = cache.get(cache_key(appid))["sealed"]
    assert Fernet(new_key).decrypt(sealed.encode()) == b"TOKEN-TO-ROTATE-0123456789"
    assert cache.get(cache_key(appid))["expires_at"] == pytest.approx(time.time() + 3000, abs=5)


def test_a_token_read_from_the_cache_is_masked_in_logs(db, appid):
    """The process that fetched a token registers it; one that only reads it from the cache must too."""
    value = f"TOKEN-READ-ONLY-{uuid.uuid4().hex}"
    store(appid, value, expires_in=3000)
    assert redact(f"x {value} y") == f"x {value} y"

    assert AccessTokenManager().peek(appid).value == value

    assert redact(f"x {value} y") == f"x {MASK} y"
