"""django-q2 tasks of the send pipeline: deliver batches of messages, fan campaigns out, sweep.

Delivery claims its messages with one conditional UPDATE (queued and due → sending, with a lease and a
claim token), sends them concurrently through a bounded process-wide thread pool over the client's
pooled HTTP session, and writes the outcomes back in bulk from the task's own thread.  Pool threads
only talk HTTP, so a batch costs a handful of queries however large it is.

A worker may die at any moment: the rows it claimed stay "sending" until their lease runs out, then
the sweeper puts them back in the queue and they are sent again with the same ``client_msg_id``, which
WeChat de-duplicates.  The task queue is only a hint; the rows are the truth.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, connections
from django.db.models import Case, DateTimeField, F, Max, Min, Q, Value, When
from django.utils import timezone

from accounts.clients import wechat_client_for
from accounts.models import Follower, OfficialAccount
from accounts.services import record_wechat_error
from messaging import ratelimit, services
from messaging.models import Campaign, Message
from templates_app.services import flag_template_problem
from wxnotify.ops import metrics
from wxnotify.tracing import context_with_trace_id, traced
from wxnotify.wechat.client import WeChatClient
from wxnotify.wechat.errors import ErrorKind, WeChatError, classify_errcode

logger = logging.getLogger("wxnotify.messaging")

# Write outcomes back after this many results or this many seconds, whichever comes first, so msgids
# land (and early receipts find their message) while a big batch is still sending.
FLUSH_EVERY_RESULTS = 50
FLUSH_EVERY_SECONDS = 0.2
# Recipient errors that mean the follower has left the account.
UNFOLLOWED_ERRCODES = frozenset({43004, 50005})
# Configuration errors that are about the template rather than the account.
TEMPLATE_ERRCODES = frozenset({40037, 43116})
# Columns the write-back of sent messages touches.
_SENT_COLUMNS = (
    "id",
    "status",
    "msgid",
    "errcode",
    "errmsg",
    "sent_at",
    "lease_expires_at",
    "updated_at",
    "claim_token",
)
# A deliver_pending_singles task goes on taking batches for this long at most, then hands over.
SINGLES_TIME_BUDGET_SECONDS = 5.0
# At most this many due messages are re-enqueued per account and sweep; the next sweep takes the rest.
SWEEP_LIMIT_PER_ACCOUNT = 50_000


# --- The process-wide send pool -----------------------------------------------------------------------------------

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


def _send_one(client: WeChatClient, payload: dict[str, Any]) -> int:
    """Runs in a pool thread: one HTTP call.  A token refresh may have used the database cache here, and
    pool threads live on, so any connection opened by this thread is closed rather than left idle."""
    try:
        return client.send_template_message(**payload)
    finally:
        for thread_connection in connections.all(initialized_only=True):
            thread_connection.close()


# --- Outcomes -----------------------------------------------------------------------------------------------------


def backoff_seconds(attempt: int, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter: half the step fixed, half random, so retries of a batch spread out."""
    step = min(settings.WXNOTIFY_RETRY_MAX_DELAY, settings.WXNOTIFY_RETRY_BASE_DELAY * 2 ** max(0, attempt - 1))
    delay = step / 2 + random.uniform(0, step / 2)
    return max(delay, retry_after or 0.0)


def _truncate(text: str, limit: int = 512) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class _Writes:
    """Outcomes waiting to be written back, grouped so each group is one UPDATE."""

    # message id → (account id, WeChat msgid)
    sent: dict[int, tuple[int, int]] = field(default_factory=dict)
    # (errcode, errmsg) → message ids
    failed: dict[tuple[int | None, str], list[int]] = field(default_factory=lambda: defaultdict(list))
    # (errcode, errmsg) → {message id: next attempt}
    retry: dict[tuple[int | None, str], dict[int, datetime]] = field(default_factory=lambda: defaultdict(dict))
    # next attempt → message ids put back without spending their attempt (quota holds)
    released: dict[datetime, list[int]] = field(default_factory=lambda: defaultdict(list))
    unfollowed: set[tuple[int, str]] = field(default_factory=set)

    def __len__(self) -> int:
        return (
            len(self.sent)
            + sum(map(len, self.failed.values()))
            + sum(map(len, self.retry.values()))
            + sum(map(len, self.released.values()))
        )


