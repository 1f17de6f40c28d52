"""The access_token of each account, shared by every process and host through the configured cache.

WeChat wants one central owner of the token: with ``/cgi-bin/token`` every fetch invalidates the previous token
(after a 5-minute overlap), so uncoordinated fetchers knock each other's tokens out. Here every process reads the
token from ``caches["default"]``; when it must be fetched, a distributed lock makes exactly one process fetch it
and the others reuse the result. A small in-process memo keeps the cache off the send hot path.

The token is stored encrypted (``wxnotify.encryption``, the keys of the AppSecrets): whoever reads the cache table
or Redis gets nothing that calls WeChat. Decrypting costs tens of microseconds, paid on a memo miss (at most every
``MEMO_TTL`` seconds per account and process), never per message.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Protocol

from django.conf import settings
from django.core.cache import caches
from django.dispatch import Signal

from wxnotify import encryption
from wxnotify.locks import LockUnavailableError, distributed_lock
from wxnotify.log import register_secret
from wxnotify.wechat.errors import TransientError

logger = logging.getLogger("wxnotify.wechat")

LOCK_TIMEOUT = 30.0
# Longer than one fetch can take (connect + read timeouts), so a waiter normally sees the winner's token.
LOCK_BLOCKING_TIMEOUT = 15.0
# How long a process trusts its memo before re-reading the shared cache, so processes converge on the same
# token soon after another one refreshed it.
MEMO_TTL = 30.0
# stable_token in normal mode keeps handing out the current token until 5 minutes before it expires, so with a
# refresh margin above that a token fetched a moment ago can already look due. Asking again this soon cannot get
# a better one and would put a lock and a fetch on every send, so a token this young counts as good.
MIN_REFETCH_INTERVAL = 10.0
# WeChat allows a force refresh at most every 30 s and 20 times a day (its day: Beijing time).
FORCE_REFRESH_SPACING = 30
FORCE_REFRESH_DAILY_LIMIT = 20
_BEIJING = timezone(timedelta(hours=8))
# The errcodes of a token rejected as superseded or expired.  When WeChat gives one of them for a token we hold as
# fresh (more than CONFLICT_MIN_REMAINING seconds left by our records), someone else has replaced it: another system
# fetching tokens with the same AppSecret.  40014 (malformed token) is not one of them.
CONFLICT_ERRCODES = frozenset({40001, 42001})
CONFLICT_MIN_REMAINING = 60.0


@dataclass(frozen=True)
class Credentials:
    """What it takes to fetch an account's access_token; no secret shows in a repr.

    ``token_endpoint`` is "stable", "classic" or "external": with "external" the token comes from another token
    authority at ``source_url`` (answering ``{access_token, expires_in}`` to ``Authorization: Bearer
    <source_secret>``) and WeChat's token endpoints are never called.
    """

    appid: str
    secret: str = field(repr=False)
    token_endpoint: str = "stable"
    source_url: str = field(default="", repr=False)
    source_secret: str = field(default="", repr=False)


@dataclass(frozen=True)
class AccessToken:
    """An access_token with its validity; times are Unix timestamps so every host agrees on them."""

    value: str = field(repr=False)
    expires_at: float
    fetched_at: float


class TokenFetcher(Protocol):
    """What the manager needs of a client: whose token it is, and a way to ask WeChat for a new one.

    ``wxnotify.wechat.client.WeChatClient`` is one; a protocol rather than the class keeps the import one way
    (the client uses the manager, the manager only calls back through this).
    """

    @property
    def credentials(self) -> Credentials: ...

    def fetch_access_token(self, *, force_refresh: bool = False) -> AccessToken: ...


# Sent after every successful fetch from WeChat, with appid, force_refresh and token_endpoint; for metrics.
token_fetched = Signal()
# Sent with appid and errcode when WeChat rejected a token we held as fresh (see CONFLICT_ERRCODES), once per
# rejected token whatever the number of threads and hosts that saw it rejected.  Receivers must not raise.
token_conflict = Signal()


class _FetchCounter:
    """Fetches from WeChat made by this process, per AppID (observable for dashboards and tests)."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def increment(self, appid: str) -> None:
        with self._lock:
            self._counts[appid] = self._counts.get(appid, 0) + 1

    def get(self, appid: str) -> int:
        with self._lock:
            return self._counts.get(appid, 0)


