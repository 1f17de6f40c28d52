"""A cross-process lock on whatever cache is configured: Redis when there is one, the database cache otherwise.

This is a thin adapter, not a lock service: it exists so that code needing single-flight behaviour (the
access_token fetch) works the same on the embedded default (SQLite + DatabaseCache) and on Redis.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.core.cache import caches
from redis.exceptions import RedisError

logger = logging.getLogger("wxnotify.locks")

# How long a waiter sleeps between attempts on the database-cache lock; short, because the token fetch it guards
# usually takes a few hundred milliseconds.
POLL_INTERVAL = 0.05


class LockUnavailableError(Exception):
    """The lock backend (Redis) could not be reached; the caller decides whether to proceed unlocked."""


@contextmanager
def distributed_lock(name: str, *, timeout: float, blocking_timeout: float, alias: str = "default") -> Iterator[bool]:
    """Hold the lock ``name`` for the ``with`` block; yields True if acquired, False after ``blocking_timeout``.

    ``timeout`` bounds how long a crashed holder keeps the lock. Raises :class:`LockUnavailableError` (after logging
    a warning) when Redis is down, because django-redis raises from ``lock()`` even with IGNORE_EXCEPTIONS.
    """
    cache = caches[alias]
    if hasattr(cache, "lock"):
        with _redis_lock(cache, name, timeout=timeout, blocking_timeout=blocking_timeout) as acquired:
            yield acquired
    else:
        with _cache_add_lock(cache, name, timeout=timeout, blocking_timeout=blocking_timeout) as acquired:
            yield acquired


@contextmanager
def _redis_lock(cache, name: str, *, timeout: float, blocking_timeout: float) -> Iterator[bool]:
    try:
        lock = cache.lock(name, timeout=timeout, blocking_timeout=blocking_timeout)
        acquired = bool(lock.acquire(blocking=True))
    except RedisError as exc:
        logger.warning("Lock %s unavailable, Redis error: %s", name, type(exc).__name__)
        raise LockUnavailableError(name) from exc
    try:
        yield acquired
    finally:
        if acquired:
            try:
                lock.release()
            except RedisError as exc:
                # Expired under us or Redis went away: either way the key's own timeout frees it.
                logger.warning("Could not release lock %s: %s", name, type(exc).__name__)


@contextmanager
def _cache_add_lock(cache, name: str, *, timeout: float, blocking_timeout: float) -> Iterator[bool]:
    """A lock on the cache's atomic ``add()``: the DatabaseCache inserts the row under its primary key.

    ``add()`` on a row that exists but has expired turns into an UPDATE that two waiters could both win, so each
    attempt first calls ``get()``, which deletes an expired row; then ``add()`` is a plain INSERT that only one
    process can win. The owner value is random so only the holder releases the lock; release is get-then-delete
    and therefore not atomic, which only matters if a holder overran ``timeout`` — keep the guarded work far
    below it.
    """
    owner = secrets.token_hex(16)
    deadline = time.monotonic() + blocking_timeout
    acquired = False
    while True:
        cache.get(name)
        if cache.add(name, owner, timeout=timeout):
            acquired = True
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_INTERVAL)
    try:
        yield acquired
    finally:
        if acquired and cache.get(name) == owner:
            cache.delete(name)