class _Delivery:
    """One run over a batch: the given message ids, or (``message_ids=None``) the oldest due single messages."""

    def __init__(self, message_ids: Sequence[int] | None = None, *, limit: int = 0) -> None:
        self.pending_singles = message_ids is None
        self.limit = limit
        self.message_ids = [] if message_ids is None else list(message_ids)
        self.token = uuid.uuid4().hex
        self.now = timezone.now()
        self.max_attempts = settings.WXNOTIFY_MAX_ATTEMPTS
        self.writes = _Writes()
        self.results: queue.SimpleQueue[tuple[Message, Future]] = queue.SimpleQueue()
        self.in_flight = 0
        self.last_flush = time.monotonic()
        self.lease_renewed = time.monotonic()
        self.held: dict[int, float] = {}
        self.flagged_templates: set[int] = set()
        self.flagged_accounts: set[int] = set()
        self.campaign_ids: set[int] = set()
        self.counts: dict[str, int] = defaultdict(int)

    # -- claiming --

    def _due(self):
        return Message.objects.filter(pk__in=self.message_ids, status=Message.Status.QUEUED).filter(
            Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=self.now)
        )

    def _pick_pending_singles(self) -> None:
        """Take the ids of up to ``limit`` new single messages, oldest first; the conditional claim below
        decides which of them are ours when another task picked the same ones.

        Only messages never tried: a retry waits for its time and the sweeper, as campaign messages do, so a
        task taking batch after batch never hammers WeChat with a failing message.
        """
        due = Message.objects.filter(
            status=Message.Status.QUEUED, campaign__isnull=True, next_attempt_at__isnull=True
        ).order_by("pk")
        self.message_ids = list(due.values_list("pk", flat=True)[: self.limit])

    def claim(self) -> list[Message]:
        if self.pending_singles:
            self._pick_pending_singles()
            if not self.message_ids:
                return []
        account_ids = set(self._due().values_list("account_id", flat=True).distinct())
        for account_id in account_ids:
            until = ratelimit.held_until(account_id)
            if until is not None:
                self.held[account_id] = until
                self._due().filter(account_id=account_id).update(next_attempt_at=_as_datetime(until))
        claimable = account_ids - set(self.held)
        if not claimable:
            return []
        claimed = (
            self._due()
            .filter(account_id__in=claimable)
            .update(
                status=Message.Status.SENDING,
                attempts=F("attempts") + 1,
                lease_expires_at=self.now + timedelta(seconds=settings.WXNOTIFY_SEND_LEASE_SECONDS),
                claim_token=self.token,
                updated_at=self.now,
            )
        )
        if not claimed:
            return []
        messages = list(
            Message.objects.filter(
                pk__in=self.message_ids, claim_token=self.token, status=Message.Status.SENDING
            ).order_by("pk")
        )
        # One account instance per account, not per row: each one decrypts its AppSecret when loaded.
        accounts = OfficialAccount.objects.in_bulk({message.account_id for message in messages})
        for message in messages:
            message.account = accounts[message.account_id]
        return messages

    # -- sending --

    def run(self) -> dict[str, int]:
        messages = self.claim()
        if not messages:
            return dict(self.counts)
        campaigns = Campaign.objects.in_bulk({m.campaign_id for m in messages if m.campaign_id})
        self.campaign_ids = set(campaigns)
        unsubscribed = self._unsubscribed(messages)
        by_account: dict[int, list[Message]] = defaultdict(list)
        for message in messages:
            if (message.account_id, message.touser) in unsubscribed:
                self.writes.failed[(None, services.UNSUBSCRIBED_REASON)].append(message.pk)
                self.counts["failed"] += 1
            else:
                by_account[message.account_id].append(message)
        for account_messages in by_account.values():
            self._send_account(account_messages, campaigns)
        while self.in_flight:
            self._collect(timeout=FLUSH_EVERY_SECONDS)
            self._renew_lease()
        self.flush()
        if self.campaign_ids:
            services.finish_campaigns(self.campaign_ids)
        return dict(self.counts)

    @staticmethod
    def _unsubscribed(messages: list[Message]) -> set[tuple[int, str]]:
        """Followers known to have left since the messages were accepted (checked again right before sending)."""
        return set(
            Follower.objects.filter(
                account_id__in={m.account_id for m in messages},
                openid__in={m.touser for m in messages},
                subscribed=False,
            ).values_list("account_id", "openid")
        )

    def _send_account(self, messages: list[Message], campaigns: dict[int, Campaign]) -> None:
        account = messages[0].account
        client = wechat_client_for(account)
        try:
            # Fetch (or read) the token here, once, so the pool threads start from the in-process memo.
            client.token_manager.get_token(client)
        except WeChatError as error:
            for message in messages:
                self._record(message, error, during_send=False)
            return
        limit = ratelimit.limit_for(account.send_rate_limit)
        pending = messages
        while pending:
            if account.pk in self.held:
                self._release(pending, self.held[account.pk])
                return
            self._renew_lease()
            granted = ratelimit.acquire(account.pk, limit, len(pending)) if limit else len(pending)
            for message in pending[:granted]:
                self._submit(client, message, campaigns.get(message.campaign_id))
            pending = pending[granted:]
            self._collect(timeout=0)

    def _renew_lease(self) -> None:
        """Keep our claim alive while a slow (e.g. rate-limited) batch is still sending.

        Without it the sweeper would take a live worker's rows for a dead one's after the lease.
        """
        lease = settings.WXNOTIFY_SEND_LEASE_SECONDS
        if time.monotonic() - self.lease_renewed < lease / 3:
            return
        self.lease_renewed = time.monotonic()
        Message.objects.filter(pk__in=self.message_ids, claim_token=self.token, status=Message.Status.SENDING).update(
            lease_expires_at=timezone.now() + timedelta(seconds=lease)
        )

    def _submit(self, client: WeChatClient, message: Message, campaign: Campaign | None) -> None:
        source = campaign if campaign is not None and message.data is None else message
        payload = {
            "touser": message.touser,
            "template_id": message.template_id_sent,
            "data": source.data,
            "url": source.url or None,
            "miniprogram": source.miniprogram or None,
            "client_msg_id": message.client_msg_id,
        }
        context = context_with_trace_id(message.trace_id)
        future = send_pool().submit(context.run, _send_one, client, payload)
        self.in_flight += 1
        future.add_done_callback(lambda done, message=message: self.results.put((message, done)))

    def _collect(self, timeout: float) -> None:
        """Take finished sends off the result queue; flush when enough piled up or enough time passed."""
        deadline = time.monotonic() + timeout
        while self.in_flight:
            remaining = deadline - time.monotonic()
            try:
                message, future = self.results.get(timeout=remaining) if remaining > 0 else self.results.get_nowait()
            except queue.Empty:
                break
            self.in_flight -= 1
            error = future.exception()
            metrics.record_send(message.account.appid, self.now, error)
            if error is None:
                self.writes.sent[message.pk] = (message.account_id, future.result())
                self.counts["sent"] += 1
            else:
                self._record(message, error)
            if len(self.writes) >= FLUSH_EVERY_RESULTS:
                self.flush()
        if self.writes and time.monotonic() - self.last_flush >= FLUSH_EVERY_SECONDS:
            self.flush()

    def _record(self, message: Message, error: BaseException, *, during_send: bool = True) -> None:
        """Decide what a failed send means for the message (see the error kinds in wxnotify.wechat.errors).

        ``during_send`` is False for errors of the token fetch before any send, where 40001 means a wrong
        AppSecret; during a send the client turns a token refused again right after its refresh into a
        configuration error, but the message itself is fine: it is retried later and the account flagged.
        """
        if not isinstance(error, WeChatError):
            with traced(message.trace_id):
                logger.error("Unexpected error sending message #%s", message.pk, exc_info=error)
            self._retry_or_fail(message, None, f"Internal error: {type(error).__name__}")
            return
        reason = _truncate(error.errmsg)
        kind = error.kind
        with traced(message.trace_id):
            logger.warning("Message #%s to %s: %s (%s)", message.pk, message.touser, error, kind)
        if during_send and kind == ErrorKind.CONFIGURATION and _is_token_errcode(error.errcode):
            self._flag(message, error)
            kind = ErrorKind.TOKEN_INVALID
        if error.outcome_unknown:
            self._retry_or_fail(
                message,
                error.errcode,
                _truncate(f"{reason} (no answer: retried with the same client_msg_id)"),
                give_up_reason=_truncate(
                    f"No answer from WeChat after {message.attempts} attempts; it may have been delivered: {reason}"
                ),
            )
        elif kind in (ErrorKind.TRANSIENT, ErrorKind.TOKEN_INVALID):
            self._retry_or_fail(message, error.errcode, reason, retry_after=error.retry_after)
        elif kind == ErrorKind.QUOTA:
            self._hold(message, error)
        else:
            self.writes.failed[(error.errcode, reason)].append(message.pk)
            self.counts["failed"] += 1
            if kind == ErrorKind.RECIPIENT and error.errcode in UNFOLLOWED_ERRCODES:
                self.writes.unfollowed.add((message.account_id, message.touser))
            elif kind == ErrorKind.CONFIGURATION:
                self._flag(message, error)

    def _retry_or_fail(
        self,
        message: Message,
        errcode: int | None,
        reason: str,
        *,
        retry_after: float | None = None,
        give_up_reason: str | None = None,
    ) -> None:
        if message.attempts >= self.max_attempts:
            self.writes.failed[(errcode, give_up_reason or reason)].append(message.pk)
            self.counts["failed"] += 1
            return
        delay = backoff_seconds(message.attempts, retry_after)
        self.writes.retry[(errcode, reason)][message.pk] = timezone.now() + timedelta(seconds=delay)
        self.counts["retried"] += 1

    def _hold(self, message: Message, error: WeChatError) -> None:
        until = time.time() + (error.retry_after or 3600.0)
        if message.account_id not in self.held:
            self.held[message.account_id] = until
            ratelimit.hold_account(message.account_id, until)
            record_wechat_error(message.account, error)
            logger.warning("Account %s reached its daily quota; holding its queue until %s", message.account_id, until)
        self._release([message], self.held[message.account_id])

    def _release(self, messages: Iterable[Message], until: float) -> None:
        """Back to the queue without spending the attempt: the quota, not the message, was the problem."""
        ids = [message.pk for message in messages]
        self.writes.released[_as_datetime(until)].extend(ids)
        self.counts["held"] += len(ids)

    def _flag(self, message: Message, error: WeChatError) -> None:
        if error.errcode in TEMPLATE_ERRCODES:
            if message.template_id not in self.flagged_templates:
                self.flagged_templates.add(message.template_id)
                flag_template_problem(message.template, error.errcode, error.errmsg)
        elif message.account_id not in self.flagged_accounts:
            self.flagged_accounts.add(message.account_id)
            record_wechat_error(message.account, error)

    # -- writing back --

    def _store_sent(self, sent: dict[int, tuple[int, int]], now: datetime) -> None:
        """Mark our rows sent with their msgids in one UPDATE.

        Plain SQL: this runs for every message at full speed, and building an ORM ``Case(When(...))`` per
        row cost more CPU than the HTTP call itself.
        """
        quote = connection.ops.quote_name
        column = {name: quote(Message._meta.get_field(name).column) for name in _SENT_COLUMNS}
        adapted_now = connection.ops.adapt_datetimefield_value(now)
        ids = list(sent)
        cases = " ".join(["WHEN %s THEN %s"] * len(ids))
        placeholders = ", ".join(["%s"] * len(ids))
        sql = (
            f"UPDATE {quote(Message._meta.db_table)} SET {column['status']} = %s, "  # noqa: S608 -- values bound
            f"{column['msgid']} = CAST(CASE {column['id']} {cases} END AS BIGINT), "
            f"{column['errcode']} = NULL, {column['errmsg']} = %s, {column['sent_at']} = %s, "
            f"{column['lease_expires_at']} = NULL, {column['updated_at']} = %s "
            f"WHERE {column['id']} IN ({placeholders}) AND {column['claim_token']} = %s AND {column['status']} = %s"
        )
        params: list[Any] = [Message.Status.SENT.value]
        for pk in ids:
            params += (pk, sent[pk][1])
        params += ["", adapted_now, adapted_now, *ids, self.token, Message.Status.SENDING.value]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)

    def _ours(self, ids: Iterable[int]):
        return Message.objects.filter(pk__in=list(ids), claim_token=self.token, status=Message.Status.SENDING)

    def flush(self) -> None:
        writes, self.writes = self.writes, _Writes()
        self.last_flush = time.monotonic()
        now = timezone.now()
        if writes.sent:
            self._store_sent(writes.sent, now)
            msgids_by_account: dict[int, list[int]] = defaultdict(list)
            for account_id, msgid in writes.sent.values():
                msgids_by_account[account_id].append(msgid)
            for account_id, msgids in msgids_by_account.items():
                services.apply_pending_receipts(account_id, msgids)
        for (errcode, reason), ids in writes.failed.items():
            self._ours(ids).update(
                status=Message.Status.FAILED,
                errcode=errcode,
                errmsg=reason,
                lease_expires_at=None,
                finished_at=now,
                updated_at=now,
            )
        for (errcode, reason), next_attempts in writes.retry.items():
            self._ours(next_attempts).update(
                status=Message.Status.QUEUED,
                errcode=errcode,
                errmsg=reason,
                next_attempt_at=Case(
                    *[When(pk=pk, then=Value(when)) for pk, when in next_attempts.items()],
                    output_field=DateTimeField(),
                ),
                lease_expires_at=None,
                updated_at=now,
            )
        for until, ids in writes.released.items():
            self._ours(ids).update(
                status=Message.Status.QUEUED,
                attempts=F("attempts") - 1,
                next_attempt_at=until,
                lease_expires_at=None,
                updated_at=now,
            )
        for account_id, openid in writes.unfollowed:
            Follower.objects.filter(account_id=account_id, openid=openid, subscribed=True).update(
                subscribed=False, unsubscribed_at=now, updated_at=now
            )


