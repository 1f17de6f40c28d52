"""distributed_lock on the database cache (atomic add) and on django-redis, including Redis being down."""

import logging
import os
import threading
import time
import uuid

import pytest
import redis
from django.core.management import call_command

from tests.servers import free_port
from wxnotify.locks import LockUnavailableError, distributed_lock

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/1"


def redis_reachable() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture(params=["db", pytest.param("redis", marks=pytest.mark.redis)])
def alias(request, settings, transactional_db):
    """Both lock implementations, whichever cache the suite itself runs on."""
    if request.param == "db":
        # With REDIS_URL set, migrate created no cache table: create it for this alias.
        call_command("createcachetable", settings.CACHE_TABLE, verbosity=0)
        backend = {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": settings.CACHE_TABLE}
    else:
        if not redis_reachable():
            pytest.skip("Redis is not reachable")
        backend = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": REDIS_URL, "KEY_PREFIX": "wxnotify-test"}
    settings.CACHES = {**settings.CACHES, "locks": backend}
    return "locks"


@pytest.fixture
def name():
    return f"test-lock:{uuid.uuid4().hex}"


def test_lock_is_exclusive_until_released(alias, name):
    with distributed_lock(name, timeout=10, blocking_timeout=1, alias=alias) as first:
        assert first is True
        started = time.monotonic()
        with distributed_lock(name, timeout=10, blocking_timeout=0.3, alias=alias) as second:
            assert second is False
        assert time.monotonic() - started >= 0.15  # it waited (redis-py polls every 0.1 s) before giving up

    with distributed_lock(name, timeout=10, blocking_timeout=0, alias=alias) as again:
        assert again is True


def test_lock_of_a_crashed_holder_expires(alias, name):
    crashed = distributed_lock(name, timeout=1, blocking_timeout=0, alias=alias)
    assert crashed.__enter__() is True  # never exited, like a process killed while holding it

    with distributed_lock(name, timeout=10, blocking_timeout=3, alias=alias) as acquired:
        assert acquired is True


def test_only_the_owner_releases(alias, name):
    overrun = distributed_lock(name, timeout=1, blocking_timeout=0, alias=alias)
    assert overrun.__enter__() is True
    time.sleep(1.2)
    with distributed_lock(name, timeout=10, blocking_timeout=0, alias=alias) as current:
        assert current is True
        overrun.__exit__(None, None, None)  # the late holder finishes: it must not free the current holder's lock
        with distributed_lock(name, timeout=10, blocking_timeout=0, alias=alias) as intruder:
            assert intruder is False


def test_threads_never_overlap(alias, name):
    from django.db import connections

    inside = 0
    most_inside = 0
    entered = 0
    counter_lock = threading.Lock()
    errors = []

    def worker():
        nonlocal inside, most_inside, entered
        try:
            with distributed_lock(name, timeout=10, blocking_timeout=10, alias=alias) as acquired:
                assert acquired
                with counter_lock:
                    inside += 1
                    entered += 1
                    most_inside = max(most_inside, inside)
                time.sleep(0.02)
                with counter_lock:
                    inside -= 1
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert entered == 8
    assert most_inside == 1


def test_redis_down_raises_lock_unavailable_and_warns(settings, caplog, name):
    settings.CACHES = {
        **settings.CACHES,
        "down": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"IGNORE_EXCEPTIONS": True, "SOCKET_CONNECT_TIMEOUT": 0.5},
        },
    }

    with (
        caplog.at_level(logging.WARNING, logger="wxnotify.locks"),
        pytest.raises(LockUnavailableError),
        distributed_lock(name, timeout=5, blocking_timeout=1, alias="down"),
    ):
        pytest.fail("the block must not run without the lock")

    assert "unavailable" in caplog.text
    assert name in caplog.text
