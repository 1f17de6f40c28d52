"""django-q2 task entry point of the webhooks app (its dotted path is stored in task and schedule rows)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.cache import cache

from webhooks import delivery, nudge

# A task hands over to the next nudge or the schedule after this long (django-q2 kills a task at its timeout).
TASK_SECONDS = 60.0


def deliver_webhooks(slot: int = 0) -> int:
    """Deliver webhook events until none is due; returns how many events and deliveries were handled.

    Started after a commit that wrote events (webhooks.nudge) and every minute by the schedule, the safety net for a
    lost nudge and for retries coming due.  A task whose claims come back full starts helpers, up to
    ``WXNOTIFY_WEBHOOK_TASKS`` side by side (``slot`` says which), so a campaign's backlog drains in parallel; the
    helpers stop when they find nothing to do.
    """
    handled = 0
    deadline = time.monotonic() + TASK_SECONDS
    key = nudge.working_key(slot)
    with ThreadPoolExecutor(max_workers=settings.WXNOTIFY_WEBHOOK_CONCURRENCY) as pool:
        while time.monotonic() < deadline:
            cache.set(key, 1, timeout=nudge.WORKING_KEY_SECONDS)
            done, full = delivery.deliver_round(pool=pool)
            if full:
                nudge.start_helpers()
            if done:
                handled += done
                continue
            # Down before the last look: events committed after it start a task of their own.
            cache.delete(key)
            done, _ = delivery.deliver_round(pool=pool)
            if not done:
                break
            handled += done
    cache.delete(key)
    return handled