def _is_token_errcode(errcode: int | None) -> bool:
    return errcode is not None and classify_errcode(errcode) == ErrorKind.TOKEN_INVALID


def _as_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.get_current_timezone())


def deliver_messages(message_ids: Sequence[int], trace_id: str = "") -> dict[str, int]:
    """Deliver a batch of messages (each sent at most once at a time; see the module docstring).

    Returns counts by outcome (``sent``, ``failed``, ``retried``, ``held``) for the task result.
    """
    with traced(trace_id):
        return _Delivery(message_ids).run()


def deliver_pending_singles() -> dict[str, int]:
    """Deliver new single messages in batches, while they keep coming (see ``request_singles_delivery``).

    While the task takes batches it keeps the pending signal up, so requests committing meanwhile enqueue
    nothing: their messages go into the next batch of this task, whose cost (django-q2's per-task work and a
    batch's handful of queries) is shared by every message of the burst.  The task stops when a batch finds
    nothing new, or after SINGLES_TIME_BUDGET_SECONDS; it then takes the signal down and claims once more,
    for the messages committed before it did: those saw the signal up and enqueued nothing.  A message
    committed after that finds no signal and enqueues a task of its own.
    """
    batch = settings.WXNOTIFY_SEND_BATCH_SIZE
    deadline = time.monotonic() + SINGLES_TIME_BUDGET_SECONDS
    totals: Counter[str] = Counter()
    while time.monotonic() < deadline:
        cache.set(services.SINGLES_PENDING_KEY, 1, timeout=services.SINGLES_PENDING_TIMEOUT)
        delivery = _Delivery(limit=batch)
        totals.update(delivery.run())
        if not delivery.message_ids:
            break
    cache.delete(services.SINGLES_PENDING_KEY)
    while True:
        delivery = _Delivery(limit=batch)
        totals.update(delivery.run())
        if len(delivery.message_ids) < batch:
            break
    return dict(totals)


