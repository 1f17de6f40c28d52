"""Actions on official accounts and their followers: syncing followers, checking credentials, recording errors."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _
from django_q.tasks import async_task

from accounts.clients import wechat_client_for
from accounts.models import Follower, FollowerSync, OfficialAccount
from wxnotify.wechat.errors import WeChatError, describe_wechat_error

logger = logging.getLogger("wxnotify.accounts")

# A sync writes roughly 2,000 followers a second here (100,000 in under a minute), far past the cluster's
# task timeout for big accounts, so its task gets its own.  A sync still unfinished after this long lost
# its worker; a re-delivered copy of the running task finds the row claimed and does nothing.
FOLLOWER_SYNC_TIMEOUT = 3600
# WeChat's user/info/batchget takes at most 100 openids per call.
USER_INFO_BATCH_SIZE = 100
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


def _store_followers(account: OfficialAccount, infos: list[dict], now: datetime) -> tuple[int, int, int]:
    """Upsert one chunk of batchget entries; returns (created, updated, unsubscribed)."""
    openids = [info["openid"] for info in infos]
    existing = set(Follower.objects.filter(account=account, openid__in=openids).values_list("openid", flat=True))
    subscribed_rows, unsubscribed_rows = [], []
    for info in infos:
        if info.get("subscribe") == 1:
            subscribed_rows.append(
                Follower(
                    account=account,
                    openid=info["openid"],
                    unionid=info.get("unionid", ""),
                    subscribed=True,
                    subscribed_at=_timestamp(info.get("subscribe_time")),
                    source=Follower.Source.SYNC,
                    remark=info.get("remark", "")[:100],
                    subscribe_scene=info.get("subscribe_scene", ""),
                    qr_scene_str=info.get("qr_scene_str", ""),
                    synced_at=now,
                )
            )
        else:
            unsubscribed_rows.append(
                Follower(
                    account=account,
                    openid=info["openid"],
                    unionid=info.get("unionid", ""),
                    subscribed=False,
                    unsubscribed_at=now,
                    source=Follower.Source.SYNC,
                    synced_at=now,
                )
            )
    for rows, update_fields in (
        (subscribed_rows, _SUBSCRIBED_UPDATE_FIELDS),
        (unsubscribed_rows, _UNSUBSCRIBED_UPDATE_FIELDS),
    ):
        if rows:
            Follower.objects.bulk_create(
                rows, update_conflicts=True, unique_fields=["account", "openid"], update_fields=update_fields
            )
    created = len(set(openids) - existing)
    return created, len(infos) - created, len(unsubscribed_rows)


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def sync_followers(
    account: OfficialAccount, *, progress: Callable[[int, int], None] | None = None
) -> FollowerSyncResult:
    """Bring the account's followers in line with WeChat, page by page, in flat memory.

    Only one ``user/get`` page (≤10,000 openids) and its batchget details are held at a time, and each page
    is written in one transaction.  Followers WeChat no longer lists are found at the end by their
    ``synced_at`` being older than the start of this run, not by a set of openids kept in memory; rows a
    subscribe callback touched during the run (``updated_at`` after the start) are left alone.
    Bindings to users are never changed.  ``progress(processed, total)`` is called after each page.
    WeChat errors propagate as ``WeChatError``; pages already written stay written.
    """
    client = wechat_client_for(account)
    started = timezone.now()
    total = processed = created = updated = unsubscribed = 0
    next_openid = None
    while True:
        page = client.get_followers(next_openid)
        total = int(page.get("total", total))
        openids = (page.get("data") or {}).get("openid") or []
        if not openids:
            break
        infos = [info for chunk in _chunks(openids, USER_INFO_BATCH_SIZE) for info in client.batch_get_user_info(chunk)]
        now = timezone.now()
        with transaction.atomic():
            for start in range(0, len(infos), USER_INFO_BATCH_SIZE):
                page_created, page_updated, page_unsubscribed = _store_followers(
                    account, infos[start : start + USER_INFO_BATCH_SIZE], now
                )
                created += page_created
                updated += page_updated
                unsubscribed += page_unsubscribed
        processed += len(openids)
        if progress is not None:
            progress(processed, total)
        next_openid = page.get("next_openid")
        if not next_openid:
            break
    now = timezone.now()
    unsubscribed += (
        Follower.objects.filter(account=account, subscribed=True, updated_at__lt=started)
        .filter(Q(synced_at__isnull=True) | Q(synced_at__lt=started))
        .update(subscribed=False, unsubscribed_at=now, updated_at=now)
    )
    return FollowerSyncResult(total=total, created=created, updated=updated, unsubscribed=unsubscribed)


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
    """Start a follower sync in the task queue (see ``accounts.jobs.run_follower_sync``)."""
    sync = start_follower_sync(account, requested_by=requested_by)
    if sync is not None:
        async_task(
            "accounts.jobs.run_follower_sync",
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
