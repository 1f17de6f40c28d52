"""The process-wide pool of threads that make WeChat calls for delivery tasks.

Pool threads only talk HTTP (over the client's pooled session); everything the database needs is done by the task's
own thread, so a claim of dozens of messages costs a handful of queries however long WeChat takes.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.db import connections

from messaging.outcomes import CancelledBeforeSend
from wxnotify.wechat.client import WeChatClient

_pool: ThreadPoolExecutor | None = None
_pool_pid: int | None = None
_pool_lock = threading.Lock()


def send_pool() -> ThreadPoolExecutor:
    """One bounded pool per process (rebuilt after a fork): WXNOTIFY_SEND_CONCURRENCY sends in flight at most."""
    global _pool, _pool_pid
    pid = os.getpid()
    if _pool is not None and _pool_pid == pid:
        return _pool
    with _pool_lock:
        if _pool is None or _pool_pid != pid:
            _pool = ThreadPoolExecutor(
                max_workers=settings.WXNOTIFY_SEND_CONCURRENCY, thread_name_prefix="wxnotify-send"
            )
            _pool_pid = pid
        return _pool


def send_one(client: WeChatClient, payload: dict[str, Any], campaign_id: int | None, cancelled: set[int]) -> int:
    """Runs in a pool thread: one HTTP call, unless the message's campaign was cancelled since its claim.

    A token refresh may have used the database cache here, and pool threads live on, so any connection opened by
    this thread is closed rather than left idle.
    """
    if campaign_id is not None and campaign_id in cancelled:
        raise CancelledBeforeSend
    try:
        return client.send_template_message(**payload)
    finally:
        for thread_connection in connections.all(initialized_only=True):
            thread_connection.close()