# --- Campaign fan-out ---------------------------------------------------------------------------------------------


def dispatch_campaign(campaign_id: int, trace_id: str = "") -> int:
    """Cut a campaign's queued messages into delivery tasks of WXNOTIFY_SEND_BATCH_SIZE; returns how many tasks.

    Campaign messages are bulk-inserted, so their ids are nearly contiguous: walking id ranges keeps
    each query on the primary key and never loads all ids at once.
    """
    with traced(trace_id):
        queued = Message.objects.filter(campaign_id=campaign_id, status=Message.Status.QUEUED)
        bounds = queued.aggregate(low=Min("pk"), high=Max("pk"))
        if bounds["low"] is None:
            services.finish_campaigns([campaign_id])
            return 0
        batch = settings.WXNOTIFY_SEND_BATCH_SIZE
        tasks = 0
        for start in range(bounds["low"], bounds["high"] + 1, batch):
            ids = list(queued.filter(pk__gte=start, pk__lt=start + batch).values_list("pk", flat=True))
            if ids:
                Message.objects.filter(pk__in=ids).update(enqueued_at=timezone.now())
                services.enqueue_delivery(ids, trace_id)
                tasks += 1
        logger.info("Campaign #%s dispatched in %d batch(es)", campaign_id, tasks)
        return tasks


