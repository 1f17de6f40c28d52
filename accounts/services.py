"""Actions on official accounts and their followers: syncing followers, checking credentials, recording errors,
pruning the record of processed callbacks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, connections, transaction
from django.db.models import Q, TextField
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.translation import gettext as _
from django_q.tasks import async_task

from accounts.clients import wechat_client_for
from accounts.models import Follower, FollowerSync, OfficialAccount
from wxnotify.wechat.client import WeChatClient
from wxnotify.wechat.errors import (
    SECRET_UNREADABLE_ERRCODE,
    WeChatError,
    describe_errcode,
    describe_wechat_error,
)

logger = logging.getLogger("wxnotify.accounts")

# A sync writes about 20,000 followers a second against the sandbox (bench/RESULTS.md), fewer behind WeChat's
# round trips: accounts with millions of followers run far past the cluster's task timeout, so its task gets
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


def record_wechat_error(account: OfficialAccount, error: WeChatError) -> None:
    """Remember the latest WeChat error of an account so the admin shows it next to the account."""
    now = timezone.now()
    message = describe_wechat_error(error)[:500]
    OfficialAccount.objects.filter(pk=account.pk).update(
        last_error_code=error.errcode, last_error_message=message, last_error_at=now
    )
    account.last_error_code, account.last_error_message, account.last_error_at = error.errcode, message, now


def flag_unreadable_secret(account_id: int) -> None:
    """Say on the account that its AppSecret cannot be decrypted with the configured keys (sending is held).

    Written without loading the account: loading is what fails.
    """
    OfficialAccount.objects.filter(pk=account_id).update(
        last_error_code=SECRET_UNREADABLE_ERRCODE,
        last_error_message=describe_errcode(SECRET_UNREADABLE_ERRCODE)[:500],
        last_error_at=timezone.now(),
    )


def check_connection(account: OfficialAccount) -> None:
    """Prove the credentials work without invalidating a token anyone else uses; raise ``WeChatError`` if not.

    A stable_token fetch in normal mode returns the token already in force, so it is harmless.  A classic
    ``/cgi-bin/token`` fetch would invalidate the token every other system holds, so for those accounts the
    token manager's cached token is used for a cheap read call instead (it fetches only when none is cached).
    """
    client = wechat_client_for(account)
    if account.token_endpoint == OfficialAccount.TokenEndpoint.STABLE:
        client.fetch_access_token()
    else:
        client.get_all_private_templates()


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


# --- Encryption key rotation ------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class KeyRotationReport:
    """What ``reencrypt_secrets`` found or did: AppSecrets under the first key before and after, cached tokens."""

    app_secrets: int
    moved: int
    cached_tokens: int


def reencrypt_secrets(*, dry_run: bool = False) -> KeyRotationReport:
    """Seal every AppSecret, and every access_token in the shared cache, under the first WXNOTIFY_ENCRYPTION_KEYS key.

    Only values under another key are rewritten (``moved``), with ``update()`` so that a rotation changes no
    ``updated_at``; the AppSecrets in one transaction, so a value no configured key opens stops the run before
    anything changed, naming its account. With ``dry_run`` nothing is written: ``moved`` is what a run would move,
    and 0 means the other keys can be dropped. Cached tokens expire within two hours anyway; re-sealing them keeps
    every host from fetching a new one once the old key is gone.
    """
    from wxnotify import encryption
    from wxnotify.wechat.tokens import default_token_manager

    moved = 0
    with transaction.atomic():
        rows = (
            OfficialAccount.objects.select_for_update()
            .exclude(app_secret="")
            .annotate(sealed=Cast("app_secret", output_field=TextField()))  # the stored ciphertext, not decrypted
            .values_list("pk", "appid", "sealed")
        )
        for pk, appid, sealed in rows:
            if encryption.is_under_first_key(sealed):
                continue
            try:
                plain = encryption.decrypt(sealed)
            except encryption.UndecryptableError:
                raise encryption.UndecryptableError(
                    f"The AppSecret of {appid} opens with no key of WXNOTIFY_ENCRYPTION_KEYS; nothing was changed."
                ) from None
            moved += 1
            if not dry_run:
                OfficialAccount.objects.filter(pk=pk).update(app_secret=plain)
        total = len(rows)
    cached_tokens = 0
    if not dry_run:
        manager = default_token_manager()
        for appid in OfficialAccount.objects.values_list("appid", flat=True):
            cached_tokens += manager.reencrypt_cached(appid)
    return KeyRotationReport(app_secrets=total, moved=moved, cached_tokens=cached_tokens)
