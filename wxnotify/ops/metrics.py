"""Prometheus metrics: what the send pipeline, the callbacks and the token manager did, and the message log now.

Sends happen in qcluster worker processes and callbacks in web workers, so counters live in prometheus_client's
multiprocess mode: each process writes its own values to files under ``PROMETHEUS_MULTIPROC_DIR`` (set by the
settings, ``WXNOTIFY_METRICS_DIR``) and ``/metrics`` sums the files of every process on the host. Each host
therefore exposes the counters of its own processes, and Prometheus scrapes every host (the standard per-host
scrape; sum across ``instance`` in queries). The directory must be emptied whenever the host's services are
(re)started, before they start, never while they run.

Message counts by status are not counters: they are read from the database at scrape time, so every host reports
the same shared numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count
from django.utils import timezone
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from messaging.models import Message
from wxnotify.ops.health import queue_lag_seconds
from wxnotify.wechat.errors import WeChatError

logger = logging.getLogger("wxnotify.ops")

# Sends take tens of milliseconds when WeChat is well; a batch waits for the send pool, timeouts take 10 s and more.
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
SEND_LATENCY = Histogram(
    "wxnotify_send_latency_seconds",
    "Seconds from a delivery task claiming a message to WeChat's answer (or to giving up on one).",
    ["account", "result"],
    buckets=LATENCY_BUCKETS,
)
WECHAT_ERRORS = Counter(
    "wxnotify_wechat_errors",
    "Error answers from WeChat to template message sends, by errcode.",
    ["account", "errcode", "kind"],
)
TOKEN_FETCHES = Counter(
    "wxnotify_token_fetches",
    "access_tokens fetched from WeChat.",
    ["account", "endpoint", "force_refresh"],
)
# Retries are sent at their backoff time by whichever delivery task polls next; seconds late, and a new single
# message's wait from acceptance to its claim.  Both are well under a second when the workers keep up.
WAIT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
RETRY_LATENESS = Histogram(
    "wxnotify_retry_lateness_seconds",
    "Seconds from a message's scheduled next attempt (backoff, hold or recovery) to its claim by a delivery task.",
    ["account"],
    buckets=WAIT_BUCKETS,
)
SINGLE_CLAIM_WAIT = Histogram(
    "wxnotify_single_claim_wait_seconds",
    "Seconds from accepting a single message to its first claim by a delivery task.",
    ["account"],
    buckets=WAIT_BUCKETS,
)


def send_result(error: BaseException | None) -> str:
    """The ``result`` label of a send: ok, wechat_error (an errcode), no_answer (network) or internal_error."""
    if error is None:
        return "ok"
    if isinstance(error, WeChatError):
        return "wechat_error" if error.errcode is not None else "no_answer"
    return "internal_error"


def record_claim(message: Message) -> None:
    """Record how long a just-claimed message waited: past its retry time, or since acceptance for a new single."""
    if message.attempted_at is None:
        return
    if message.next_attempt_at is not None:
        lateness = (message.attempted_at - message.next_attempt_at).total_seconds()
        RETRY_LATENESS.labels(message.account.appid).observe(max(0.0, lateness))
    elif message.campaign_id is None and message.attempts == 1:
        wait = (message.attempted_at - message.created_at).total_seconds()
        SINGLE_CLAIM_WAIT.labels(message.account.appid).observe(max(0.0, wait))


def record_send(message: Message, error: BaseException | None) -> None:
    """Record one finished send attempt (called by the delivery task as it collects each answer)."""
    appid = message.account.appid
    started = message.attempted_at or timezone.now()
    SEND_LATENCY.labels(appid, send_result(error)).observe((timezone.now() - started).total_seconds())
    if isinstance(error, WeChatError) and error.errcode is not None:
        WECHAT_ERRORS.labels(appid, str(error.errcode), error.kind.value).inc()


def count_token_fetch(sender: Any, *, appid: str, force_refresh: bool, token_endpoint: str, **kwargs: Any) -> None:
    """Receiver of ``wxnotify.wechat.tokens.token_fetched``."""
    TOKEN_FETCHES.labels(appid, token_endpoint, "true" if force_refresh else "false").inc()


class MessageLogCollector(Collector):
    """Gauges read from the shared database at scrape time: messages by status and the queue lag."""

    def collect(self) -> Iterator[Metric]:
        try:
            counts = dict(Message.objects.order_by().values_list("status").annotate(count=Count("pk")))
            lag = queue_lag_seconds(timezone.now())
        except DatabaseError:
            logger.warning("Message gauges left out of /metrics: the database is unavailable", exc_info=True)
            return
        messages = GaugeMetricFamily("wxnotify_messages", "Messages in the log by current status.", labels=["status"])
        for status in Message.Status.values:
            messages.add_metric([status], counts.get(status, 0))
        yield messages
        yield GaugeMetricFamily(
            "wxnotify_queue_lag_seconds",
            "Age of the oldest due queued message since it became due (0 when none waits).",
            value=lag,
        )


def render(accept: str | None) -> tuple[bytes, str]:
    """The exposition of this host's processes and the database gauges, in the format ``accept`` asks for."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(MessageLogCollector())
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


def clear_multiprocess_files() -> int:
    """Delete the per-process metric files of earlier runs; call it before a host's services start, never while
    they run (a live process would lose its counters). Returns how many files were removed."""
    removed = 0
    for path in settings.WXNOTIFY_METRICS_DIR.glob("*.db"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed
