"""A delivery task's run: claim due messages, keep sends in flight, write outcomes back, hand over in time.

A run works through its own *work* (a campaign, or a list of ids) and, before that, always serves the pipeline's
urgent work: retries whose time has come and new single messages.  So any running task sends a retry at its time
and a new single message within a poll, whatever else it is doing, and a campaign never starves them.

Urgent work and the run's own work go through separate lanes (:mod:`messaging.sendpool`), each with its own threads
and its own budget of sends in flight: a campaign that keeps its lane full (or whose sends all hang until WeChat's
read timeout) leaves the urgent lane free, so a single message is claimed at the task's next round and sent by a
thread of its own lane, not after the campaign's queue of sends.  Urgent work that
finds its own lane full also takes room left in the bulk lane, as it did when there was one lane.

It claims a few dozen messages at a time (:mod:`messaging.claims`) whenever a lane has room, instead of
claiming a batch and waiting for all of it: one WeChat call that hangs until its read timeout holds one pool
thread, not the task.  Answers are collected as they arrive and written back every FLUSH_EVERY_SECONDS
(:mod:`messaging.outcomes`).  While it runs the task renews the lease on its ``sending`` rows, reads which of its
campaigns were cancelled (a cancelled campaign's message is stopped right before its WeChat call), and refreshes
the cache keys of :mod:`messaging.dispatch`.

A run stops claiming after ``WXNOTIFY_DELIVERY_TASK_SECONDS`` and hands over to a fresh task (django-q2 kills a task
at its timeout); with nothing to do it stops after ``WXNOTIFY_DELIVERY_IDLE_SECONDS``, unless retries are due soon:
then one task, the *retry waiter*, stays and sends each at its time.  While any task runs, one of them takes back
the messages of dead workers every MAINTENANCE_SECONDS (:mod:`messaging.sweeper`), so they are sent again about a
lease after their worker died.  Every task also queues the scheduled messages whose time came
(:func:`messaging.scheduling.release_scheduled`), so the retry waiter sends them at their time too.

Size: over 450 lines because a run's loop, its two lanes and its hand-over share the run's state (claims in
flight, the clients, the outcomes not yet written); the pieces that stand alone already live in claims, outcomes,
sendpool, sweeper and scheduling.
"""

from __future__ import annotations

import logging
import queue
import time
import uuid
from collections import defaultdict
from concurrent.futures import Future
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import QuerySet
from django.utils import timezone

from accounts.clients import wechat_client_for
from accounts.models import Follower
from messaging import caps, claims, dispatch, metrics, reasons, scheduling, services, sweeper
from messaging.models import Campaign, Channel, Message, lease_from_now
from messaging.outcomes import Outcomes
from messaging.sendpool import BULK, URGENT, lane_threads, send_one, send_pool
from messaging.work import Work
from subscriptions.selectors import NO_CREDIT, REJECTED
from subscriptions.selectors import refusals as consent_refusals
from wxnotify.tracing import context_with_trace_id, traced
from wxnotify.wechat.client import WeChatClient
from wxnotify.wechat.errors import WeChatError

logger = logging.getLogger("wxnotify.messaging")

# How often a task with nothing in flight looks for new work: the delay a new single message or a due retry waits.
POLL_SECONDS = 0.2
# How often the cancellations of the campaigns in flight are read.
CANCEL_CHECK_SECONDS = 0.1
# How often a task offers to take back dead workers' messages and settle what may not be sent (one task does it,
# whichever takes MAINTENANCE_KEY first).
MAINTENANCE_SECONDS = 5.0
# Write outcomes back after this many answers or this many seconds, whichever comes first, so msgids land (and
# early receipts find their message) while the task is still sending.
FLUSH_EVERY_RESULTS = 50
FLUSH_EVERY_SECONDS = 0.2
# A task that stops claims due work a last few times after taking the alive signal down (see messaging.dispatch).
FINAL_CLAIM_ROUNDS = 20
# What a subscription notification the consent ledger refuses fails with (the ledger's reasons, in our words).
CONSENT_REASONS = {REJECTED: reasons.CONSENT_REJECTED_REASON, NO_CREDIT: reasons.CONSENT_NO_CREDIT_REASON}
# A failing cache is reported at most this often.
CACHE_ERROR_LOG_SECONDS = 30.0
# How long an account's messages wait when the infrastructure behind its token (cache, database) failed.
INFRASTRUCTURE_PAUSE_SECONDS = 5.0


