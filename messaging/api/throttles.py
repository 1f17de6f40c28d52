"""Per-user request rate limits for the API, shared by every web process through the cache.

DRF's ``SimpleRateThrottle`` keeps a list of request timestamps per client and rewrites it on every request, which
gets slow and racy at the rates an integration sends at (hundreds per second).  These throttles count requests in
fixed windows instead: one ``incr`` per request (plus an ``add`` opening each window).  With django-redis ``incr``
is atomic, so the limit is exact across processes; the database cache implements ``incr`` as read-then-write, so
concurrent requests can be undercounted a little — an approximation that is fine for a guard against runaway
clients.  A fixed window lets a client spend up to twice the rate around a window boundary; rates are set with that
in mind.

Rates use DRF's syntax (``"100/s"``, ``"5000/h"``) under ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` and are read
on every request, so ``override_settings`` and a changed setting take effect at once.  A scope without a rate is
not throttled.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """``"100/m"`` → (100, 60).  The period is its first letter, so "100/min" and "100/minute" work too."""
    try:
        count, period = rate.split("/")
        return int(count), PERIOD_SECONDS[period.strip()[0].lower()]
    except (ValueError, KeyError, IndexError) as exc:
        raise ImproperlyConfigured(f"Invalid throttle rate {rate!r}; use e.g. '100/s', '600/m', '5000/h'.") from exc


class FixedWindowRateThrottle(BaseThrottle):
    """Allow ``count`` requests per client per window of the scope's rate."""

    scope: str = ""

    def __init__(self) -> None:
        self._wait: float | None = None

    def get_rate(self) -> tuple[int, int] | None:
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
        return parse_rate(rate) if rate else None

    def get_client_key(self, request: Request) -> str:
        """Authenticated users are limited per user (whichever process or IP they use), others per IP."""
        if request.user and request.user.is_authenticated:
            return f"user:{request.user.pk}"
        return f"ip:{self.get_ident(request)}"

    def allow_request(self, request: Request, view: Any) -> bool:
        rate = self.get_rate()
        if rate is None:
            return True
        limit, duration = rate
        now = time.time()
        window = int(now // duration)
        key = f"throttle:{self.scope}:{self.get_client_key(request)}:{window}"
        count = self._count(key, duration)
        if count > limit:
            self._wait = (window + 1) * duration - now
            return False
        return True

    @staticmethod
    def _count(key: str, duration: int) -> int:
        """Count this request in its window: one ``incr`` round trip, except for the window's first request.

        The key outlives its window by a second so a request at the very end still finds it.
        """
        try:
            return cache.incr(key)
        except ValueError:
            pass
        # First request of the window (or the key just expired): open it; a concurrent opener may win the add.
        if cache.add(key, 1, timeout=duration + 1):
            return 1
        try:
            return cache.incr(key)
        except ValueError:
            # Expired between add() and incr(): this request opens the count again.
            cache.set(key, 1, timeout=duration + 1)
            return 1

    def wait(self) -> float | None:
        return self._wait


class BurstRateThrottle(FixedWindowRateThrottle):
    """Short-term limit on every API request of a client."""

    scope = "burst"


class SustainedRateThrottle(FixedWindowRateThrottle):
    """Long-term limit on every API request of a client."""

    scope = "sustained"


class SendRateThrottle(FixedWindowRateThrottle):
    """Limit on requests that send or control sending (messages, campaigns), on top of the general limits."""

    scope = "send"
