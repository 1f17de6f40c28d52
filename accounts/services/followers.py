"""Followers from WeChat: the full sync (paged openids, profiles in concurrent batches, upserts in bulk), its
queueing and bookkeeping, and the profile fetched for a follower a callback just met.

The statements that write a page live in :mod:`accounts.services.follower_upserts`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import connections, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _
from django_q.tasks import async_task

from accounts.clients import wechat_client_for
from accounts.models import Follower, FollowerSync, OfficialAccount
from accounts.services.credentials import record_wechat_error
from accounts.services.follower_upserts import FollowerUpserts
from wxnotify.wechat.client import WeChatClient
from wxnotify.wechat.errors import WeChatError, describe_wechat_error

logger = logging.getLogger("wxnotify.accounts")

# A sync writes about 20,000 followers a second against the sandbox (bench/RESULTS.md), fewer behind WeChat's
# its own.  A sync still unfinished after this long lost its worker; a re-delivered copy of the running task
# finds the row claimed and does nothing.
FOLLOWER_SYNC_TIMEOUT = 3600
# WeChat's user/info/batchget takes at most 100 openids per call.
USER_INFO_BATCH_SIZE = 100
# Batchget calls in flight at once during a sync: enough to hide WeChat's round trips (1,000 calls for 100,000
# followers), few enough not to spend the account's API quota in bursts.
USER_INFO_CONCURRENCY = 8


@dataclass(frozen=True)
class FollowerSyncResult:
    total: int
    created: int
    updated: int
    unsubscribed: int


def _store_followers(account: OfficialAccount, infos: list[dict], now: datetime) -> tuple[int, int, int]:
    """Upsert one page of batchget entries; returns (created, updated, unsubscribed)."""
    upserts = FollowerUpserts(account, now)
    subscribed_rows, unsubscribed_rows = [], []
    for info in infos:
        if info.get("subscribe") == 1:
            subscribed_rows.append(upserts.subscribed_row(info))
        else:
            unsubscribed_rows.append(upserts.unsubscribed_row(info))
    created = upserts.write(subscribed_rows, subscribed=True) + upserts.write(unsubscribed_rows, subscribed=False)
    return created, len(infos) - created, len(unsubscribed_rows)


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _batch_get_user_info(client: WeChatClient, openids: list[str]) -> list[dict]:
    """Runs in a pool thread: one batchget call.  A token refresh may have used the database cache here, and
    the thread may take more calls, so any connection this thread opened is closed rather than left idle."""
    try:
        return client.batch_get_user_info(openids)
    finally:
        for thread_connection in connections.all(initialized_only=True):
            thread_connection.close()


@dataclass
class _FollowerPage:
    """One ``user/get`` page, its batchget calls in flight in the pool (in page order)."""

    total: int
    openids: list[str]
    next_openid: str | None
    details: list[Future[list[dict]]]

    def infos(self) -> list[dict]:
        """The page's batchget entries in order; the first failing call (in page order) raises, and calls
        not started yet are cancelled."""
        try:
            return [info for detail in self.details for info in detail.result()]
        except BaseException:
            self.cancel()
            raise

    def cancel(self) -> None:
        for detail in self.details:
            detail.cancel()


def _fetch_page(client: WeChatClient, pool: ThreadPoolExecutor, next_openid: str | None, total: int) -> _FollowerPage:
    """Ask for a page of the follower list, here, and start its batchget calls in the pool."""
    reply = client.get_followers(next_openid)
    openids = (reply.get("data") or {}).get("openid") or []
    details = [pool.submit(_batch_get_user_info, client, chunk) for chunk in _chunks(openids, USER_INFO_BATCH_SIZE)]
    return _FollowerPage(int(reply.get("total", total)), openids, reply.get("next_openid"), details)


def sync_followers(
    account: OfficialAccount, *, progress: Callable[[int, int], None] | None = None
) -> FollowerSyncResult:
    """Bring the account's followers in line with WeChat, page by page, in flat memory.

    A ``user/get`` page holds ≤10,000 openids, and each page is written in one transaction.  Its batchget
    calls (100 openids each) run ``USER_INFO_CONCURRENCY`` at a time in a thread pool, and while a page is
    written the next page is already being fetched: WeChat's round trips, one after another, were most of a
    sync's time.  So at most two pages of details are held at a time, whatever the number of followers.
    All database work stays in the calling thread (and its transaction); the pool threads only call WeChat.
    Followers WeChat no longer lists are found at the end by their ``synced_at`` being older than the start
    of this run, not by a set of openids kept in memory; rows a subscribe callback touched during the run
    (``updated_at`` after the start) are left alone.  Bindings to users are never changed.
    ``progress(processed, total)`` is called after each page.
    WeChat errors propagate as ``WeChatError``; pages already written stay written (a page fetched in full
    is written before the error fetching the next one is raised).
    """
    client = wechat_client_for(account)
    started = timezone.now()
    processed = created = updated = unsubscribed = 0
    pool = ThreadPoolExecutor(max_workers=USER_INFO_CONCURRENCY, thread_name_prefix="wxnotify-follower-sync")
    upcoming: _FollowerPage | None = None
    try:
        page = _fetch_page(client, pool, None, total=0)
        while page.openids:
            infos = page.infos()
            upcoming, failure = None, None
            if page.next_openid:
                try:
                    upcoming = _fetch_page(client, pool, page.next_openid, total=page.total)
                except WeChatError as error:
                    failure = error
            with transaction.atomic():
                page_created, page_updated, page_unsubscribed = _store_followers(account, infos, timezone.now())
            created += page_created
            updated += page_updated
            unsubscribed += page_unsubscribed
            processed += len(page.openids)
            if progress is not None:
                progress(processed, page.total)
            if failure is not None:
                raise failure
            if upcoming is None:
                break
            page = upcoming
    finally:
        if upcoming is not None:
            upcoming.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
    now = timezone.now()
    unsubscribed += (
        Follower.objects.filter(account=account, subscribed=True, updated_at__lt=started)
        .filter(Q(synced_at__isnull=True) | Q(synced_at__lt=started))
        .update(subscribed=False, unsubscribed_at=now, updated_at=now)
    )
    return FollowerSyncResult(total=page.total, created=created, updated=updated, unsubscribed=unsubscribed)


def start_follower_sync(
    account: OfficialAccount, *, requested_by: AbstractBaseUser | None = None
) -> FollowerSync | None:
    """Record a new follower sync; None when one is already queued or running for this account."""
    unfinished = FollowerSync.objects.filter(
        account=account, status__in=[FollowerSync.Status.QUEUED, FollowerSync.Status.RUNNING]
    )
    cutoff = timezone.now() - timedelta(seconds=FOLLOWER_SYNC_TIMEOUT)
    unfinished.filter(queued_at__lt=cutoff).update(
        status=FollowerSync.Status.FAILED,
        error=_("Abandoned: the worker running it stopped."),
        finished_at=timezone.now(),
    )
    if unfinished.exists():
        return None
    return FollowerSync.objects.create(account=account, requested_by=requested_by)


def queue_follower_sync(
    account: OfficialAccount, *, requested_by: AbstractBaseUser | None = None
) -> FollowerSync | None:
    """Start a follower sync in the task queue (see ``accounts.tasks.run_follower_sync``)."""
    sync = start_follower_sync(account, requested_by=requested_by)
    if sync is not None:
        async_task(
            "accounts.tasks.run_follower_sync",
            sync.pk,
            task_name=f"Sync followers of {account.appid}",
            timeout=FOLLOWER_SYNC_TIMEOUT,
        )
    return sync


def run_follower_sync(
    sync: FollowerSync, *, progress: Callable[[int, int], None] | None = None
) -> FollowerSyncResult | None:
    """Run a recorded sync once, keeping its row current; a sync already picked up is not run again.

    Delivery may repeat (the ORM broker re-delivers), so the row is claimed with a conditional update.
    A WeChat error marks the sync failed with the error in words and is recorded on the account.
    """
    now = timezone.now()
    claimed = FollowerSync.objects.filter(pk=sync.pk, status=FollowerSync.Status.QUEUED).update(
        status=FollowerSync.Status.RUNNING, started_at=now
    )
    if not claimed:
        return None
    sync.status, sync.started_at = FollowerSync.Status.RUNNING, now

    def report(processed: int, total: int) -> None:
        FollowerSync.objects.filter(pk=sync.pk).update(processed=processed, total=total)
        sync.processed, sync.total = processed, total
        if progress is not None:
            progress(processed, total)

    try:
        result = sync_followers(sync.account, progress=report)
    except WeChatError as error:
        record_wechat_error(sync.account, error)
        _finish(sync, status=FollowerSync.Status.FAILED, error=describe_wechat_error(error))
        return None
    except Exception as error:
        logger.exception("Follower sync %s of %s failed", sync.pk, sync.account.appid)
        _finish(sync, status=FollowerSync.Status.FAILED, error=_("Unexpected error: %s") % type(error).__name__)
        raise
    _finish(
        sync,
        status=FollowerSync.Status.DONE,
        total=result.total,
        created=result.created,
        updated=result.updated,
        unsubscribed=result.unsubscribed,
    )
    return result


def _finish(sync: FollowerSync, **fields) -> None:
    fields["finished_at"] = timezone.now()
    FollowerSync.objects.filter(pk=sync.pk).update(**fields)
    for name, value in fields.items():
        setattr(sync, name, value)


def update_follower_profile(follower_id: int) -> None:
    """Fill a follower's unionid, subscribe scene (and a missing remark) from ``user/info``.

    Queued by the callbacks for a follower they just met (``accounts.tasks.fetch_follower_profile``).

    Only those columns are written (``update``), so a subscribe or unsubscribe processed meanwhile is not
    overwritten; a user who no longer follows gets nothing back from WeChat and is left alone.
    """
    follower = Follower.objects.select_related("account").filter(pk=follower_id).first()
    if follower is None or not follower.account.is_active:
        return
    try:
        info = wechat_client_for(follower.account).get_user_info(follower.openid)
    except WeChatError as exc:
        logger.warning("Profile of follower %s not fetched: %s", follower_id, exc)
        return
    if not info.get("subscribe"):
        return
    now = timezone.now()
    changes = {
        "unionid": str(info.get("unionid") or "")[:64],
        "subscribe_scene": str(info.get("subscribe_scene") or "")[:64],
        "synced_at": now,
        "updated_at": now,
    }
    if not follower.remark:  # once set, the remark is our operators' note (as in the follower sync)
        changes["remark"] = str(info.get("remark") or "")[:100]
    Follower.objects.filter(pk=follower_id).update(**changes)
