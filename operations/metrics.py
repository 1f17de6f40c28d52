"""Prometheus metrics: ``/metrics`` exposes what the send pipeline, the callbacks and the token manager did, and
the message log now.  Each app declares the series of its own work (``messaging.metrics``, ``callbacks.metrics``;
token fetches here, counted from ``wxnotify.wechat.tokens.token_fetched``); this module exposes them all.

Sends happen in qcluster worker processes and callbacks in web workers, so counters live in prometheus_client's
multiprocess mode: each process writes its own values to files under ``PROMETHEUS_MULTIPROC_DIR`` (set by the
settings, ``WXNOTIFY_METRICS_DIR``) and ``/metrics`` sums the files of every process on the host. Each host
therefore exposes the counters of its own processes, and Prometheus scrapes every host (the standard per-host
scrape; sum across ``instance`` in queries). The directory must be emptied whenever the host's services are
(re)started, before they start, never while they run.

The messages waiting or being sent (``queued``, ``sending``) are not counters: they are counted in the database at
scrape time, so every host reports the same shared numbers.  Only those two statuses are counted: their rows are the
work in progress, found through the ``message_status_due`` index (status first), so a scrape costs a few index
range scans as long as the backlog, never a pass over the message history, which only grows.  What became of the
finished ones is counted where it happens: ``wxnotify_send_latency_seconds_count{result}`` (every send attempt by
outcome), ``wxnotify_wechat_errors_total`` and ``wxnotify_callback_requests_total``; the admin's dashboard shows the
last 24 hours and 7 days by status.  ``bench/scrape_cost.py`` measures a scrape over 1,000,000 messages.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count
from django.utils import timezone
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from accounts.models import QuotaReading
from accounts.selectors import (
    TOKEN_CONFLICT_ALARM_THRESHOLD,
    TOKEN_CONFLICT_ALARM_WINDOW,
    beijing_day_start,
    remaining_today,
    token_conflicts_per_appid,
)
from messaging.models import Message
from operations.health import queue_lag_seconds

logger = logging.getLogger("wxnotify.ops")

TOKEN_FETCHES = Counter(
    "wxnotify_token_fetches",
    "access_tokens fetched from WeChat.",
    ["account", "endpoint", "force_refresh"],
)


TOKEN_CONFLICTS = Counter(
    "wxnotify_token_conflicts",
    "access_tokens WeChat rejected (40001/42001) while we held them as fresh: another system replaced them.",
    ["account", "errcode"],
)


def count_token_conflict(sender: Any, *, appid: str, errcode: int, **kwargs: Any) -> None:
    """Receiver of ``wxnotify.wechat.tokens.token_conflict``."""
    TOKEN_CONFLICTS.labels(appid, str(errcode)).inc()


def count_token_fetch(sender: Any, *, appid: str, force_refresh: bool, token_endpoint: str, **kwargs: Any) -> None:
    """Receiver of ``wxnotify.wechat.tokens.token_fetched``."""
    TOKEN_FETCHES.labels(appid, token_endpoint, "true" if force_refresh else "false").inc()


# The statuses of work in progress, the only ones counted at scrape time (see the module's docstring).
IN_PROGRESS_STATUSES = (Message.Status.SCHEDULED, Message.Status.QUEUED, Message.Status.SENDING)


def in_progress_counts() -> dict[str, int]:
    """Messages scheduled, queued and sending, in one index range scan (``message_status_due``), whatever the
    history's size."""
    counts = dict(
        Message.objects.filter(status__in=IN_PROGRESS_STATUSES)
        .order_by()
        .values_list("status")
        .annotate(count=Count("*"))
    )
    return {status: counts.get(status, 0) for status in IN_PROGRESS_STATUSES}


class MessageLogCollector(Collector):
    """Gauges read from the shared database at scrape time: messages in progress by status and the queue lag."""

    def collect(self) -> Iterator[Metric]:
        try:
            counts = in_progress_counts()
            lag = queue_lag_seconds(timezone.now())
        except DatabaseError:
            logger.warning("Message gauges left out of /metrics: the database is unavailable", exc_info=True)
            return
        messages = GaugeMetricFamily(
            "wxnotify_messages",
            "Messages waiting or being sent, by status (scheduled, queued, sending).",
            labels=["status"],
        )
        for status, count in counts.items():
            messages.add_metric([status], count)
        yield messages
        yield GaugeMetricFamily(
            "wxnotify_queue_lag_seconds",
            "Age of the oldest due queued message since it became due (0 when none waits).",
            value=lag,
        )


class TokenConflictCollector(Collector):
    """Conflicts in the last hour per account, read from the shared database at scrape time so every host reports
    the same numbers; ``TOKEN_CONFLICT_ALARM_THRESHOLD`` (3) or more is the alarm the dashboard shows."""

    def collect(self) -> Iterator[Metric]:
        try:
            counts = token_conflicts_per_appid(timezone.now() - TOKEN_CONFLICT_ALARM_WINDOW)
        except DatabaseError:
            logger.warning("Token conflict gauges left out of /metrics: the database is unavailable", exc_info=True)
            return
        recent = GaugeMetricFamily(
            "wxnotify_token_conflicts_last_hour",
            "access_token conflicts in the last hour, accounts with any; 3 or more is an alarm.",
            labels=["account"],
        )
        alarm = GaugeMetricFamily(
            "wxnotify_token_conflict_alarm",
            "1 while an account has 3 or more access_token conflicts within an hour, else 0 (accounts with any).",
            labels=["account"],
        )
        for appid, count in sorted(counts.items()):
            recent.add_metric([appid], count)
            alarm.add_metric([appid], 1 if count >= TOKEN_CONFLICT_ALARM_THRESHOLD else 0)
        yield recent
        yield alarm


class QuotaCollector(Collector):
    """WeChat's template-send quota per account as last read (``accounts.services.quota``), in one query over the
    readings table (a row per account), so a scrape never asks WeChat."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        try:
            readings = list(QuotaReading.objects.select_related("account").only("account__appid", *QUOTA_FIELDS))
        except DatabaseError:
            logger.warning("Quota gauges left out of /metrics: the database is unavailable", exc_info=True)
            return
        limit = GaugeMetricFamily(
            "wxnotify_wechat_quota_daily_limit", "Template sends WeChat allows the account a day.", labels=["account"]
        )
        used = GaugeMetricFamily(
            "wxnotify_wechat_quota_used", "Template sends WeChat counted today (Beijing time).", labels=["account"]
        )
        remain = GaugeMetricFamily(
            "wxnotify_wechat_quota_remain", "Template sends WeChat still allows today.", labels=["account"]
        )
        age = GaugeMetricFamily(
            "wxnotify_wechat_quota_read_age_seconds", "Seconds since the quota was read.", labels=["account"]
        )
        for reading in sorted(readings, key=lambda item: item.account.appid):
            appid = reading.account.appid
            read_today = reading.read_at >= beijing_day_start(now)
            limit.add_metric([appid], reading.daily_limit)
            used.add_metric([appid], reading.used if read_today else 0)
            remain.add_metric([appid], remaining_today(reading, now) or 0)
            age.add_metric([appid], max(0.0, (now - reading.read_at).total_seconds()))
        yield from (limit, used, remain, age)


QUOTA_FIELDS = ("daily_limit", "used", "remain", "read_at")


def render(accept: str | None) -> tuple[bytes, str]:
    """The exposition of this host's processes and the database gauges, in the format ``accept`` asks for."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(MessageLogCollector())
    registry.register(TokenConflictCollector())
    registry.register(QuotaCollector())
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