# --- The run ------------------------------------------------------------------------------------------------------


class Lane:
    """A run's sends in flight in one lane, and how many more it may claim."""

    def __init__(self, name: str, min_claim: int) -> None:
        self.name = name
        # Twice the lane's threads, so the pool always has the next send ready while the task claims.
        self.max_in_flight = 2 * lane_threads(name)
        self.min_claim = min_claim
        self.in_flight = 0

    def room(self) -> int:
        """What the lane may claim now: nothing while it has less than ``min_claim`` room and sends in flight (many
        small claims would cost a query each)."""
        room = self.max_in_flight - self.in_flight
        return room if room >= self.min_claim or not self.in_flight else 0


class DeliveryRun:
    """One delivery task's run; see the module docstring."""

    def __init__(self, work: Work | None = None, *, waiter: bool = False, trace_id: str = "") -> None:
        self.work = work
        self.work_left = work is not None
        self.waiter = waiter
        # False once the task has taken the alive signal down to stop: it must not raise it again (see _stop_serving).
        self.serving = True
        self.trace_id = trace_id
        self.token = uuid.uuid4().hex
        self.outcomes = Outcomes(self.token)
        self.gate = claims.AccountGate()
        self.caps = caps.CapRules()
        self.lanes = {
            # The urgent lane claims whatever room it has: a single message should not wait for company.
            URGENT: Lane(URGENT, min_claim=1),
            BULK: Lane(BULK, min_claim=max(1, settings.WXNOTIFY_SEND_CONCURRENCY // 2)),
        }
        self.results: queue.SimpleQueue[tuple[Message, Lane, Future]] = queue.SimpleQueue()
        self.clients: dict[int, WeChatClient | None] = {}
        self.campaigns: dict[int, Campaign] = {}
        self.cancelled: set[int] = set()
        self.finished_campaigns: set[int] = set()
        start = time.monotonic()
        self.deadline = start + settings.WXNOTIFY_DELIVERY_TASK_SECONDS
        self.last_flush = start
        self.last_alive = self.last_lease = self.last_cancel_check = self.last_maintenance = self.last_release = 0.0
        # When the last round of urgent claims found nothing (None: it found something, or there was none yet).
        self.urgent_found_none_at: float | None = None
        self.last_cache_error = -CACHE_ERROR_LOG_SECONDS

    @property
    def in_flight(self) -> int:
        return sum(lane.in_flight for lane in self.lanes.values())

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.outcomes.counts)

    def run(self) -> dict[str, int]:
        """Work until out of time or out of work, hand over what is left, and return counts by outcome."""
        self._loop()
        self._drain()
        if not self._hand_over():
            self._stop_serving()
        if self.campaigns:
            services.finish_campaigns(self.campaigns)
        return self.counts

    def _loop(self) -> None:
        idle_since: float | None = None
        while time.monotonic() < self.deadline:
            self._keep_alive()
            claimed = self._claim_urgent_in_time() + self._claim_work()
            self._collect(timeout=0 if claimed else self._poll_seconds())
            if claimed or self.in_flight or self.work_left:
                idle_since = None
                continue
            if len(self.outcomes):
                self._flush()  # the retries it holds are what decides whether to stay
            if self._stays_for_retries():
                idle_since = None
                continue
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= settings.WXNOTIFY_DELIVERY_IDLE_SECONDS:
                break

    def _poll_seconds(self) -> float:
        """How long to wait for answers before claiming again: a poll, or less when a rate-limit second is about to
        start (claims right at its start keep the sends inside it)."""
        resume = self.gate.seconds_to_resume()
        return POLL_SECONDS if resume is None else min(POLL_SECONDS, resume + 0.001)

    # -- claiming --

    def _claim(
        self, claimable: QuerySet[Message], order_by: tuple[str, ...], lane: Lane, now: datetime
    ) -> list[Message]:
        room = lane.room()
        if not room:
            return []
        messages = claims.claim(claimable, order_by=order_by, limit=room, token=self.token, gate=self.gate, now=now)
        if messages:
            self._start(messages, lane)
        return messages

    def _claim_urgent_in_time(self) -> int:
        """Urgent claims, at most once a poll while they find nothing: a task busy with a campaign goes round its
        loop at every answer, and two empty claims per round (a transaction each) cost about a tenth of its CPU
        (bench/RESULTS.md).  A new single message or a due retry still waits at most ``POLL_SECONDS``, as it does
        for an idle task."""
        found_none_at = self.urgent_found_none_at
        if found_none_at is not None and time.monotonic() - found_none_at < POLL_SECONDS:
            return 0
        claimed = self._claim_urgent()
        self.urgent_found_none_at = None if claimed else time.monotonic()
        return claimed

    def _claim_urgent(self) -> int:
        """Retries whose time came, then new single messages: what every task serves first, in the urgent lane, and
        in the bulk lane's room too when they fill the urgent one."""
        claimed = 0
        urgent, bulk = self.lanes[URGENT], self.lanes[BULK]
        now = timezone.now()
        for candidates, order_by in claims.urgent_candidates(now):
            room = urgent.room()
            taken = len(self._claim(candidates, order_by, urgent, now))
            if taken == room:
                taken += len(self._claim(candidates, order_by, bulk, now))
            claimed += taken
        return claimed

    def _claim_work(self) -> int:
        lane = self.lanes[BULK]
        if self.work is None or not self.work_left or not lane.room():
            return 0
        now = timezone.now()
        claimed = self._claim(self.work.candidates().claimable(now), ("pk",), lane, now)
        self.work.claimed(claimed, self.trace_id)
        # Nothing claimable now (an account waiting for rate-limit permits still has claimable messages): the work
        # is done, or waits for retries, which the urgent claims of whichever task runs then will take.
        if not claimed and not self.work.candidates().claimable(timezone.now()).exists():
            self.work_left = False
        return len(claimed)

    # -- sending --

    def _start(self, messages: list[Message], lane: Lane) -> None:
        """Observe the claim, drop what must not go out, and submit the rest to the lane's send pool.

        What must not go out: template messages to followers who left, subscription notifications the consent ledger
        refuses (a known rejection, no credit: WeChat would answer 43101; their recipients need not follow, so the
        follower check is not theirs), then messages over a sending cap (:mod:`messaging.caps`, counted here, after
        the claim and before any WeChat call, so retries and held messages count on the day they are actually sent).
        """
        for message in messages:
            metrics.record_claim(message)
        self._load_campaigns({message.campaign_id for message in messages if message.campaign_id})
        unsubscribed = self._unsubscribed([m for m in messages if m.channel == Channel.TEMPLATE])
        refused = self._refused([m for m in messages if m.channel == Channel.SUBSCRIBE])
        following = []
        for message in messages:
            if message.channel == Channel.SUBSCRIBE:
                refusal = refused.get((message.account_id, message.touser, message.template_id_sent))
                if refusal is not None:
                    self.outcomes.fail(message, None, CONSENT_REASONS[refusal])
                    continue
            elif (message.account_id, message.touser) in unsubscribed:
                self.outcomes.fail(message, None, reasons.UNSUBSCRIBED_REASON)
                continue
            following.append(message)
        verdict = self.caps.apply(following)
        for message in verdict.capped:
            self.outcomes.fail(message, None, reasons.CAPPED_REASON)
        for until, held in verdict.held.items():
            self.outcomes.defer(held, until, reasons.CAPPED_HELD_REASON)
        by_account: dict[int, list[Message]] = defaultdict(list)
        for message in verdict.allowed:
            by_account[message.account_id].append(message)
        for account_messages in by_account.values():
            client = self._client_for(account_messages)
            if client is None:
                continue
            for message in account_messages:
                try:
                    self._submit(client, message, lane)
                except Exception as error:
                    self.outcomes.error(message, error, during_send=False)

    def _load_campaigns(self, campaign_ids: set[int]) -> None:
        missing = campaign_ids - set(self.campaigns)
        if missing:
            self.campaigns.update(Campaign.objects.in_bulk(missing))
            self._check_cancellations()

    @staticmethod
    def _unsubscribed(messages: list[Message]) -> set[tuple[int, str]]:
        """Followers known to have left since the messages were accepted (checked again right before sending)."""
        if not messages:
            return set()
        return set(
            Follower.objects.filter(
                account_id__in={m.account_id for m in messages},
                openid__in={m.touser for m in messages},
                subscribed=False,
            ).values_list("account_id", "openid")
        )

    @staticmethod
    def _refused(messages: list[Message]) -> dict[tuple[int, str, str], str]:
        """Subscription notifications the consent ledger refuses now (consent may have changed since acceptance)."""
        if not messages:
            return {}
        return consent_refusals((m.account_id, m.touser, m.template_id_sent) for m in messages)

    def _client_for(self, messages: list[Message]) -> WeChatClient | None:
        """The account's client, with its token fetched (or read) once here so pool threads start from the memo.

        When the token cannot be had, every message of the batch records that error (no send was made).
        """
        account = messages[0].account
        client = self.clients.get(account.pk)
        if client is None:
            client = wechat_client_for(account)
            try:
                client.token_manager.get_token(client)
            except WeChatError as error:
                for message in messages:
                    self.outcomes.error(message, error, during_send=False)
                return None
            except Exception:
                # The shared cache (or database) behind the token failed: no fault of these messages, and nothing
                # was sent.  They go back to the queue with their attempt, and the account waits a little.
                logger.exception("Token of account %s unavailable; its messages wait", account.pk)
                self.outcomes.release(messages, time.time() + INFRASTRUCTURE_PAUSE_SECONDS)
                self.gate.pause(account.pk, INFRASTRUCTURE_PAUSE_SECONDS)
                return None
            self.clients[account.pk] = client
        return client

    def _submit(self, client: WeChatClient, message: Message, lane: Lane) -> None:
        campaign = self.campaigns.get(message.campaign_id) if message.campaign_id else None
        if campaign is not None and message.data is None:
            data, link = campaign.content_for(message.channel)
            miniprogram = campaign.miniprogram
        else:
            data, link, miniprogram = message.data, message.url, message.miniprogram
        payload = {
            "touser": message.touser,
            "template_id": message.template_id_sent,
            "data": data,
            "miniprogram": miniprogram or None,
        }
        if message.channel == Channel.SUBSCRIBE:
            # bizsend takes a page and no client_msg_id (so WeChat cannot de-duplicate a resend: see outcomes).
            payload["page"] = link or None
        else:
            payload["url"] = link or None
            payload["client_msg_id"] = message.client_msg_id
        context = context_with_trace_id(message.trace_id)
        future = send_pool(lane.name).submit(
            context.run, send_one, client, message.channel, payload, message.campaign_id, self.cancelled
        )
        lane.in_flight += 1
        future.add_done_callback(lambda done, message=message: self.results.put((message, lane, done)))

    def _collect(self, timeout: float) -> None:
        """Take finished sends off the result queue: wait up to ``timeout`` for the first, then take what is ready.

        Returning at the first answer lets the loop claim again as soon as the pool has room; waiting here is also
        how an idle task sleeps between polls.  Outcomes are flushed when enough piled up or enough time passed.
        """
        wait = timeout
        while True:
            try:
                message, lane, future = self.results.get(timeout=wait) if wait > 0 else self.results.get_nowait()
            except queue.Empty:
                break
            wait = 0
            lane.in_flight -= 1
            error = future.exception()
            metrics.record_send(message, error)
            if error is None:
                self.outcomes.sent(message, future.result())
            else:
                self.outcomes.error(message, error)
            if len(self.outcomes) >= FLUSH_EVERY_RESULTS:
                self._flush()
        if len(self.outcomes) and time.monotonic() - self.last_flush >= FLUSH_EVERY_SECONDS:
            self._flush()

    def _flush(self) -> None:
        self.last_flush = time.monotonic()
        self.outcomes.flush()

    def _drain(self) -> None:
        """Wait for the sends in flight (each ends by its HTTP timeouts) and write everything back."""
        while self.in_flight:
            self._keep_alive()
            self._collect(timeout=FLUSH_EVERY_SECONDS)
        self._flush()

    # -- staying alive --

    def _keep_alive(self) -> None:
        now = time.monotonic()
        if now - self.last_alive >= dispatch.ALIVE_REFRESH_SECONDS:
            self.last_alive = now
            self._cache_call(self._refresh_keys)
        if self.in_flight and now - self.last_lease >= settings.WXNOTIFY_SEND_LEASE_SECONDS / 3:
            self.last_lease = now
            self._renew_lease()
        if self.in_flight and now - self.last_cancel_check >= CANCEL_CHECK_SECONDS:
            self._check_cancellations()
        if now - self.last_release >= scheduling.RELEASE_SECONDS:
            self.last_release = now
            scheduling.release_scheduled(timezone.now())
        if now - self.last_maintenance >= MAINTENANCE_SECONDS:
            self.last_maintenance = now
            if self._cache_call(
                lambda: cache.add(dispatch.MAINTENANCE_KEY, 1, timeout=dispatch.MAINTENANCE_KEY_SECONDS)
            ):
                sweeper.settle(timezone.now())

    def _refresh_keys(self) -> None:
        if self.serving:
            cache.set(dispatch.DELIVERY_ALIVE_KEY, 1, timeout=dispatch.ALIVE_KEY_SECONDS)
        if self.waiter:
            cache.set(dispatch.RETRY_WAITER_KEY, 1, timeout=dispatch.WAITER_KEY_SECONDS)
        if self.work is not None and self.work_left:
            self.work.keep_alive()

    def _cache_call(self, call: Any) -> Any:
        """Run a cache operation that only speeds things up; a failing cache must not stop delivery."""
        try:
            return call()
        except Exception:
            if time.monotonic() - self.last_cache_error >= CACHE_ERROR_LOG_SECONDS:
                self.last_cache_error = time.monotonic()
                logger.exception("Delivery could not use the cache; going on without it")
            return None

    def _renew_lease(self) -> None:
        """Keep our claim alive while we send; without it a dead worker's rows and ours would look alike."""
        Message.objects.filter(claim_token=self.token, status=Message.Status.SENDING).update(
            lease_expires_at=lease_from_now()
        )

    def _check_cancellations(self) -> None:
        """Which of the campaigns we send for were cancelled: their messages are stopped before the WeChat call."""
        self.last_cancel_check = time.monotonic()
        watched = set(self.campaigns) - self.cancelled
        if watched:
            self.cancelled.update(
                Campaign.objects.filter(pk__in=watched, state=Campaign.State.CANCELLED).values_list("pk", flat=True)
            )

    def _stays_for_retries(self) -> bool:
        """Whether this idle task stays as the retry waiter: retries are due soon and no other task waits for them."""
        if not sweeper.work_ahead(timezone.now()):
            return False
        if not self.waiter:
            self.waiter = bool(
                self._cache_call(lambda: cache.add(dispatch.RETRY_WAITER_KEY, 1, timeout=dispatch.WAITER_KEY_SECONDS))
            )
        return self.waiter

    # -- stopping --

    def _hand_over(self) -> bool:
        """Out of time with work left: enqueue the task that goes on with it.  True when something was handed over."""
        handed_over = False
        if self.work is not None and self.work_left:
            self.work.hand_over(self.trace_id)
            handed_over = True
        if self.waiter and sweeper.work_ahead(timezone.now()):
            self._cache_call(lambda: cache.set(dispatch.RETRY_WAITER_KEY, 1, timeout=dispatch.WAITER_KEY_SECONDS))
            dispatch.enqueue_retry_waiter()
            handed_over = True
        elif self.waiter:
            self._cache_call(lambda: cache.delete(dispatch.RETRY_WAITER_KEY))
        return handed_over

    def _stop_serving(self) -> None:
        """Take the alive signal down, then claim what was committed while it was up (see messaging.dispatch).

        The signal stays down while the last claims are sent: raised again by the refresh of a draining task, it
        outlived the task by up to ALIVE_KEY_SECONDS, and the requests of that moment enqueued no task, so their
        messages waited for the next request after it, or for the minute's sweep (bench/lanes.py measured both).
        """
        self.serving = False
        self._cache_call(lambda: cache.delete(dispatch.DELIVERY_ALIVE_KEY))
        for _ in range(FINAL_CLAIM_ROUNDS):
            if not self._claim_urgent():
                break
            self._drain()
        self._drain()


def run_delivery(work: Work | None = None, *, waiter: bool = False, trace_id: str = "") -> dict[str, int]:
    """Run one delivery task; see :class:`DeliveryRun`."""
    with traced(trace_id):
        return DeliveryRun(work, waiter=waiter, trace_id=trace_id).run()
