"""The safety net of the send pipeline: take back dead workers' messages, settle what may not be sent, queue the
scheduled messages whose time came, re-dispatch.

Two callers: the scheduled sweep (``messaging.tasks.sweep_messages``, every minute, and ``manage.py
sweep_messages``), and the delivery tasks, one of which calls :func:`settle` every few seconds while any runs, so a
dead worker's messages go out again about one lease after it died rather than after the next sweep.  Everything
here is idempotent: two sweeps at once (a schedule firing twice on SQLite) do no harm.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db.models import Exists, F, OuterRef, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from messaging import caps, dispatch, events, reasons, scheduling, services
from messaging.models import WAITING_STATUSES, Campaign, Channel, Message
from wxnotify.wechat.errors import OUTCOME_UNKNOWN_ERRCODE

logger = logging.getLogger("wxnotify.messaging")

WORKER_STOPPED_REASON = "The worker sending it stopped; sent again with the same client_msg_id."
UNKNOWN_PAST_WINDOW_REASON = (
    "No answer from WeChat (or its worker stopped) and the resend window has passed; it may have been delivered."
)
UNKNOWN_AFTER_LAST_ATTEMPT_REASON = "Its worker stopped during the last allowed attempt; WeChat may have delivered it."
SUBSCRIPTION_WORKER_STOPPED_REASON = (
    "The worker sending it stopped, and a subscription notification has no resend window (bizsend takes no "
    "client_msg_id, so WeChat cannot drop a resend): not sent again. It may have been delivered; its receipt will tell."
)


def recover_expired_leases(now: datetime) -> int:
    """Take back the ``sending`` messages whose worker stopped renewing its lease; returns how many were taken.

    Such a message may have reached WeChat, so the attempt's outcome is unknown: it is queued again at once (with
    the same client_msg_id, which WeChat de-duplicates) while inside the resend window and under the attempt limit;
    otherwise it fails with errcode -9001.  A subscription notification always fails with errcode -9001 (bizsend
    takes no client_msg_id: a resend could reach the user twice), first of all, so that its receipt can still turn
    it delivered (``messaging.services.receipts``).  A cancelled campaign's other messages fail as cancelled.
    """
    expired = Message.objects.lease_expired()
    # Rows claimed before attempted_at existed: their attempt began at least one lease ago.
    claimed_before = now - timedelta(seconds=settings.WXNOTIFY_SEND_LEASE_SECONDS)
    unknown_since = Coalesce(F("outcome_unknown_since"), F("attempted_at"), Value(claimed_before))
    subscriptions = list(
        expired.filter(channel=Channel.SUBSCRIBE).values_list("pk", "account_id", "touser", "template_id_sent")
    )
    unknown_as_failed = {
        "status": Message.Status.FAILED,
        "errcode": OUTCOME_UNKNOWN_ERRCODE,
        "outcome_unknown_since": unknown_since,
        "lease_expires_at": None,
        "finished_at": now,
        "updated_at": now,
    }
    unknown_subscriptions = events.update_recording(
        expired.filter(pk__in=[pk for pk, *_key in subscriptions]),
        events.MESSAGE_FAILED,
        errmsg=SUBSCRIPTION_WORKER_STOPPED_REASON,
        **unknown_as_failed,
    )
    cancelled = events.update_recording(
        expired.filter(campaign__state=Campaign.State.CANCELLED),
        events.MESSAGE_FAILED,
        status=Message.Status.FAILED,
        errcode=None,
        errmsg=reasons.CANCELLED_REASON,
        lease_expires_at=None,
        finished_at=now,
        updated_at=now,
    )
    exhausted = events.update_recording(
        expired.filter(attempts__gte=settings.WXNOTIFY_MAX_ATTEMPTS),
        events.MESSAGE_FAILED,
        errmsg=UNKNOWN_AFTER_LAST_ATTEMPT_REASON,
        **unknown_as_failed,
    )
    requeued = expired.update(
        status=Message.Status.QUEUED,
        errcode=None,
        errmsg=WORKER_STOPPED_REASON,
        outcome_unknown_since=unknown_since,
        next_attempt_at=now,
        lease_expires_at=None,
        updated_at=now,
    )
    if unknown_subscriptions:
        # Their receipts may have come while the worker was gone, and wait to be matched by recipient and template.
        services.apply_pending_subscription_receipts(tuple(key) for _pk, *key in subscriptions)
    return unknown_subscriptions + cancelled + exhausted + requeued


def fail_past_resend_window(now: datetime) -> int:
    """Fail the queued messages that may have been delivered already and can no longer be sent safely."""
    return events.update_recording(
        Message.objects.queued().past_resend_window(now),
        events.MESSAGE_FAILED,
        status=Message.Status.FAILED,
        errcode=OUTCOME_UNKNOWN_ERRCODE,
        errmsg=UNKNOWN_PAST_WINDOW_REASON,
        finished_at=now,
        updated_at=now,
    )


def fail_cancelled_leftovers(now: datetime) -> int:
    """Fail waiting messages of cancelled campaigns: a retry written back (or one deferred for quiet hours) just as
    the campaign was cancelled."""
    return events.update_recording(
        Message.objects.waiting().filter(campaign__state=Campaign.State.CANCELLED),
        events.MESSAGE_FAILED,
        status=Message.Status.FAILED,
        errcode=None,
        errmsg=reasons.CANCELLED_REASON,
        finished_at=now,
        updated_at=now,
    )


def settle(now: datetime) -> dict[str, int]:
    """Recover dead workers' messages and fail what may not be sent; cheap enough to run every few seconds."""
    result = {
        "recovered": recover_expired_leases(now),
        "failed_unknown": fail_past_resend_window(now),
        "failed_cancelled": fail_cancelled_leftovers(now),
    }
    if any(result.values()):
        logger.info("Settled: %s", result)
    return result