fetch_counter = _FetchCounter()


def _good_for(token: AccessToken, within: float, now: float) -> bool:
    """Whether ``token`` is worth using rather than fetching: more than ``within`` seconds left, or just fetched."""
    if token.expires_at <= now:
        return False
    return token.expires_at - now > within or now - token.fetched_at < MIN_REFETCH_INTERVAL


def cache_key(appid: str) -> str:
    return f"wechat:access_token:{appid}"


def lock_name(appid: str) -> str:
    return f"wechat:access_token-lock:{appid}"


def _force_refresh_key(appid: str) -> str:
    return f"wechat:access_token-forced:{appid}"


def _force_refresh_count_key(appid: str, now: float) -> str:
    day = datetime.fromtimestamp(now, tz=_BEIJING).strftime("%Y%m%d")
    return f"wechat:access_token-forced-count:{appid}:{day}"


class AccessTokenManager:
    """Hands out valid access_tokens, fetching each at most once across all threads and processes."""

    def __init__(self, cache_alias: str = "default") -> None:
        self.cache_alias = cache_alias
        # appid -> (token, trusted until); plain dict operations are atomic under the GIL.
        self._memo: dict[str, tuple[AccessToken, float]] = {}

    @property
    def cache(self):
        return caches[self.cache_alias]

    # --- public API ------------------------------------------------------------------------------

    def get_token(self, client: TokenFetcher) -> str:
        """A token with more than WECHAT_TOKEN_REFRESH_MARGIN seconds left, fetched only if none is cached."""
        appid = client.credentials.appid
        now = time.time()
        memo = self._memo.get(appid)
        if memo is not None and now < memo[1]:
            return memo[0].value
        margin = settings.WECHAT_TOKEN_REFRESH_MARGIN
        token = self.peek(appid)
        if token is None or not _good_for(token, margin, now):
            token, _fetched = self._obtain(client, reuse_within=margin)
        self._remember(appid, token)
        return token.value

    def get_token_valid_for(self, client: TokenFetcher, min_ttl: float) -> tuple[AccessToken, bool]:
        """The shared token if it has more than ``min_ttl`` seconds left, else one fetched through the single-flight
        lock (concurrent callers share one fetch); returns it and whether WeChat was asked.

        For callers outside this process (the token API), so the memo is not consulted: it may lag the shared cache
        by up to ``MEMO_TTL``.  A token fetched moments ago counts as good whatever ``min_ttl`` asks (see
        ``MIN_REFETCH_INTERVAL``): stable_token in normal mode keeps the current token until its last 5 minutes,
        so asking again could not get a longer-lived one.
        """
        token = self.peek(client.credentials.appid)
        if token is not None and _good_for(token, min_ttl, time.time()):
            return token, False
        return self._obtain(client, reuse_within=min_ttl)

    def refresh(self, client: TokenFetcher, *, failed_token: str | None = None, errcode: int | None = None) -> str:
        """Replace a token WeChat rejected; compare-and-delete so a refresh done by someone else is reused.

        If the shared token is no longer ``failed_token``, another thread or host already refreshed it and we
        return that one without asking WeChat. Otherwise the stable endpoint is asked in normal mode first, which
        is free of side effects. Only when normal mode hands back the very token that failed do we use force mode,
        which invalidates the token for everyone and which WeChat limits to 20 calls a day, at least 30 s apart
        (a second force refresh inside 30 s is silently ignored by WeChat, so we refuse it with retry_after).
        Past the day's budget of force refreshes the normal-mode token is kept (see ``force_refreshes_today``).
        ``errcode`` is WeChat's answer to ``failed_token``: a conflict is reported for 40001 and 42001 (see
        ``token_conflict``).  Without ``failed_token`` the token is always fetched again.
        """
        appid = client.credentials.appid
        self._memo.pop(appid, None)
        token, _fetched = self._obtain(
            client,
            reuse_within=0.0,
            failed_token=failed_token,
            failed_errcode=errcode,
            always_fetch=failed_token is None,
        )
        self._remember(appid, token)
        return token.value

    def refresh_if_expiring(self, client: TokenFetcher, within: int) -> bool:
        """Fetch a new token if the shared one expires within ``within`` seconds; True if WeChat was asked.

        Idempotent: run twice at once, the second run finds the first one's token under the lock.
        """
        appid = client.credentials.appid
        token = self.peek(appid)
        if token is not None and _good_for(token, within, time.time()):
            return False
        _token, fetched = self._obtain(client, reuse_within=float(within))
        return fetched

    def peek(self, appid: str) -> AccessToken | None:
        """The shared token of ``appid`` if one is cached, readable and unexpired (for dashboards: age and expiry).

        An entry no configured key opens (its key was dropped) or one stored in clear by an older version counts
        as absent: the next use fetches a new token and stores it under the current key.
        """
        stored = self.cache.get(cache_key(appid))
        if not stored:
            return None
        if stored["expires_at"] <= time.time() or "sealed" not in stored:
            return None
        try:
            value = encryption.decrypt(stored["sealed"])
        except encryption.UndecryptableError:
            logger.warning("The cached access_token of %s opens with no configured key; fetching a new one", appid)
            return None
        register_secret(value)
        return AccessToken(value=value, expires_at=stored["expires_at"], fetched_at=stored["fetched_at"])

    def force_refreshes_today(self, appid: str) -> int:
        """Force refreshes of ``appid``'s stable token made today (WeChat's day, Beijing time), by any process."""
        return int(self.cache.get(_force_refresh_count_key(appid, time.time())) or 0)

    def reencrypt_cached(self, appid: str) -> bool:
        """Store the cached token of ``appid`` again under the first key (key rotation); False if none is cached."""
        token = self.peek(appid)
        if token is None:
            return False
        self._store(appid, token)
        return True

    def forget(self, appid: str) -> None:
        """Drop the token everywhere we keep it (e.g. after the AppSecret changed)."""
        self._memo.pop(appid, None)
        self.cache.delete(cache_key(appid))

    # --- internals -------------------------------------------------------------------------------

    def _remember(self, appid: str, token: AccessToken) -> None:
        due_at = max(token.expires_at - settings.WECHAT_TOKEN_REFRESH_MARGIN, token.fetched_at + MIN_REFETCH_INTERVAL)
        trusted_until = min(due_at, token.expires_at, time.time() + MEMO_TTL)
        self._memo[appid] = (token, trusted_until)

    def _obtain(
        self,
        client: TokenFetcher,
        *,
        reuse_within: float,
        failed_token: str | None = None,
        failed_errcode: int | None = None,
        always_fetch: bool = False,
    ) -> tuple[AccessToken, bool]:
        """Single-flight: under the lock, reuse the shared token if it is good enough, else fetch one.

        Returns the token and whether WeChat was asked for it.
        """
        appid = client.credentials.appid
        try:
            with distributed_lock(
                lock_name(appid), timeout=LOCK_TIMEOUT, blocking_timeout=LOCK_BLOCKING_TIMEOUT
            ) as acquired:
                if acquired:
                    return self._reuse_or_fetch(client, reuse_within, failed_token, failed_errcode, always_fetch)
        except LockUnavailableError:
            # Redis is down. Fetching without the lock is safe with stable_token in normal mode: WeChat returns
            # the same token to every caller within its validity, so concurrent fetches cannot invalidate each
            # other (they only cost quota, 10,000/min). With the classic endpoint it risks superseding a token
            # another host holds, which then self-heals through the token-invalid refresh path.
            return self._reuse_or_fetch(client, reuse_within, failed_token, failed_errcode, always_fetch)
        # The holder has not finished within blocking_timeout; use its token if it stored one meanwhile.
        token = self.peek(appid)
        if token is not None and token.value != failed_token:
            return token, False
        raise TransientError("timed out waiting for another process to fetch the access_token")

    def _reuse_or_fetch(
        self,
        client: TokenFetcher,
        reuse_within: float,
        failed_token: str | None,
        failed_errcode: int | None,
        always_fetch: bool,
    ) -> tuple[AccessToken, bool]:
        appid = client.credentials.appid
        cached = self.peek(appid)
        now = time.time()
        if (
            not always_fetch
            and cached is not None
            and cached.value != failed_token
            and _good_for(cached, reuse_within, now)
        ):
            return cached, False
        if failed_token is not None and cached is not None and cached.value == failed_token:
            # Under the lock, and the first to see this token rejected: report a conflict once, not per thread.
            if failed_errcode in CONFLICT_ERRCODES and cached.expires_at - now > CONFLICT_MIN_REMAINING:
                logger.warning(
                    "WeChat rejected the access_token of %s (errcode %s) with %d s of validity left: another system "
                    "is fetching tokens with this AppSecret",
                    appid,
                    failed_errcode,
                    cached.expires_at - now,
                )
                token_conflict.send(sender=type(self), appid=appid, errcode=failed_errcode)
            self.cache.delete(cache_key(appid))
        token = self._fetch(client, force_refresh=False)
        if failed_token is not None and token.value == failed_token and client.credentials.token_endpoint == "stable":
            token = self._force_refresh(client, token)
        self._store(appid, token)
        return token, True

    def _force_refresh(self, client: TokenFetcher, normal: AccessToken) -> AccessToken:
        """Force mode, within WeChat's budget: at most once per 30 s (refused with retry_after) and 20 times a day;
        past the daily budget ``normal`` (the normal-mode token) is kept, with a warning saying what to do."""
        appid = client.credentials.appid
        used = self.force_refreshes_today(appid)
        if used >= FORCE_REFRESH_DAILY_LIMIT:
            logger.warning(
                "The access_token of %s was rejected, but the %d force refreshes WeChat allows a day are used up: "
                "staying in normal mode until tomorrow (Beijing time). Find the other system using this AppSecret.",
                appid,
                used,
            )
            return normal
        if not self.cache.add(_force_refresh_key(appid), True, timeout=FORCE_REFRESH_SPACING):
            raise TransientError(
                "access_token rejected but a force refresh was done less than 30 s ago",
                retry_after=float(FORCE_REFRESH_SPACING),
            )
        count_key = _force_refresh_count_key(appid, time.time())
        self.cache.add(count_key, 0, timeout=2 * 86400)
        self.cache.incr(count_key)
        return self._fetch(client, force_refresh=True)

    def _fetch(self, client: TokenFetcher, *, force_refresh: bool) -> AccessToken:
        appid = client.credentials.appid
        token = client.fetch_access_token(force_refresh=force_refresh)
        fetch_counter.increment(appid)
        logger.info("Fetched a new access_token for %s (force_refresh=%s)", appid, force_refresh)
        token_fetched.send(
            sender=type(self),
            appid=appid,
            force_refresh=force_refresh,
            token_endpoint=client.credentials.token_endpoint,
        )
        return token

    def _store(self, appid: str, token: AccessToken) -> None:
        remaining = int(token.expires_at - time.time())
        if remaining > 0:
            self.cache.set(
                cache_key(appid),
                {
                    "sealed": encryption.encrypt(token.value),
                    "expires_at": token.expires_at,
                    "fetched_at": token.fetched_at,
                },
                timeout=remaining,
            )


_default_manager: AccessTokenManager | None = None
_default_manager_lock = threading.Lock()


def default_token_manager() -> AccessTokenManager:
    """The process-wide manager, so every client in the process shares one memo."""
    global _default_manager
    if _default_manager is None:
        with _default_manager_lock:
            if _default_manager is None:
                _default_manager = AccessTokenManager()
    return _default_manager
