"""Prometheus series of the send pipeline: send latency, WeChat's error answers, how long messages waited for a claim.

Sends and errors carry the message's ``channel`` (``template``: template/send, ``subscribe``: bizsend), so the two
APIs' latency and errcodes can be told apart; the series' names are those of the template-only days.

Observed in the qcluster worker processes in prometheus_client's multiprocess mode and exposed with every other
series of the host by ``/metrics`` (``operations.metrics``).
"""

from __future__ import annotations

from django.utils import timezone
from prometheus_client import Counter, Histogram

from messaging.models import Message
from wxnotify.wechat.errors import WeChatError

# Sends take tens of milliseconds when WeChat is well; a batch waits for the send pool, timeouts take 10 s and more.
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
SEND_LATENCY = Histogram(
    "wxnotify_send_latency_seconds",
    "Seconds from a delivery task claiming a message to WeChat's answer (or to giving up on one).",
    ["account", "result", "channel"],
    buckets=LATENCY_BUCKETS,
)
WECHAT_ERRORS = Counter(
    "wxnotify_wechat_errors",
    "Error answers from WeChat to sends (template messages and subscription notifications), by errcode.",
    ["account", "errcode", "kind", "channel"],
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
    channel = message.channel
    SEND_LATENCY.labels(appid, send_result(error), channel).observe((timezone.now() - started).total_seconds())
    if isinstance(error, WeChatError) and error.errcode is not None:
        WECHAT_ERRORS.labels(appid, str(error.errcode), error.kind.value, channel).inc()
