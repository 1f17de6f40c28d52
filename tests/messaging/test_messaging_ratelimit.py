"""Per-account rate limit windows, quota holds and retry backoff."""

from __future__ import annotations

import threading
import time

import pytest
from django.conf import settings
from django.core.cache import cache

from messaging import ratelimit
from messaging.outcomes import backoff_seconds

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def clean_cache():
    cache.clear()
    yield
    cache.clear()


def test_permits_are_granted_up_to_the_limit_within_one_second():
    now = 1_800_000_000.25
    assert ratelimit.try_acquire(1, 5, 3, now=now) == 3
    assert ratelimit.try_acquire(1, 5, 3, now=now + 0.1) == 2
    assert ratelimit.try_acquire(1, 5, 1, now=now + 0.2) == 0
    assert ratelimit.try_acquire(2, 5, 4, now=now) == 4, "accounts have separate windows"
    assert ratelimit.try_acquire(1, 5, 9, now=now + 1) == 5, "the next second is a new window"


def test_permits_are_handed_out_in_the_first_half_of_a_second_only():
    """Sends allowed late in a second would reach WeChat in the next one, on top of that second's own."""
    assert ratelimit.try_acquire(3, 5, 2, now=1_800_000_000.75) == 0
    assert ratelimit.try_acquire(3, 5, 2, now=1_800_000_001.01) == 2


def test_no_limit_grants_everything():
    assert ratelimit.try_acquire(1, 0, 1000) == 1000


def test_limit_falls_back_to_the_global_default(settings):
    settings.WXNOTIFY_DEFAULT_SEND_RATE_LIMIT = 0
    assert ratelimit.limit_for(None) == 0
    assert ratelimit.limit_for(20) == 20
    settings.WXNOTIFY_DEFAULT_SEND_RATE_LIMIT = 100
    assert ratelimit.limit_for(None) == 100


def test_without_a_cache_no_permit_is_granted(monkeypatch):
    """A limit that cannot be counted across processes is not kept by sending everything: delivery waits."""

    def cache_down(*args, **kwargs):
        raise ConnectionError("cache down")

    monkeypatch.setattr(cache, "add", cache_down)
    assert ratelimit.try_acquire(7, 2, 5) == 0
    monkeypatch.setattr(cache, "get", cache_down)
    assert ratelimit.held_until(7) is None


@pytest.mark.redis
@pytest.mark.skipif(not settings.REDIS_URL, reason="exact across concurrent callers only with Redis' atomic INCR")
def test_concurrent_callers_never_exceed_the_limit_with_redis():
    granted: list[int] = []
    barrier = threading.Barrier(16)
    second = int(time.time()) + 1.0  # one shared window, whenever the threads get to run

    def take():
        barrier.wait()
        for _ in range(10):
            granted.append(ratelimit.try_acquire(3, 25, 1, now=second))

    threads = [threading.Thread(target=take) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 25


def test_quota_hold_until_and_release():
    assert ratelimit.held_until(5) is None
    until = time.time() + 60
    ratelimit.hold_account(5, until)
    assert ratelimit.held_until(5) == pytest.approx(until)
    assert ratelimit.held_until(6) is None
    ratelimit.release_hold(5)
    assert ratelimit.held_until(5) is None
    ratelimit.hold_account(5, time.time() - 1)
    assert ratelimit.held_until(5) is None, "a hold in the past holds nothing"


def test_backoff_grows_exponentially_with_jitter_and_a_cap(settings):
    settings.WXNOTIFY_RETRY_BASE_DELAY = 2.0
    settings.WXNOTIFY_RETRY_MAX_DELAY = 60.0
    for attempt, step in [(1, 2.0), (2, 4.0), (3, 8.0), (6, 60.0), (20, 60.0)]:
        delays = [backoff_seconds(attempt) for _ in range(50)]
        assert all(step / 2 <= delay <= step for delay in delays)
        assert len(set(delays)) > 1, "jittered"
    assert backoff_seconds(1, retry_after=45.0) == 45.0
