"""Per-user request rate limits for the API, counted in the ``throttles`` cache (:func:`throttle_cache`).

DRF's ``SimpleRateThrottle`` keeps a list of request timestamps per client and rewrites it on every request, which
gets slow and racy at the rates an integration sends at (hundreds per second).  These throttles count requests in
fixed windows instead: one ``incr`` per request (plus an ``add`` opening each window).  With Redis (``REDIS_URL``)
the windows of all of a request's scopes are counted in one round trip (:func:`count_requests`), and the count is
atomic, so the limit is exact across processes and hosts.  On the embedded default the windows are counted in each
web process's memory instead of the SQLite database (a write per request there would queue every request behind
the database's single writer), so a limit holds per web process.  A fixed window lets a client spend up to twice
the rate around a window boundary; rates are set with that in mind.

When the cache is unavailable (Redis down), the throttles **fail open**: the
request is allowed without being counted, the outage is logged once a minute per process
(:func:`wxnotify.outages.log_outage`), and for :data:`OUTAGE_PAUSE_SECONDS` after a failure the cache is not asked
at all, so requests do not each wait out Redis's connect timeout.  The first count after the pause that succeeds
resumes limiting, without a restart.  Failing open was chosen over answering 503 because the throttles only guard
against runaway clients: the database is the record of every accepted message, so refusing all API traffic for
the length of a Redis outage would cost more than a few minutes without per-user limits.

Rates use DRF's syntax (``"100/s"``, ``"5000/h"``) under ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` and are read
on every request, so ``override_settings`` and a changed setting take effect at once.  A scope without a rate is
not throttled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.core.exceptions import ImproperlyConfigured
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from wxnotify.outages import OUTAGE_ERRORS, log_outage

logger = logging.getLogger("wxnotify.messaging.api")

PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def throttle_cache() -> BaseCache:
    """Where the windows are counted: Redis when configured, shared by every web process and host; on the embedded
    default each process's memory (settings ``CACHES["throttles"]``), because counting in SQLite would make every
    request wait for the database's single writer.  Limits then hold per web process."""
    return caches["throttles"]


# After the cache failed to count a request, it is left alone this long (seconds, per process) and requests pass.
OUTAGE_PAUSE_SECONDS = 5.0


def parse_rate(rate: str) -> tuple[int, int]:
    """``"100/m"`` → (100, 60).  The period is its first letter, so "100/min" and "100/minute" work too."""
    try:
        count, period = rate.split("/")
        return int(count), PERIOD_SECONDS[period.strip()[0].lower()]
    except (ValueError, KeyError, IndexError) as exc:
        raise ImproperlyConfigured(f"Invalid throttle rate {rate!r}; use e.g. '100/s', '600/m', '5000/h'.") from exc


def _count(key: str, duration: int) -> int:
    """Count a request in its window: one ``incr`` round trip, except for the window's first request.

    The key outlives its window by a second so a request at the very end still finds it.
    """
    try:
        return throttle_cache().incr(key)
    except ValueError:
        pass
    # First request of the window (or the key just expired): open it; a concurrent opener may win the add.
    if throttle_cache().add(key, 1, timeout=duration + 1):
        return 1
    try:
        return throttle_cache().incr(key)
    except ValueError:
        # Expired between add() and incr(): this request opens the count again.
        throttle_cache().set(key, 1, timeout=duration + 1)
        return 1


def count_requests(windows: Sequence[tuple[str, int]]) -> list[int]:
    """Count a request in each ``(key, duration)`` window; return the counts including it.

    With django-redis all windows take one round trip: per key a ``SET NX EX`` that opens the window with its
    expiry and an ``INCR``, in one MULTI/EXEC so the key cannot expire between the two (an INCR on an expired
    key would leave a counter without expiry).  The integer is stored raw, as django-redis stores integers, so
    ``cache.get``/``incr`` read the same count.  Other caches count key by key.
    """
    client_of = getattr(throttle_cache(), "client", None)
    if client_of is None or not hasattr(client_of, "get_client"):
        return [_count(key, duration) for key, duration in windows]
    pipe = client_of.get_client(write=True).pipeline(transaction=True)
    for key, duration in windows:
        full_key = throttle_cache().make_key(key)
        pipe.set(full_key, 0, ex=duration + 1, nx=True)
        pipe.incr(full_key)
    return [int(count) for count in pipe.execute()[1::2]]


