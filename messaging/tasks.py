"""django-q2 task entry points of the send pipeline.

django-q2 stores these dotted paths in its queue and schedule rows, so they stay importable across releases
(``deliver_messages`` and ``deliver_pending_singles`` are the paths of earlier releases).  The work itself is in
:mod:`messaging.delivery` (sending), :mod:`messaging.sweeper` (the safety net) and :mod:`messaging.dispatch`
(starting tasks).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from django.conf import settings
from django.utils import timezone

from messaging import dispatch, services, sweeper
from messaging.delivery import run_delivery
from messaging.models import Message
from messaging.work import CampaignWork, ListedWork
from wxnotify.tracing import traced

logger = logging.getLogger("wxnotify.messaging")


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


def sweep_messages() -> dict[str, int]:
    """The scheduled safety net (every minute); see messaging.sweeper."""
    return sweeper.sweep()
