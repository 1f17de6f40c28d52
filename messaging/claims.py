"""Claiming messages for a delivery task: which messages, how many per account, and marking them ``sending``.

A claim turns queued rows into ``sending`` rows that carry the task's claim token and a lease.  On PostgreSQL the
candidates are locked with ``FOR UPDATE SKIP LOCKED``, so tasks claiming side by side take different rows instead
of queueing behind each other; elsewhere (SQLite, which has one writer at a time) one conditional UPDATE decides.

Before anything is claimed, :class:`AccountGate` asks per account whether it may send now: messages that respect
quiet hours (campaign messages, singles sent with ``respect_quiet_hours``) of an account inside its quiet window go
back to ``scheduled`` until it ends (:mod:`messaging.scheduling`); an account on hold
(WeChat's daily quota, an AppSecret that cannot be decrypted) has its due messages moved to the end of the hold
without spending an attempt, and a rate-limited account gets only the permits of the current second.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from accounts.models import OfficialAccount
from accounts.services import flag_unreadable_secret
from messaging import ratelimit, scheduling
from messaging.models import Message, lease_from_now

logger = logging.getLogger("wxnotify.messaging")

# How long an account whose AppSecret cannot be decrypted is held before delivery looks at it again.
SECRET_HOLD_SECONDS = 300.0


def as_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.get_current_timezone())


class AccountGate:
    """Per delivery task: the accounts it has loaded, and how many of an account's messages may go out now."""

    def __init__(self) -> None:
        self.accounts: dict[int, OfficialAccount] = {}
        # Accounts out of permits (or held) until this monotonic time: left out of the next claims.
        self.paused: dict[int, float] = {}

    def paused_accounts(self) -> list[int]:
        now = time.monotonic()
        for account_id in [account_id for account_id, until in self.paused.items() if until <= now]:
            del self.paused[account_id]
        return list(self.paused)

    def pause(self, account_id: int, seconds: float) -> None:
        """Leave the account out of this task's claims for a while."""
        self.paused[account_id] = time.monotonic() + seconds

    def seconds_to_resume(self) -> float | None:
        """Seconds until the first paused account may be claimed again (a new rate-limit second starts), if any."""
        if not self.paused:
            return None
        return max(0.0, min(self.paused.values()) - time.monotonic())

    def account(self, account_id: int) -> OfficialAccount | None:
        """The account, loaded once per task (loading decrypts its AppSecret); None when it cannot be decrypted."""
        if account_id not in self.accounts:
            try:
                self.accounts[account_id] = OfficialAccount.objects.get(pk=account_id)
            except ImproperlyConfigured:
                hold_unreadable_secret(account_id)
                return None
        return self.accounts[account_id]

    def outside_quiet_hours(self, account_id: int, ids: list[int], respecting: set[int], now: datetime) -> list[int]:
        """The ids that may go now: inside the account's quiet hours those in ``respecting`` are deferred to the
        window's end (status scheduled, attempts untouched) and left out; other messages are not held by them."""
        account = self.account(account_id)
        until = account.quiet_hours_end(now) if account is not None else None
        if until is None:
            return ids
        deferred = [pk for pk in ids if pk in respecting]
        if deferred:
            scheduling.defer_for_quiet_hours(Message.objects.filter(pk__in=deferred), until, now)
        return [pk for pk in ids if pk not in respecting]

    def allow(self, account_id: int, wanted: int, candidates: QuerySet[Message]) -> int:
        """How many of ``wanted`` due messages of the account may be claimed now (0..wanted).

        Held accounts get 0 and their due ``candidates`` are moved to the end of the hold, attempts untouched.
        """
        until = ratelimit.held_until(account_id)
        account = self.account(account_id) if until is None else None
        if until is None and account is None:
            until = ratelimit.held_until(account_id) or time.time() + SECRET_HOLD_SECONDS
        if until is not None:
            candidates.filter(account_id=account_id).update(
                next_attempt_at=as_datetime(until), updated_at=timezone.now()
            )
            self.pause(account_id, min(max(until - time.time(), 0.0), 60.0))
            return 0
        limit = ratelimit.limit_for(account.send_rate_limit)
        if not limit:
            return wanted
        granted = ratelimit.try_acquire(account_id, limit, wanted)
        if granted < wanted:
            # Out of permits for this second: the account's other messages wait for the next one.
            self.pause(account_id, 1.0 - time.time() % 1.0)
        return granted


def hold_unreadable_secret(account_id: int) -> None:
    """Stop sending for an account whose AppSecret no configured key decrypts, and say so on the account.

    Its messages stay queued with their attempts untouched and are looked at again after SECRET_HOLD_SECONDS, so
    restoring the key (or saving the AppSecret again) lets them go without anyone re-sending them by hand.
    """
    ratelimit.hold_account(account_id, time.time() + SECRET_HOLD_SECONDS)
    flag_unreadable_secret(account_id)
    logger.error("Account %s: AppSecret cannot be decrypted; holding its messages", account_id)


def claim(
    candidates: QuerySet[Message],
    *,
    order_by: tuple[str, ...],
    limit: int,
    token: str,
    gate: AccountGate,
    now: datetime,
) -> list[Message]:
    """Claim up to ``limit`` of ``candidates`` (already limited to what is claimable) for the task ``token``.

    Returns the claimed messages, oldest first, each with its account attached.
    """
    if limit <= 0:
        return []
    paused = gate.paused_accounts()
    if paused:
        candidates = candidates.exclude(account_id__in=paused)
    locking = connection.features.has_select_for_update_skip_locked
    with transaction.atomic() if locking else contextlib.nullcontext():
        if locking:
            candidates = candidates.select_for_update(skip_locked=True, of=("self",))
        rows = list(
            candidates.order_by(*order_by).values_list("pk", "account_id", "campaign_id", "respect_quiet_hours")[:limit]
        )
        if not rows:
            return []
        by_account: dict[int, list[int]] = defaultdict(list)
        respecting: set[int] = set()
        for pk, account_id, campaign_id, respect_quiet_hours in rows:
            by_account[account_id].append(pk)
            if campaign_id is not None or respect_quiet_hours:
                respecting.add(pk)
        chosen: list[int] = []
        for account_id, account_ids in by_account.items():
            ids = gate.outside_quiet_hours(account_id, account_ids, respecting, now)
            if not ids:
                continue
            allowed = gate.allow(account_id, len(ids), Message.objects.filter(pk__in=ids))
            chosen.extend(ids[:allowed])
        if not chosen:
            return []
        marked = Message.objects.filter(pk__in=chosen)
        if not locking:
            # Without row locks another task may have claimed some of them meanwhile: take only what is still ours.
            marked = marked.claimable(now)
        marked.update(
            status=Message.Status.SENDING,
            attempts=F("attempts") + 1,
            attempted_at=now,
            lease_expires_at=lease_from_now(),
            claim_token=token,
            updated_at=now,
        )
    messages = list(
        Message.objects.filter(pk__in=chosen, claim_token=token, status=Message.Status.SENDING).order_by("pk")
    )
    for message in messages:
        message.account = gate.accounts[message.account_id]
    return messages


def urgent_candidates(now: datetime) -> Iterable[tuple[QuerySet[Message], tuple[str, ...]]]:
    """What every delivery task serves first, most urgent first, as claimable at ``now``: retries whose time came (any
    message that waited for a backoff, a hold or a dead worker), then single messages never tried."""
    yield Message.objects.claimable_retries(now), ("next_attempt_at", "pk")
    yield Message.objects.claimable_singles(now), ("pk",)
