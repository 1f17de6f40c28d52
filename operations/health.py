"""The checks behind ``GET /healthz``: can this process reach what it needs, and is the send queue keeping up?

Load balancers and orchestrators call it often and without credentials (they read only ok / not ok; the details
below need the operations token, :mod:`operations.access`), so each check is one cheap round trip,
catches its own failure (the endpoint answers 503 naming the failed check, never 500) and reports only the
exception's class: messages of database or Redis errors can carry host names and user names.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Min
from django.db.models.functions import Coalesce
from django.utils import timezone
from django_q.brokers import get_broker

from messaging.models import Message

CACHE_PROBE_TTL = 10


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    ms: float
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "ms": self.ms, **self.details}


@dataclass(frozen=True)
class HealthReport:
    checks: dict[str, CheckResult]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks.values())

    @property
    def failed(self) -> list[str]:
        return [name for name, check in self.checks.items() if not check.ok]

    def summary(self) -> dict[str, str]:
        """What anyone may read: ok or not, nothing about which dependency failed or how deep the queue is."""
        return {"status": "ok" if self.ok else "fail"}

    def as_dict(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            **self.summary(),
            "checks": {name: check.as_dict() for name, check in self.checks.items()},
        }
        if not self.ok:
            report["failed"] = self.failed
        return report


def queue_lag_seconds(now: datetime) -> float:
    """How long the oldest due queued message has been due (since acceptance, or since its retry time); 0 if none.

    Messages held for a later attempt (backoff, quota) are not due, so they do not count as lag; nor do those of a
    campaign waiting for approval (or stopped), which no worker may send however long they wait.
    """
    oldest = (
        Message.objects.due(now)
        .campaign_may_send()
        .order_by()
        .aggregate(oldest=Min(Coalesce("next_attempt_at", "created_at")))["oldest"]
    )
    if oldest is None:
        return 0.0
    return max(0.0, round((now - oldest).total_seconds(), 3))


def check_database() -> tuple[bool, dict[str, Any]]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return True, {}


def check_cache() -> tuple[bool, dict[str, Any]]:
    """Write, read back and delete a key of our own, so concurrent probes never see each other's value."""
    key = f"ops:healthz:{uuid.uuid4().hex}"
    value = uuid.uuid4().hex
    cache.set(key, value, CACHE_PROBE_TTL)
    try:
        read_back = cache.get(key)
    finally:
        cache.delete(key)
    if read_back != value:
        return False, {"error": "value read back differs"}
    return True, {}


def check_broker() -> tuple[bool, dict[str, Any]]:
    """django-q2's broker answers (Redis PING, or a query of the ORM broker's table) and how many tasks wait."""
    broker = get_broker()
    if not broker.ping():
        return False, {"error": "broker did not answer the ping"}
    return True, {"queued_tasks": broker.queue_size()}


def check_queue_lag() -> tuple[bool, dict[str, Any]]:
    threshold = settings.WXNOTIFY_HEALTH_MAX_QUEUE_LAG_SECONDS
    lag = queue_lag_seconds(timezone.now())
    return lag <= threshold, {"lag_seconds": lag, "threshold_seconds": threshold}


CHECKS: dict[str, Callable[[], tuple[bool, dict[str, Any]]]] = {
    "database": check_database,
    "cache": check_cache,
    "broker": check_broker,
    "queue_lag": check_queue_lag,
}


def run_check(check: Callable[[], tuple[bool, dict[str, Any]]]) -> CheckResult:
    started = time.perf_counter()
    try:
        ok, details = check()
    except Exception as exc:  # any failure of a dependency is a failed check, never a 500
        ok, details = False, {"error": type(exc).__name__}
    return CheckResult(ok=ok, ms=round((time.perf_counter() - started) * 1000, 1), details=details)


def run_checks() -> HealthReport:
    return HealthReport({name: run_check(check) for name, check in CHECKS.items()})
