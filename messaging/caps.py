"""Sending caps (``SendingCap``): at most N messages to one user per day, checked and counted at send time.

**Where.**  Right after a delivery task claims messages and before any of them is handed to the send pool
(``DeliveryRun._start``, after the unsubscribed check): a capped message never reaches WeChat.  Only the claim sees
every message at the moment it is about to go out — retries, messages that waited for a hold or a schedule, campaign
messages added by an expansion long after the campaign was accepted — so the day a message counts on is the day it
is sent, in the account's time zone (``OfficialAccount.zone``).  Checking at acceptance would count messages that are
later cancelled or sent tomorrow.

**When a message counts.**  When it is first claimed for sending: its ``cap_day`` is set in the same transaction as
the counters, so its retries (and a resend after a dead worker) are not counted again.  A message that WeChat then
refuses still counts: when an answer is lost it may have reached the user, and the cap is a promise to the user, so
it is kept on the safe side.  A message of a recipient who has unfollowed is failed before the caps and takes nothing.

**Exactness.**  One ``CapCounter`` row per cap, openid and day, created beforehand with an INSERT that ignores
conflicts, then taken with ``UPDATE … SET count = count + 1 WHERE … AND count < limit``: an updated row is a permit,
none is the cap.  On PostgreSQL the UPDATE locks the row and, under READ COMMITTED, re-checks ``count < limit``
against the row a concurrent transaction committed, so tasks racing on any number of processes or hosts let exactly
N through.  On the embedded default (SQLite) every transaction takes the write lock at BEGIN (``transaction_mode``
IMMEDIATE), so processes count one after the other: exact too.  A message under several caps (all templates and its
own template) takes them in one transaction, rolled back when any is full, so a refused message holds no permit.  The
counters live in the database, not in Redis: an evicted or restarted cache would forget a day's counts.

**Over the cap.**  The cap's action decides: *fail* ends the message with ``reasons.CAPPED_REASON``; *hold* puts it
back in the queue (attempt not spent) until the next day starts in the account's zone, with
``reasons.CAPPED_HELD_REASON`` shown meanwhile; on that day it is counted again like any message.  When several caps
refuse, the first one checked (all templates before a template's own) decides.

A cap counts from when it exists: one added at noon lets N more through that day, whatever went out in the morning
(the counters are per cap).  Changes by an admin apply to a running task within ``CAPS_MEMO_SECONDS``; a changed
limit keeps the day's count.  Counters of past days are deleted by the
scheduled sweep (:func:`prune_counters`).
"""

from __future__ import annotations

import time as monotonic_clock
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from messaging.models import CapCounter, Message, SendingCap

# How long a delivery task keeps an account's caps before reading them again.
CAPS_MEMO_SECONDS = 10.0
# Counters are kept this many days after their day (the sweep deletes older ones); two cover every time zone.
COUNTER_KEEP_DAYS = 2


@dataclass(frozen=True)
class Cap:
    pk: int
    template_id: int | None
    limit: int
    action: str

    def covers(self, message: Message) -> bool:
        """A cap for all templates covers every message; one for a template only that template's, so never a
        subscription notification (whose template is None)."""
        return self.template_id is None or self.template_id == message.template_id


@dataclass
class Verdict:
    """What the caps decided for a claimed batch: send these, fail those, hold the rest until the given times."""

    allowed: list[Message] = field(default_factory=list)
    capped: list[Message] = field(default_factory=list)
    held: dict[datetime, list[Message]] = field(default_factory=lambda: defaultdict(list))


def account_day(zone: ZoneInfo, now: datetime) -> date:
    """The calendar day ``now`` falls on in the account's zone: what a cap's "per day" means."""
    return now.astimezone(zone).date()


def next_day_start(zone: ZoneInfo, day: date) -> datetime:
    """Midnight after ``day`` in the account's zone, when a held message may go out again."""
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone)


def caps_of(account_id: int) -> list[Cap]:
    """An account's caps, the all-templates one first."""
    rows = SendingCap.objects.filter(account_id=account_id).order_by(F("template_id").asc(nulls_first=True), "pk")
    return [Cap(cap.pk, cap.template_id, cap.limit, cap.action) for cap in rows]


class CapRules:
    """Per delivery task: the caps of the accounts it sends for, read again every CAPS_MEMO_SECONDS."""

    def __init__(self) -> None:
        self._caps: dict[int, tuple[float, list[Cap]]] = {}

    def for_account(self, account_id: int) -> list[Cap]:
        loaded = self._caps.get(account_id)
        if loaded is None or monotonic_clock.monotonic() - loaded[0] >= CAPS_MEMO_SECONDS:
            loaded = (monotonic_clock.monotonic(), caps_of(account_id))
            self._caps[account_id] = loaded
        return loaded[1]

    def apply(self, messages: list[Message], now: datetime | None = None) -> Verdict:
        """Count the claimed ``messages`` against their accounts' caps; see the module docstring.

        Each message must have its account attached (claims do).  Messages already counted (``cap_day`` set) and
        those no cap covers are allowed without a query.
        """
        now = now or timezone.now()
        verdict = Verdict()
        counted: list[tuple[Message, date, list[Cap]]] = []
        for message in messages:
            caps = [cap for cap in self.for_account(message.account_id) if cap.covers(message)]
            if not caps or message.cap_day is not None:
                verdict.allowed.append(message)
            else:
                counted.append((message, account_day(message.account.zone, now), caps))
        if not counted:
            return verdict
        # Sorted, so that tasks creating the same rows side by side insert them in one order (no deadlock).
        keys = sorted({(cap.pk, message.touser, day) for message, day, caps in counted for cap in caps})
        CapCounter.objects.bulk_create(
            [CapCounter(cap_id=cap_id, openid=openid, day=day) for cap_id, openid, day in keys], ignore_conflicts=True
        )
        for message, day, caps in counted:
            refusing = take_permits(message, day, caps)
            if refusing is None:
                verdict.allowed.append(message)
            elif refusing.action == SendingCap.Action.HOLD:
                verdict.held[next_day_start(message.account.zone, day)].append(message)
            else:
                verdict.capped.append(message)
        return verdict


def take_permits(message: Message, day: date, caps: list[Cap]) -> Cap | None:
    """Count the message against each of its caps on ``day``, all or none; returns the cap that refused, if any.

    The counter rows exist (``CapRules.apply`` created them).  On success the message's ``cap_day`` is set in the
    same transaction, so it is never counted twice.
    """
    with transaction.atomic():
        for cap in caps:
            counter = CapCounter.objects.filter(cap_id=cap.pk, openid=message.touser, day=day)
            taken = counter.filter(count__lt=cap.limit).update(count=F("count") + 1)
            if not taken:
                transaction.set_rollback(True)
                return cap
        Message.objects.filter(pk=message.pk).update(cap_day=day)
    message.cap_day = day
    return None


def prune_counters(now: datetime) -> int:
    """Delete the counters of days that have ended everywhere; returns how many."""
    deleted, _ = CapCounter.objects.filter(day__lt=now.date() - timedelta(days=COUNTER_KEEP_DAYS)).delete()
    return deleted
