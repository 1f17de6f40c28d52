"""Telling the workers there are webhook events to deliver (best effort: the schedule is the safety net).

``WORKING_KEY`` is up while the first delivery task runs (it refreshes it every round); a commit that wrote events
enqueues a task only when the key is down.  A task about to stop takes the key down *before* its last look for work,
so events committed while the key was up are seen by that look, and later ones find the key down and start a task.
Helpers (:func:`start_helpers`) hold keys of their own slots.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.cache import cache
from django_q.tasks import async_task

logger = logging.getLogger("wxnotify.webhooks")

WORKING_KEY = "webhooks:working"
WORKING_KEY_SECONDS = 30
DELIVER_TASK = "webhooks.tasks.deliver_webhooks"


def working_key(slot: int) -> str:
    return WORKING_KEY if slot == 0 else f"{WORKING_KEY}:{slot}"


def start_helpers() -> None:
    """Start a task in every free helper slot (called by a task that finds more work than it can claim at once)."""
    try:
        for slot in range(1, settings.WXNOTIFY_WEBHOOK_TASKS):
            if cache.get(working_key(slot)) is None and cache.add(working_key(slot), 1, timeout=WORKING_KEY_SECONDS):
                async_task(DELIVER_TASK, slot, save=False)
    except Exception:
        logger.exception("Could not start webhook helper tasks; one task goes on")


def nudge_workers() -> None:
    """Make sure a task will deliver the events committed before this call."""
    try:
        if cache.get(WORKING_KEY) is None and cache.add(WORKING_KEY, 1, timeout=WORKING_KEY_SECONDS):
            async_task(DELIVER_TASK, save=False)
    except Exception:
        logger.exception("Could not signal webhook events to the workers; the schedule will deliver them")