# --- Sweeper ------------------------------------------------------------------------------------------------------


def recover_expired_leases(now: datetime) -> int:
    """Sending messages whose lease ran out lost their worker: queue them again (same client_msg_id)."""
    return Message.objects.filter(status=Message.Status.SENDING, lease_expires_at__lt=now).update(
        status=Message.Status.QUEUED,
        lease_expires_at=None,
        next_attempt_at=None,
        enqueued_at=None,
        errmsg="The worker sending it stopped; sent again with the same client_msg_id.",
        updated_at=now,
    )


def enqueue_due_messages(now: datetime) -> int:
    """Enqueue due queued messages that were not enqueued recently (lost tasks, retries whose time came)."""
    cutoff = now - timedelta(seconds=settings.WXNOTIFY_REENQUEUE_AFTER_SECONDS)
    due = Message.objects.filter(status=Message.Status.QUEUED).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now),
        Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=cutoff),
    )
    batch = settings.WXNOTIFY_SEND_BATCH_SIZE
    enqueued = 0
    for account_id in list(due.values_list("account_id", flat=True).distinct().order_by()):
        if ratelimit.held_until(account_id) is not None:
            continue
        ids = list(
            due.filter(account_id=account_id).order_by("pk").values_list("pk", flat=True)[:SWEEP_LIMIT_PER_ACCOUNT]
        )
        for start in range(0, len(ids), batch):
            chunk = ids[start : start + batch]
            # Only the rows still unclaimed are ours to enqueue: a concurrent sweep may have taken some.
            taken = due.filter(pk__in=chunk).update(enqueued_at=now)
            if taken:
                services.enqueue_delivery(chunk)
                enqueued += taken
    return enqueued


def sweep_messages() -> dict[str, int]:
    """The scheduled safety net (every minute); idempotent, so a schedule firing twice does no harm.

    Recovers messages of dead workers, re-enqueues due messages the queue forgot or whose retry time
    came, finishes campaigns with nothing left to send, and settles delivery receipts that waited too
    long for their message.
    """
    now = timezone.now()
    recovered = recover_expired_leases(now)
    enqueued = enqueue_due_messages(now)
    finished = services.finish_campaigns()
    applied, unmatched = services.resolve_stale_receipts(
        now - timedelta(seconds=settings.WXNOTIFY_RECEIPT_MATCH_WINDOW_SECONDS)
    )
    result = {
        "recovered": recovered,
        "enqueued": enqueued,
        "campaigns_finished": finished,
        "receipts_applied": applied,
        "receipts_unmatched": unmatched,
    }
    if any(result.values()):
        logger.info("Sweep: %s", result)
    return result
