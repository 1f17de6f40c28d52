"""The process-wide pools of threads that make WeChat calls for delivery tasks, one per lane.

Pool threads only talk HTTP (over the client's pooled session); everything the database needs is done by the task's
own thread, so a claim of dozens of messages costs a handful of queries however long WeChat takes.

Two lanes, so a campaign never makes a single message queue behind it: the *bulk* lane (WXNOTIFY_SEND_CONCURRENCY
threads) sends a task's work, a campaign's messages; the *urgent* lane (a quarter of that, at least one thread) sends
single messages and due retries.  A pool's queue is first come, first served, and a campaign task keeps twice its
threads in flight: with one pool, a campaign whose sends hang (a slow WeChat holds each until the read timeout) held
every single message of that task back as long.  Urgent work that finds its lane full overflows into the bulk lane
(messaging.delivery), so a burst of singles is as fast as before.  bench/lanes.py measured no difference on a loaded
2-CPU machine with a sandbox answering in 50 ms: there the time goes into the send round trip itself.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.db import connections

from messaging.models import Channel
from messaging.outcomes import CancelledBeforeSend
from wxnotify.wechat.client import WeChatClient

URGENT = "urgent"
BULK = "bulk"
# The urgent lane has this share of WXNOTIFY_SEND_CONCURRENCY's threads (at least one) on top of the bulk lane's.
URGENT_SHARE = 4

_pools: dict[str, ThreadPoolExecutor] = {}
_pools_pid: int | None = None
_pool_lock = threading.Lock()


def lane_threads(lane: str) -> int:
    """How many sends a process's pool of ``lane`` makes at once."""
    concurrency = settings.WXNOTIFY_SEND_CONCURRENCY
    return concurrency if lane == BULK else max(1, concurrency // URGENT_SHARE)


def send_pool(lane: str = BULK) -> ThreadPoolExecutor:
    """One bounded pool per lane and process (rebuilt after a fork): ``lane_threads(lane)`` sends at once at most."""
    global _pools_pid
    pid = os.getpid()
    pool = _pools.get(lane) if _pools_pid == pid else None
    if pool is not None:
        return pool
    with _pool_lock:
        if _pools_pid != pid:
            _pools.clear()
            _pools_pid = pid
        if lane not in _pools:
            _pools[lane] = ThreadPoolExecutor(max_workers=lane_threads(lane), thread_name_prefix=f"wxnotify-{lane}")
        return _pools[lane]


def send_one(
    client: WeChatClient, channel: str, payload: dict[str, Any], campaign_id: int | None, cancelled: set[int]
) -> int | None:
    """Runs in a pool thread: one HTTP call on the message's channel (``template/send``, or ``subscribe/bizsend``,
    whose answer may carry no msgid), unless the message's campaign was cancelled since its claim.

    A token refresh may have used the database cache here, and pool threads live on, so any connection opened by
    this thread is closed rather than left idle.
    """
    if campaign_id is not None and campaign_id in cancelled:
        raise CancelledBeforeSend
    try:
        if channel == Channel.SUBSCRIBE:
            return client.send_subscription_message(**payload)
        return client.send_template_message(**payload)
    finally:
        for thread_connection in connections.all(initialized_only=True):
            thread_connection.close()