class _CacheOutage:
    """Per process: until when the throttles leave the cache alone after it failed."""

    def __init__(self) -> None:
        self._until = 0.0

    def paused(self) -> bool:
        return time.monotonic() < self._until

    def begin(self, exc: BaseException) -> None:
        self._until = time.monotonic() + OUTAGE_PAUSE_SECONDS  # one float written: last writer wins, fine
        log_outage(logger, "The cache holding the API throttle counters", exc)

    def reset(self) -> None:
        """Forget a past failure: the next request asks the cache again (the test suite starts each test so)."""
        self._until = 0.0


cache_outage = _CacheOutage()


def count_or_fail_open(windows: Sequence[tuple[str, int]]) -> list[int] | None:
    """:func:`count_requests`, or None (the request passes uncounted) while the cache is unavailable."""
    if cache_outage.paused():
        return None
    try:
        return count_requests(windows)
    except OUTAGE_ERRORS as exc:
        cache_outage.begin(exc)
        return None


class FixedWindowRateThrottle(BaseThrottle):
    """Allow ``count`` requests per client per window of the scope's rate.

    ``allow_request`` counts this scope alone; :func:`check_fixed_windows` counts several scopes in one go.
    """

    scope: str = ""

    def __init__(self) -> None:
        self._wait: float | None = None
        self._window: tuple[str, int, int, float] | None = None

    def get_rate(self) -> tuple[int, int] | None:
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
        return parse_rate(rate) if rate else None

    def get_client_key(self, request: Request) -> str:
        """Authenticated users are limited per user (whichever process or IP they use), others per IP."""
        if request.user and request.user.is_authenticated:
            return f"user:{request.user.pk}"
        return f"ip:{self.get_ident(request)}"

    def window(self, request: Request) -> tuple[str, int, int, float] | None:
        """The current window as ``(key, duration, limit, seconds until it ends)``; None when the scope has no rate."""
        rate = self.get_rate()
        if rate is None:
            return None
        limit, duration = rate
        now = time.time()
        window = int(now // duration)
        key = f"throttle:{self.scope}:{self.get_client_key(request)}:{window}"
        return key, duration, limit, (window + 1) * duration - now

    def settle(self, window: tuple[str, int, int, float], count: int) -> bool:
        """Whether a request counted ``count`` in ``window`` is allowed; if not, remember how long to wait."""
        _key, _duration, limit, remaining = window
        if count > limit:
            self._wait = remaining
            return False
        return True

    def allow_request(self, request: Request, view: Any) -> bool:
        window = self.window(request)
        if window is None:
            return True
        key, duration, _limit, _remaining = window
        counts = count_or_fail_open([(key, duration)])
        return counts is None or self.settle(window, counts[0])

    def wait(self) -> float | None:
        return self._wait


def check_fixed_windows(throttles: Sequence[BaseThrottle], request: Request, view: Any) -> list[float | None]:
    """Count the request in every throttle's window, the fixed-window ones in one cache round trip.

    Like DRF's ``check_throttles`` every throttle counts the request, refused or not.  Returns the waits of the
    throttles that refuse it (empty: allowed; also while the cache is unavailable, see the module docstring).
    """
    waits: list[float | None] = []
    pending: list[tuple[FixedWindowRateThrottle, tuple[str, int, int, float]]] = []
    for throttle in throttles:
        if isinstance(throttle, FixedWindowRateThrottle):
            window = throttle.window(request)
            if window is not None:
                pending.append((throttle, window))
        elif not throttle.allow_request(request, view):
            waits.append(throttle.wait())
    counts = count_or_fail_open([(window[0], window[1]) for _throttle, window in pending]) if pending else []
    if counts is None:
        return waits
    for (throttle, window), count in zip(pending, counts, strict=True):
        if not throttle.settle(window, count):
            waits.append(throttle.wait())
    return waits


class BurstRateThrottle(FixedWindowRateThrottle):
    """Short-term limit on every API request of a client."""

    scope = "burst"


class SustainedRateThrottle(FixedWindowRateThrottle):
    """Long-term limit on every API request of a client."""

    scope = "sustained"


class SendRateThrottle(FixedWindowRateThrottle):
    """Limit on requests that send or control sending (messages, campaigns), on top of the general limits."""

    scope = "send"


class TokenReadRateThrottle(FixedWindowRateThrottle):
    """Limit on reads of the token API, on top of the general limits: a service polling for the token on every call
    instead of keeping it until ``expires_at`` is told so early."""

    scope = "token_read"


class CountWindowsTogether:
    """View mixin: DRF's throttle check, with every scope's window counted in one cache round trip instead of one
    per scope (:func:`check_fixed_windows`).  For every API view, so none counts its windows another way."""

    def check_throttles(self, request: Request) -> None:
        waits = check_fixed_windows(self.get_throttles(), request, self)
        if waits:
            self.throttled(request, max((wait for wait in waits if wait is not None), default=None))
