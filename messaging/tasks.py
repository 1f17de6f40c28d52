"""django-q2 task entry points of the send pipeline.

django-q2 stores these dotted paths in its queue and schedule rows, so they stay importable across releases
(``deliver_messages`` and ``deliver_pending_singles`` are the paths of earlier releases).  The work itself is in
:mod:`messaging.delivery` (sending), :mod:`messaging.sweeper` (the safety net) and :mod:`messaging.dispatch`
(starting tasks).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from messaging import dispatch, services, sweeper
from messaging.delivery import run_delivery
from messaging.models import Message
from messaging.services.ledger import poll_all_intercepted
from messaging.work import CampaignWork, ListedWork
from wxnotify.tracing import traced

logger = logging.getLogger("wxnotify.messaging")

# Between two batches of received receipts smaller than a full one, the task waits this long for more: in a burst
# the next batch then carries a few hundred receipts rather than a handful, for about the same cost.
RECEIPT_BATCH_PAUSE_SECONDS = 0.2
# A receipts task hands over after this long (django-q2 kills a task after 120 s); the next receipt starts the next.
RECEIPTS_TASK_SECONDS = 60.0


def deliver_due_messages(waiter: bool = False) -> dict[str, int]:
    """Send new single messages and due retries until none is left; ``waiter`` stays for retries due soon.

    Returns counts by outcome (``sent``, ``failed``, ``retried``, ``held``) for the task result.
    """
    return run_delivery(waiter=waiter)


def deliver_pending_singles() -> dict[str, int]:
    """The task path of earlier releases for :func:`deliver_due_messages`."""
    return deliver_due_messages()


def deliver_campaign(campaign_id: int, trace_id: str = "") -> dict[str, int]:
    """Work through a campaign's queued messages (besides the urgent work every delivery task serves)."""
    return run_delivery(CampaignWork(campaign_id), trace_id=trace_id)


def deliver_messages(message_ids: Sequence[int], trace_id: str = "") -> dict[str, int]:
    """Deliver the given messages (each sent at most once at a time; see messaging.delivery)."""
    return run_delivery(ListedWork(message_ids), trace_id=trace_id)


def expand_campaign(campaign_id: int, trace_id: str = "") -> int:
    """Add an accepted "all subscribed" campaign's recipients, a chunk at a time; returns how many were added."""
    with traced(trace_id):
        return services.expand_all_subscribed(campaign_id, trace_id=trace_id)


def dispatch_campaign(campaign_id: int, trace_id: str = "") -> int:
    """Start the campaign's delivery tasks: as many as its size can keep busy, at most WXNOTIFY_CAMPAIGN_PARALLELISM.

    Returns how many were enqueued.
    """
    with traced(trace_id):
        queued = Message.objects.claimable(timezone.now()).filter(campaign_id=campaign_id).count()
        if not queued:
            services.finish_campaigns([campaign_id])
            return 0
        per_task = 4 * settings.WXNOTIFY_SEND_CONCURRENCY
        tasks = max(1, min(settings.WXNOTIFY_CAMPAIGN_PARALLELISM, math.ceil(queued / per_task)))
        for _ in range(tasks):
            dispatch.enqueue_campaign_delivery(campaign_id, trace_id)
        logger.info("Campaign #%s: %d message(s) queued, %d delivery task(s) started", campaign_id, queued, tasks)
        return tasks


def apply_received_receipts() -> int:
    """Apply the delivery receipts callbacks stored, in batches, until none is left; returns how many it took.

    Holds ``RECEIPTS_ALIVE_KEY`` while at work, so callbacks enqueue no more tasks meanwhile.  When a look finds
    nothing it takes the key down and lingers: for ``RECEIPTS_LINGER_SECONDS`` it goes on applying what arrives,
    and only a look that starts after that and drains what is there ends it, which is what lets web processes rely on a
    task they saw for ``RECEIPTS_TRUST_SECONDS`` without reading the key (:mod:`messaging.dispatch`).  Receipts that
    arrive while it lingers make it hold the key again; after ``RECEIPTS_TASK_SECONDS`` it ends after its linger
    anyway, and the next receipt enqueues a fresh task.  Run inline (``WXNOTIFY_TASKS_SYNC``), it does not wait.
    """
    inline = settings.Q_CLUSTER.get("sync", False)
    deadline = time.monotonic() + RECEIPTS_TASK_SECONDS
    taken = 0
    while True:
        taken += _apply_while_alive(inline, deadline)
        cache.delete(dispatch.RECEIPTS_ALIVE_KEY)
        if inline:
            while batch := services.apply_received_receipts():
                taken += batch
            return taken
        late = _apply_lingering()
        taken += late
        if not late or time.monotonic() >= deadline:
            return taken


def _apply_while_alive(inline: bool, deadline: float) -> int:
    """Batches under the key until one finds nothing (or the task's time is up); short ones a pause apart."""
    taken = 0
    while time.monotonic() < deadline:
        cache.set(dispatch.RECEIPTS_ALIVE_KEY, 1, timeout=dispatch.ALIVE_KEY_SECONDS)
        batch = services.apply_received_receipts()
        taken += batch
        if not batch:
            break
        if batch < services.RECEIPT_BATCH_SIZE and not inline:
            time.sleep(RECEIPT_BATCH_PAUSE_SECONDS)
    return taken


def _apply_lingering() -> int:
    """With the key down, apply what arrives for ``RECEIPTS_LINGER_SECONDS``, then until a look that began after
    that leaves nothing behind (a batch short of full): every receipt committed within the linger is taken, and a
    steady stream of later ones cannot keep the task here."""
    until = time.monotonic() + dispatch.RECEIPTS_LINGER_SECONDS
    taken = 0
    while True:
        started = time.monotonic()
        batch = services.apply_received_receipts()
        taken += batch
        if started >= until and batch < services.RECEIPT_BATCH_SIZE:
            return taken
        if not batch:
            time.sleep(min(RECEIPT_BATCH_PAUSE_SECONDS, max(until - time.monotonic(), 0.0)))


def sweep_messages() -> dict[str, int]:
    """The scheduled safety net (every minute); see messaging.sweeper."""
    return sweeper.sweep()


def poll_intercepted_messages() -> int:
    """The scheduled read of the template messages WeChat intercepted (see messaging.services.ledger)."""
    return poll_all_intercepted()
