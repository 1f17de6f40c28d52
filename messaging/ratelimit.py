"""Per-account send rate limit shared by every worker process, through the configured cache.

A fixed one-second window: each account has a counter per wall-clock second (``ratelimit:<id>:<second>``)
that every process increments by the number of sends it wants to make.  With django-redis ``incr`` is
Redis' atomic INCRBY, so the limit holds exactly across processes and hosts.  The database cache has
no atomic increment (Django implements ``incr`` as read + write), so two processes incrementing in
the same instant can both read the same value and overshoot; the key is created with the atomic
``add`` first so the window itself is never lost.  That approximation is acceptable for the embedded
single-host setup the database cache is meant for; deployments that need an exact limit use Redis.

Permits are taken in blocks (a whole batch's worth at once when it fits) so a limited account costs
one cache round-trip per block, not per message.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger("wxnotify.messaging")

# A window key lives a little longer than its second so late increments still find it.
_WINDOW_TTL_SECONDS = 3
# The part of each second in which its permits are handed out (see try_acquire).
GRANT_FRACTION = 0.5


def limit_for(send_rate_limit: int | None) -> int:
    """Messages per second allowed for an account: its own limit, else the global default (0 = none)."""
    if send_rate_limit:
        return send_rate_limit
    return settings.WXNOTIFY_DEFAULT_SEND_RATE_LIMIT


def _window_key(account_id: int, second: int) -> str:
    return f"ratelimit:{account_id}:{second}"


def try_acquire(account_id: int, limit: int, wanted: int, *, now: float | None = None) -> int:
    """Take up to ``wanted`` permits in the current second; returns how many were granted (maybe 0).

    Permits are granted only in the first GRANT_FRACTION of a second, so the sends they allow start early enough to
    reach WeChat within that second, not pile onto the next one's.  Without a working cache no permit is granted:
    the limit cannot be kept across processes, so sending waits.
    """
    if limit <= 0:
        return wanted
    now = time.time() if now is None else now
    if now % 1.0 >= GRANT_FRACTION:
        return 0
    second = int(now)
    key = _window_key(account_id, second)
    try:
        cache.add(key, 0, timeout=_WINDOW_TTL_SECONDS)
        try:
            total = cache.incr(key, wanted)
        except ValueError:
            # The key expired between add and incr (a stalled process): start the window again.
            cache.set(key, wanted, timeout=_WINDOW_TTL_SECONDS)
            total = wanted
    except Exception:
        logger.warning("Rate limit of account %s not counted: the cache is unavailable; waiting", account_id)
        return 0
    already_taken = total - wanted
    return max(0, min(wanted, limit - already_taken))


# --- Quota holds ----------------------------------------------------------------------------------------------------
#
# WeChat's daily quota (45009) resets at midnight Beijing time.  Until then every send of the account
# would fail again, so delivery checks this flag before claiming the account's messages and leaves them
# queued without spending attempts.  It lives in the shared cache so every process sees it at once.


def _hold_key(account_id: int) -> str:
    return f"quota-hold:{account_id}"


def hold_account(account_id: int, until: float) -> None:
    """Pause sending for an account until the epoch time ``until``."""
    cache.set(_hold_key(account_id), until, timeout=max(1, int(until - time.time()) + 1))


def held_until(account_id: int) -> float | None:
    """The epoch time an account's sends are paused until, or None if it may send (also when the cache fails: a
    hold only saves calls WeChat would refuse, and those hold the account again)."""
    try:
        until = cache.get(_hold_key(account_id))
    except Exception:
        logger.warning("Quota hold of account %s not read: the cache is unavailable", account_id)
        return None
    if until is None or until <= time.time():
        return None
    return until


def release_hold(account_id: int) -> None:
    """Let an account send again before its hold ends (e.g. after an operator cleared the quota at WeChat)."""
    cache.delete(_hold_key(account_id))
