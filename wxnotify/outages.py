"""Brief outages of the database or of Redis: how they are recognised, and logged without flooding the log.

A request that fails because PostgreSQL restarts, SQLite is locked past its busy timeout or Redis is down is not a
bug in the request: it answers 503 with ``Retry-After`` (the API's exception handler, the callback view, the
project's ``handler500`` and :class:`wxnotify.middleware.OutageMiddleware` all use :func:`is_outage`), and the
same request succeeds once the service is back.  Nothing here holds a connection: Django reconnects by itself
(``CONN_HEALTH_CHECKS``) and redis-py opens a new connection on the next command.

Only connection-level errors count.  An ``IntegrityError`` or a ``ProgrammingError`` is a bug or a conflict, and
retrying the same request would fail the same way, so those stay 500 (or whatever their handler says).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import InterfaceError, OperationalError, connections
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError

# What a brief outage raises: Django's wrappers of the database driver's connection errors (SQLite's "database is
# locked" is an OperationalError too), redis-py's errors and django-redis's wrapper of them.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError, RedisError, ConnectionInterrupted)
# What a 503 asks the client to wait before trying again, in seconds.
RETRY_AFTER_SECONDS = 5
# One log line per kind of outage and process at most this often: an outage fails every request.
LOG_INTERVAL_SECONDS = 60.0

Written = TypeVar("Written")

_last_logged: dict[str, float] = {}
_log_lock = threading.Lock()


def is_outage(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or the exception it was raised from) is a database or Redis connection failure."""
    while exc is not None:
        if isinstance(exc, OUTAGE_ERRORS):
            return True
        exc = exc.__cause__
    return False


def log_outage(logger: logging.Logger, kind: str, exc: BaseException) -> None:
    """Warn about an outage of ``kind`` at most once per :data:`LOG_INTERVAL_SECONDS` in this process.

    Only the exception's class and text are logged (no traceback, no request data): the text of a connection
    error names the host and port, never a password (the log filter masks registered secrets besides).
    """
    now = time.monotonic()
    with _log_lock:
        last = _last_logged.get(kind)
        if last is not None and now - last < LOG_INTERVAL_SECONDS:
            return
        _last_logged[kind] = now
    logger.warning(
        "%s unavailable (%s: %s); further failures of it are logged once a minute", kind, type(exc).__name__, exc
    )


def write_checking_the_connection_itself(write: Callable[[], Written], using: str) -> Written:
    """Run ``write`` without ``CONN_HEALTH_CHECKS``'s ``SELECT 1`` before it; on a dead connection, reconnect and run
    it once more.

    For a write that is safe to run twice (an ``INSERT … ON CONFLICT DO NOTHING``) on a path where every round trip
    counts: the health check costs a round trip at the start of every request that uses the database, and the
    receipts of a burst wait for it.  Here the write is the check: when it fails on a connection that no longer
    answers (PostgreSQL restarted while this process was idle), the connection is closed and the write runs again on
    a new one.  Any other failure, a failure on a connection that still answers, or one inside a transaction (which
    a new connection cannot continue) is raised as before.  With health checks off, or when this request has checked
    already, nothing changes.
    """
    connection = connections[using]
    if connection.connection is None or not connection.health_check_enabled or connection.health_check_done:
        return write()
    connection.health_check_done = True
    try:
        return write()
    except (OperationalError, InterfaceError):
        if connection.in_atomic_block or connection.is_usable():
            raise
        connection.close()
        return write()