def work_ahead(now: datetime) -> bool:
    """Whether a task should stay to send retries and scheduled messages at their time: one is due within the wait
    horizon (or a scheduled campaign starts within it)."""
    horizon = now + timedelta(seconds=settings.WXNOTIFY_RETRY_WAIT_HORIZON_SECONDS)
    return (
        Message.objects.filter(status__in=WAITING_STATUSES, next_attempt_at__lte=horizon)
        .campaign_may_send()
        .within_resend_window(now)
        .exists()
        or Campaign.objects.filter(state=Campaign.State.SCHEDULED, send_at__lte=horizon).exists()
    )


def dispatch_lost_work(now: datetime) -> dict[str, int]:
    """Start delivery tasks for work no task is serving: after a lost task, a restart, or a broker outage."""
    result = {"singles": 0, "retries": 0, "campaigns": 0, "expansions": 0}
    due = Message.objects.claimable(now)
    if due.filter(campaign__isnull=True).exists() and cache.get(dispatch.DELIVERY_ALIVE_KEY) is None:
        dispatch.request_singles_delivery()
        result["singles"] = 1
    if work_ahead(now) and cache.get(dispatch.RETRY_WAITER_KEY) is None:
        dispatch.request_retry_waiter()
        result["retries"] = 1
    waiting = Message.objects.claimable(now).filter(campaign=OuterRef("pk"))
    for campaign_id in (
        Campaign.objects.filter(state=Campaign.State.RUNNING).filter(Exists(waiting)).values_list("pk", flat=True)
    ):
        if cache.get(dispatch.campaign_engine_key(campaign_id)) is None:
            dispatch.enqueue_campaign(campaign_id)
            result["campaigns"] += 1
    # Committed campaigns still adding recipients ("all subscribed"): their expansion task was lost.
    for campaign_id, trace_id in Campaign.objects.filter(state=Campaign.State.EXPANDING).values_list("pk", "trace_id"):
        if cache.get(dispatch.campaign_expansion_key(campaign_id)) is None:
            dispatch.enqueue_expansion(campaign_id, trace_id)
            result["expansions"] += 1
    return result


def sweep(now: datetime | None = None) -> dict[str, int]:
    """The scheduled sweep: settle, re-dispatch lost work, finish campaigns, apply received receipts left behind,
    resolve receipts that waited too long, delete the sending caps' counters of past days."""
    now = now or timezone.now()
    result = settle(now)
    result.update(scheduling.release_scheduled(now))
    for name, count in dispatch_lost_work(now).items():
        result[f"dispatched_{name}"] = count
    result["campaigns_finished"] = services.finish_campaigns()
    # Received receipts are a task's work; those of a task that died (or was never enqueued) are applied here.
    result["receipts_received"] = 0
    while batch := services.apply_received_receipts():
        result["receipts_received"] += batch
    applied, unmatched = services.resolve_stale_receipts(
        now - timedelta(seconds=settings.WXNOTIFY_RECEIPT_MATCH_WINDOW_SECONDS)
    )
    result["receipts_applied"], result["receipts_unmatched"] = applied, unmatched
    result["cap_counters_pruned"] = caps.prune_counters(now)
    if any(result.values()):
        logger.info("Sweep: %s", result)
    return result
