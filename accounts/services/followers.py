"""Followers from WeChat: the full sync (paged openids, profiles in concurrent batches, upserts in bulk), its
queueing and bookkeeping, and the profile fetched for a follower a callback just met.

A little over 400 lines: the sync's pieces (pages, batchget pool, upsert shapes) only make sense together.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, connections, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _
from django_q.tasks import async_task

from accounts.clients import wechat_client_for
from accounts.models import Follower, FollowerSync, OfficialAccount
from accounts.services.credentials import record_wechat_error
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
# Followers per INSERT statement: at most 6 values each, well within SQLite's 32,766 and PostgreSQL's 65,535
# parameters.
_ROWS_PER_UPSERT = 1000
# Fields a re-sync refreshes for a follower WeChat reports as subscribed.  ``user`` (the binding),
# ``source`` and ``remark`` (our operators' note once the row exists) are deliberately absent.
_SUBSCRIBED_UPDATE_FIELDS = [
    "unionid",
    "subscribed",
    "subscribed_at",
    "subscribe_scene",
    "qr_scene_str",
    "synced_at",
    "updated_at",
]
# An unfollowed user's batchget entry carries only openid (and maybe unionid): keep what we knew.
_UNSUBSCRIBED_UPDATE_FIELDS = ["subscribed", "unsubscribed_at", "synced_at", "updated_at"]


@dataclass(frozen=True)
class FollowerSyncResult:
    total: int
    created: int
    updated: int
    unsubscribed: int


def _timestamp(value: object) -> datetime | None:
    if not value:
        return None
    return datetime.fromtimestamp(int(value), tz=UTC)


@dataclass(frozen=True)
class _UpsertShape:
    """One kind of upsert: the columns that travel per follower, the values every row shares, what a conflict
    updates."""

    per_row: tuple[str, ...]
    shared: dict[str, Any]
    update_fields: list[str]


class _FollowerUpserts:
    """Raw upserts of one page of batchget entries, each statement saying which of its rows it inserted.

    With ``bulk_create`` the ORM built a model instance and adapted every value of it one field at a time, and
    learning which followers were new took a SELECT per chunk (which PostgreSQL plans as a scan of the whole
    account while the statistics still describe an empty table): most of a sync's time at 100,000 followers.
    Here one ``INSERT … SELECT … FROM (VALUES …) ON CONFLICT DO UPDATE`` per ``_ROWS_PER_UPSERT`` entries writes
    them: only the values that differ between followers travel per row (the driver builds the statement one
    placeholder at a time), the shared ones are bound once.  Its ``RETURNING`` tells new rows from updated
    ones: a row the statement inserted has ``created_at`` equal to ``updated_at`` (both this page's time), a
    row it updated keeps its older ``created_at``.  SQLite (3.35+) and PostgreSQL share the syntax.  Every
    concrete column but the id is spelled out, so a new Follower field without a value here fails loudly
    instead of silently missing its default.
    """

    COLUMNS = (
        "account",
        "openid",
        "unionid",
        "user",
        "subscribed",
        "subscribed_at",
        "unsubscribed_at",
        "source",
        "remark",
        "subscribe_scene",
        "qr_scene_str",
        "last_interaction_at",
        "synced_at",
        "created_at",
        "updated_at",
    )
    # A VALUES column that is NULL in every row is text to PostgreSQL, which then refuses it for a timestamp
    # column: such a column is selected as a plain NULL instead.
    NULLABLE_PER_ROW = frozenset({"subscribed_at"})

    def __init__(self, account: OfficialAccount, now: datetime) -> None:
        fields = {field.name: field for field in Follower._meta.concrete_fields if not field.primary_key}
        missing = set(fields) - set(self.COLUMNS)
        if missing:
            raise RuntimeError(f"the follower sync does not fill Follower fields {sorted(missing)}")
        self.adapt_datetime = connection.ops.adapt_datetimefield_value
        adapted_now = self.adapt_datetime(now)
        shared = {
            "account": account.pk,
            "user": None,
            "source": Follower.Source.SYNC.value,
            "last_interaction_at": None,
            "synced_at": adapted_now,
            "created_at": adapted_now,
            "updated_at": adapted_now,
        }
        self.shapes = {
            True: _UpsertShape(
                per_row=("openid", "unionid", "subscribed_at", "remark", "subscribe_scene", "qr_scene_str"),
                shared={**shared, "subscribed": True, "unsubscribed_at": None},
                update_fields=_SUBSCRIBED_UPDATE_FIELDS,
            ),
            # An unfollowed user's entry carries only openid (and maybe unionid): an existing row keeps the rest.
            False: _UpsertShape(
                per_row=("openid", "unionid"),
                shared={
                    **shared,
                    "subscribed": False,
                    "subscribed_at": None,
                    "unsubscribed_at": adapted_now,
                    "remark": "",
                    "subscribe_scene": "",
                    "qr_scene_str": "",
                },
                update_fields=_UNSUBSCRIBED_UPDATE_FIELDS,
            ),
        }
        quote = connection.ops.quote_name
        self.column = {name: quote(field.column) for name, field in fields.items()}
        self.table = quote(Follower._meta.db_table)

    def subscribed_row(self, info: dict) -> tuple:
        return (
            info["openid"],
            info.get("unionid", ""),
            self.adapt_datetime(_timestamp(info.get("subscribe_time"))),
            info.get("remark", "")[:100],
            info.get("subscribe_scene", ""),
            info.get("qr_scene_str", ""),
        )

    @staticmethod
    def unsubscribed_row(info: dict) -> tuple:
        return (info["openid"], info.get("unionid", ""))

    def _statement(self, shape: _UpsertShape, rows: list[tuple]) -> tuple[str, list[Any]]:
        column = self.column
        select, params = [], []
        for name in self.COLUMNS:
            if name in shape.per_row:
                index = shape.per_row.index(name)
                if name in self.NULLABLE_PER_ROW and all(row[index] is None for row in rows):
                    select.append("NULL")
                else:
                    select.append(f"v.column{index + 1}")
            else:
                select.append("%s")
                params.append(shape.shared[name])
        row_placeholders = f"({', '.join(['%s'] * len(shape.per_row))})"
        updates = ", ".join(f"{column[name]} = EXCLUDED.{column[name]}" for name in shape.update_fields)
        # "WHERE 1 = 1" lets SQLite tell the upsert clause from a join constraint.
        sql = (
            f"INSERT INTO {self.table} ({', '.join(column[name] for name in self.COLUMNS)}) "  # noqa: S608
            f"SELECT {', '.join(select)} FROM (VALUES {', '.join([row_placeholders] * len(rows))}) AS v "
            f"WHERE 1 = 1 ON CONFLICT ({column['account']}, {column['openid']}) DO UPDATE SET {updates} "
            f"RETURNING {column['created_at']} = {column['updated_at']}"
        )
        params.extend(value for row in rows for value in row)
        return sql, params

    def write(self, rows: list[tuple], *, subscribed: bool) -> int:
        """Upsert ``rows`` (all subscribed or all not); return how many of them were new followers."""
        shape = self.shapes[subscribed]
        created = 0
        with connection.cursor() as cursor:
            for start in range(0, len(rows), _ROWS_PER_UPSERT):
                cursor.execute(*self._statement(shape, rows[start : start + _ROWS_PER_UPSERT]))
                created += sum(1 for (inserted,) in cursor.fetchall() if inserted)
        return created


def _store_followers(account: OfficialAccount, infos: list[dict], now: datetime) -> tuple[int, int, int]:
    """Upsert one page of batchget entries; returns (created, updated, unsubscribed)."""
    upserts = _FollowerUpserts(account, now)
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
