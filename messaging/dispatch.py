"""Telling django-q2 there is delivery work: the signals between accepting a message and a task sending it.

The rows are the truth and the task queue is only a hint, so every function here is best effort: when the broker
or the cache is down the work waits in the database and the sweeper (:mod:`messaging.sweeper`) hands it out again.

Two cache keys keep the number of tasks small without ever leaving committed work unseen:

- ``DELIVERY_ALIVE_KEY`` is up while some delivery task claims due work (new single messages, retries whose time
  came) at least every ``ALIVE_REFRESH_SECONDS``.  A request that commits a single message creates the key if it is
  missing and only then enqueues a task; a task about to stop takes the key down *before* its last claim, so a
  message committed while the key was up is claimed by that task, and one committed later finds no key and
  enqueues a task of its own.
- ``RETRY_WAITER_KEY`` is held by the one task that stays while retries are due soon (within
  ``WXNOTIFY_RETRY_WAIT_HORIZON_SECONDS``) and sends them at their time.
- ``RECEIPTS_ALIVE_KEY`` is up while a task applies received delivery receipts, the same way as the first: a
  callback that stored a receipt enqueues a task only when the key is missing.  A task that takes the key down
  still looks for new receipts for ``RECEIPTS_LINGER_SECONDS``, so a web process that saw the key up (or enqueued a
  task) need not read it again for ``RECEIPTS_TRUST_SECONDS``: a receipt it stores meanwhile is still seen by that
  task.  In a burst this is one cache read per web process and second instead of one per receipt.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

from django.conf import settings
from django.core.cache import cache
from django_q.tasks import async_task

from wxnotify.outages import log_outage

logger = logging.getLogger("wxnotify.messaging")

DELIVERY_ALIVE_KEY = "messaging:delivery-alive"
RETRY_WAITER_KEY = "messaging:retry-waiter"
# A running task refreshes its keys this often; they expire after ALIVE_KEY_SECONDS without a refresh, which is
# the longest a dead task can keep new work waiting for a task of its own.
ALIVE_REFRESH_SECONDS = 0.5
ALIVE_KEY_SECONDS = 2
WAITER_KEY_SECONDS = 10
CAMPAIGN_ENGINE_KEY_SECONDS = 30
RECEIPTS_ALIVE_KEY = "messaging:receipts-alive"
RECEIPTS_TASK = "messaging.tasks.apply_received_receipts"
# A receipts task that took its key down goes on looking for new receipts this long before it ends.
RECEIPTS_LINGER_SECONDS = 2.0
# How long a web process relies on a receipts task it saw (key up) or enqueued, without reading the key again:
# well under RECEIPTS_LINGER_SECONDS, so the task still looks after any receipt committed within it.
RECEIPTS_TRUST_SECONDS = 1.0
# Up while a task adds an "all subscribed" campaign's recipients; a chunk takes a second or two.
EXPANSION_KEY_SECONDS = 60
# Taken by the delivery task that settles the pipeline (messaging.sweeper.settle) for the next few seconds.
MAINTENANCE_KEY = "messaging:maintenance"
MAINTENANCE_KEY_SECONDS = 4


def campaign_engine_key(campaign_id: int) -> str:
    """Up while some task works through the campaign; the sweeper re-dispatches running campaigns without one."""
    return f"messaging:campaign-engine:{campaign_id}"


def campaign_expansion_key(campaign_id: int) -> str:
    """Up while a task adds the campaign's recipients; the sweeper restarts expanding campaigns without one."""
    return f"messaging:campaign-expansion:{campaign_id}"


def campaign_expansion_resume_key(campaign_id: int) -> str:
    """The id of the campaign's message whose claim restarts its paused expansion (messaging.services.expansion)."""
    return f"messaging:campaign-expansion-resume:{campaign_id}"


def resume_expansion(campaign_id: int, trace_id: str = "") -> None:
    """Restart a paused expansion unless a task is adding the campaign's recipients already (its key is up).

    The resume point stays in the cache until a task is enqueued: a delivery task that finds the key up reads the
    point again and tries once more with its next claim.  Best effort: the sweeper restarts expansions without a
    task.
    """
    try:
        if cache.add(campaign_expansion_key(campaign_id), 1, timeout=EXPANSION_KEY_SECONDS):
            cache.delete(campaign_expansion_resume_key(campaign_id))
            enqueue_expansion(campaign_id, trace_id)
    except Exception:
        logger.exception("Could not restart the expansion of campaign %s; the sweeper will", campaign_id)


