"""Telling the workers there are webhook events to deliver (best effort: the schedule is the safety net).

``WORKING_KEY`` is up while a delivery task runs (it refreshes it every round); a commit that wrote events enqueues
a task only when the key is down.  A task about to stop takes the key down *before* its last look for work, so
events committed while the key was up are seen by that look, and later ones find the key down and start a task.
"""

from __future__ import annotations

import logging

from django.core.cache import cache
from django_q.tasks import async_task

logger = logging.getLogger("wxnotify.webhooks")

WORKING_KEY = "webhooks:working"
WORKING_KEY_SECONDS = 30
DELIVER_TASK = "webhooks.tasks.deliver_webhooks"


def nudge_workers() -> None:
    """Make sure a task will deliver the events committed before this call."""
    try:
        if cache.get(WORKING_KEY) is None and cache.add(WORKING_KEY, 1, timeout=WORKING_KEY_SECONDS):
            async_task(DELIVER_TASK, save=False)
    except Exception:
        logger.exception("Could not signal webhook events to the workers; the schedule will deliver them")
