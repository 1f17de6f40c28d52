"""The duplicate window: the same content to the same user within X minutes is not sent again.

An account's ``duplicate_window_minutes`` (empty or 0: off) sets the window.  Two messages are duplicates when they
go to the same openid of the same account with the same *content*: channel, template, data, link URL and mini-program
page (``content_hash``, stored on every message; campaign messages carry their campaign's).

**Single sends** (API): a duplicate is answered with the first message of the window — not failed, not stored again —
the way a repeated idempotency key is (200 with the original; the API adds ``X-Wxnotify-Replay: duplicate``).  The
look-up reads the user's messages of the window through the ``(touser, created_at)`` index, a handful of rows.  An
original that failed (capped, unsubscribed, refused by WeChat) reached nobody, so it does not block a new send.

**Exactness.**  Look-up and insert run in one transaction under a lock on (account, openid, content): on PostgreSQL
a transaction-scoped advisory lock, so two identical requests racing on any processes are serialised and the second
finds the first; on SQLite the transaction itself takes the database's write lock at BEGIN (``transaction_mode``
IMMEDIATE), which serialises them the same way.  Accounts without a window pay nothing of this.

**Campaigns**: a recipient who got (or is about to get) the same content within the window is not skipped silently
but failed at once with ``reasons.DUPLICATE_REASON`` (no WeChat call), so the campaign's counts and failure list
say what happened to every recipient.  This is decided as the recipients are added; a single send racing with a
campaign's expansion is not serialised with it (the campaign's rows are inserted in bulk).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from accounts.models import OfficialAccount
from messaging.models import Campaign, Channel, Message
from messaging.reasons import DUPLICATE_REASON


def content_hash(
    *,
    template_id: str,
    data: Mapping[str, Any],
    url: str,
    miniprogram: Mapping[str, str] | None,
    channel: str = Channel.TEMPLATE,
) -> str:
    """A hash of what a message says (template, data, link), without its recipient.

    ``template_id`` and ``url`` are the ones of the message's channel (a subscription notification's priTmplId and
    page).  The channel counts only when it is not ``template``: a template message hashes as it did before there
    were channels, so the window still finds the copies accepted before then.
    """
    said: dict[str, Any] = {
        "template_id": template_id,
        "data": data,
        "url": url or "",
        "miniprogram": miniprogram or None,
    }
    if channel != Channel.TEMPLATE:
        said["channel"] = str(channel)
    canonical = json.dumps(said, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def window_of(account: OfficialAccount) -> timedelta | None:
    """The account's duplicate window, or None when it is off."""
    minutes = account.duplicate_window_minutes
    return timedelta(minutes=minutes) if minutes else None


def originals(account_id: int, openid: str, content: str, since: datetime) -> QuerySet[Message]:
    """Messages of the window that a new one with this content would duplicate, the first first."""
    return (
        Message.objects.filter(touser=openid, created_at__gte=since, account_id=account_id, content_hash=content)
        .exclude(status=Message.Status.FAILED)
        .order_by("created_at", "pk")
    )


@contextmanager
def guarded(account_id: int, openid: str, content: str) -> Iterator[None]:
    """A transaction in which no other request can accept the same content for the same user (see the module)."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            digest = hashlib.sha256(f"dup:{account_id}:{openid}:{content}".encode()).digest()
            key = int.from_bytes(digest[:8], "big", signed=True)
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
        yield


def campaign_duplicates(messages: QuerySet[Message], *, account: OfficialAccount, content: str, now: datetime):
    """The queued campaign ``messages`` whose recipient has another message of the same content in the window, to
    be failed with :func:`duplicate_changes`; None when the account has no window.  The caller updates them, with or
    without the events of :mod:`messaging.events` as its transaction needs."""
    window = window_of(account)
    if window is None:
        return None
    earlier = originals(account.pk, OuterRef("touser"), content, now - window)
    earlier = earlier.exclude(campaign_id=OuterRef("campaign_id"))
    return messages.filter(status=Message.Status.QUEUED).filter(Exists(earlier.values("pk")))


def duplicate_changes(now: datetime) -> dict[str, Any]:
    """The columns of a campaign message failed as a duplicate."""
    return {
        "status": Message.Status.FAILED,
        "errcode": None,
        "errmsg": DUPLICATE_REASON,
        "finished_at": now,
        "updated_at": now,
    }


# Duplicates of a campaign that the console names one by one.
COPIES_SHOWN = 5


@dataclass(frozen=True)
class EarlierCopy:
    openid: str
    original_id: int
    minutes_ago: int


@dataclass(frozen=True)
class EarlierCopies:
    """A campaign's recipients failed as duplicates: how many, and the first few with the message they got."""

    total: int
    shown: list[EarlierCopy]


def earlier_copies(campaign: Campaign, now: datetime | None = None) -> EarlierCopies:
    """The campaign's recipients not sent to as duplicates, each of the first COPIES_SHOWN with the earlier message
    of the same content (the first of the window) and how long ago it was accepted."""
    now = now or timezone.now()
    failed = Message.objects.filter(campaign=campaign, status=Message.Status.FAILED, errmsg=DUPLICATE_REASON)
    total = failed.count()
    window = window_of(campaign.account)
    shown: list[EarlierCopy] = []
    if total and window is not None:
        for message in failed.order_by("pk")[:COPIES_SHOWN]:
            since = message.created_at - window
            original = (
                originals(campaign.account_id, message.touser, message.content_hash, since)
                .exclude(campaign=campaign)
                .only("pk", "created_at")
                .first()
            )
            if original is not None:
                minutes = int((now - original.created_at).total_seconds() // 60)
                shown.append(EarlierCopy(message.touser, original.pk, minutes))
    return EarlierCopies(total, shown)