def request_singles_delivery() -> None:
    """Make sure a delivery task will claim the single messages committed before this call.

    Call it after the message's transaction has committed.  The task carries no trace id: it serves many requests,
    and each message's log lines carry the message's own.
    """
    try:
        # Reading first spares a write on every send while a task is alive (on the embedded default a cache write
        # is a SQLite transaction); a key seen up is as good as a failed add.
        if cache.get(DELIVERY_ALIVE_KEY) is None and cache.add(DELIVERY_ALIVE_KEY, 1, timeout=ALIVE_KEY_SECONDS):
            async_task("messaging.tasks.deliver_due_messages", save=False)
    except Exception:
        logger.exception("Could not signal single messages to the workers; the sweeper will pick them up")


# When this process last saw a receipts task's key up or enqueued a task (time.monotonic(); -inf: never).
_receipts_task_seen_at = -math.inf


def request_receipt_application() -> None:
    """Make sure a task will apply the delivery receipts committed before this call (call it after their commit).

    While a task is at work (its key is up) this costs one cache read and no enqueue, so a burst of receipts starts
    one task, not one per receipt; and for ``RECEIPTS_TRUST_SECONDS`` after seeing the key up or enqueuing a task,
    not even the read (see the module: the task lingers longer than that).  A key that cannot be read or written is
    no reason to leave receipts waiting: a task is enqueued then as well (a cache refusing every write answers
    ``add`` with False and keeps no key).  A task run inline (``WXNOTIFY_TASKS_SYNC``) has ended when
    ``async_task`` returns, so it is never relied on afterwards.
    """
    global _receipts_task_seen_at  # one number per process; a lost update costs one cache read
    now = time.monotonic()
    if now - _receipts_task_seen_at < RECEIPTS_TRUST_SECONDS:
        return
    try:
        # Up, or put up by someone else between our read and our add: a task works or is on its way.
        key = RECEIPTS_ALIVE_KEY
        task_runs = cache.get(key) is not None or (
            not cache.add(key, 1, timeout=ALIVE_KEY_SECONDS) and cache.get(key) is not None
        )
    except Exception as exc:
        log_outage(logger, "Cache (receipt tasks enqueued without it)", exc)
        task_runs = False
    if not task_runs:
        try:
            async_task(RECEIPTS_TASK, save=False)
        except Exception as exc:
            log_outage(logger, "Task broker (received receipts left to the sweeper)", exc)
            return
    if not settings.Q_CLUSTER.get("sync", False):
        _receipts_task_seen_at = now


def request_retry_waiter() -> None:
    """Make sure one task waits for the retries due soon and sends each at its time."""
    try:
        if cache.add(RETRY_WAITER_KEY, 1, timeout=WAITER_KEY_SECONDS):
            enqueue_retry_waiter()
    except Exception:
        logger.exception("Could not start a task for due retries; the sweeper will")


def enqueue_retry_waiter() -> None:
    """Enqueue the retry waiter for a caller that holds ``RETRY_WAITER_KEY`` (and hands it over)."""
    try:
        async_task("messaging.tasks.deliver_due_messages", waiter=True, save=False)
    except Exception:
        logger.exception("Could not enqueue the retry waiter; the sweeper will start one")


def enqueue_campaign(campaign_id: int, trace_id: str = "") -> None:
    """Let a worker start the campaign's delivery tasks (keeps the accepting request short)."""
    try:
        async_task("messaging.tasks.dispatch_campaign", campaign_id, trace_id=trace_id, save=False)
    except Exception:
        logger.exception("Could not enqueue campaign %s; the sweeper will dispatch it", campaign_id)


def enqueue_expansion(campaign_id: int, trace_id: str = "") -> None:
    """Let a worker add every subscribed follower to an accepted campaign (messaging.services.expand_all_subscribed)."""
    try:
        async_task("messaging.tasks.expand_campaign", campaign_id, trace_id=trace_id, save=False)
    except Exception:
        logger.exception("Could not enqueue the expansion of campaign %s; the sweeper will", campaign_id)


def enqueue_campaign_delivery(campaign_id: int, trace_id: str = "") -> None:
    """One more task working through the campaign (a new one, or the next of a task out of time)."""
    try:
        async_task("messaging.tasks.deliver_campaign", campaign_id, trace_id=trace_id, save=False)
    except Exception:
        logger.exception("Could not enqueue delivery of campaign %s; the sweeper will dispatch it", campaign_id)


def enqueue_delivery(message_ids: Sequence[int], trace_id: str = "") -> None:
    """Hand explicit message ids to a delivery task (kept for the task path stored by earlier releases)."""
    try:
        async_task("messaging.tasks.deliver_messages", list(message_ids), trace_id=trace_id, save=False)
    except Exception:
        logger.exception("Could not enqueue delivery of %d message(s); the sweeper will pick them up", len(message_ids))
