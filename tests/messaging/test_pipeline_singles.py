"""Single messages share delivery tasks: one alive signal in the cache, one task per burst of requests.

The broker is replaced by a recorder here so the tests decide when (and whether) a task runs; the tasks
themselves are the real ones, against the sandbox WeChat.
"""

from __future__ import annotations

import queue
import random
import threading
import time

import pytest
from django.core.cache import cache
from django.db import connection, transaction

from messaging import dispatch, ratelimit, sendpool
from messaging.models import Message
from messaging.services import RecipientSpec, create_campaign
from messaging.tasks import deliver_campaign, deliver_due_messages
from tests.factories import ORDER_DATA, ORDER_TEMPLATE
from tests.messaging import test_pipeline

# The demo account with its templates and followers, and the send shortcut, as in the main pipeline tests.
pipeline = test_pipeline.pipeline
send = test_pipeline.send


class RecordingBroker:
    """Stands in for django-q2's async_task: keeps what was enqueued; ``lose`` drops the next N tasks."""

    def __init__(self) -> None:
        self.tasks: queue.Queue[str] = queue.Queue()
        self.enqueued = 0
        self.lose = 0
        self._lock = threading.Lock()

    def __call__(self, func: str, *args, **kwargs) -> None:
        with self._lock:
            self.enqueued += 1
            if self.lose:
                self.lose -= 1
                return
        self.tasks.put(func)

    def run_all(self) -> int:
        ran = 0
        while not self.tasks.empty():
            assert self.tasks.get() == "messaging.tasks.deliver_due_messages"
            deliver_due_messages()
            ran += 1
        return ran


@pytest.fixture
def broker(monkeypatch) -> RecordingBroker:
    recorder = RecordingBroker()
    monkeypatch.setattr("messaging.dispatch.async_task", recorder)
    return recorder


def statuses(ids) -> list[str]:
    return list(Message.objects.filter(pk__in=ids).order_by("pk").values_list("status", flat=True))


def test_a_burst_of_single_messages_shares_one_task(pipeline, sandbox_api, broker):
    openids = sandbox_api.followers()
    ids = [send(pipeline, touser=openids[index]).message.pk for index in range(5)]
    assert broker.enqueued == 1, "only the first request of the burst enqueues"
    assert set(statuses(ids)) == {Message.Status.QUEUED}

    assert broker.run_all() == 1
    assert set(statuses(ids)) == {Message.Status.SENT}
    assert sandbox_api.counters()["sends"] == 5

    # The task took the signal down before claiming: the next message enqueues a task of its own, at once.
    later = send(pipeline, touser=openids[5]).message.pk
    assert broker.enqueued == 2
    broker.run_all()
    assert statuses([later]) == [Message.Status.SENT]


def test_a_burst_larger_than_the_send_pool_is_sent_by_the_one_task(pipeline, sandbox_api, broker, settings):
    settings.WXNOTIFY_SEND_CONCURRENCY = 2
    openids = sandbox_api.followers()
    ids = [send(pipeline, touser=openids[index % len(openids)]).message.pk for index in range(12)]
    assert broker.run_all() == 1
    assert set(statuses(ids)) == {Message.Status.SENT}
    assert sandbox_api.counters()["sends"] == 12


def test_a_task_out_of_time_still_takes_what_was_committed_before_it_stopped(pipeline, sandbox_api, broker, settings):
    settings.WXNOTIFY_DELIVERY_TASK_SECONDS = 0
    openids = sandbox_api.followers()
    ids = [send(pipeline, touser=openids[index]).message.pk for index in range(5)]
    assert broker.enqueued == 1
    assert broker.run_all() == 1, "the task's last claims after it took the signal down"
    assert set(statuses(ids)) == {Message.Status.SENT}


def test_a_task_that_sends_its_last_claims_leaves_the_signal_down(pipeline, sandbox_api, broker, settings):
    """Sending its last claims, a stopping task does not raise the alive signal again: the next request enqueues a
    task at once instead of leaving its message to the minute's sweep."""
    settings.WXNOTIFY_DELIVERY_TASK_SECONDS = 0
    openids = sandbox_api.followers()
    first = send(pipeline, touser=openids[0]).message.pk
    assert broker.run_all() == 1, "its one claim was one of the last, after it took the signal down"
    assert statuses([first]) == [Message.Status.SENT]
    assert cache.get(dispatch.DELIVERY_ALIVE_KEY) is None

    later = send(pipeline, touser=openids[1]).message.pk
    assert broker.enqueued == 2
    broker.run_all()
    assert statuses([later]) == [Message.Status.SENT]


def wait_until(condition, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_campaign_that_fills_its_lane_leaves_a_lane_to_single_messages(
    pipeline, sandbox_api, broker, settings, monkeypatch
):
    """While every send of a campaign task hangs, the same task still claims a new single message and sends it
    through the urgent lane; the campaign's sends go on once they are answered."""
    settings.WXNOTIFY_SEND_CONCURRENCY = 2  # the bulk lane: 4 sends in flight at most
    openids = sandbox_api.followers()
    answer = threading.Event()

    def send_one(client, channel, payload, campaign_id, cancelled):
        if campaign_id is not None:
            answer.wait(30)
        return sendpool.send_one(client, channel, payload, campaign_id, cancelled)

    monkeypatch.setattr("messaging.delivery.send_one", send_one)
    campaign = create_campaign(
        account=pipeline, template_id=ORDER_TEMPLATE, data=ORDER_DATA, recipients=RecipientSpec.openids(openids[:6])
    )
    task = threading.Thread(target=lambda: (deliver_campaign(campaign.pk), connection.close()))
    task.start()
    try:
        in_campaign = Message.objects.filter(campaign=campaign)
        assert wait_until(lambda: in_campaign.filter(status=Message.Status.SENDING).count() == 4), "lane full"
        single = send(pipeline, touser=openids[6]).message.pk
        assert wait_until(lambda: statuses([single]) == [Message.Status.SENT]), "the single waited for the campaign"
        assert in_campaign.filter(status=Message.Status.SENDING).count() == 4
        assert not in_campaign.filter(status=Message.Status.SENT).exists()
    finally:
        answer.set()
        task.join()
    assert set(in_campaign.values_list("status", flat=True)) == {Message.Status.SENT}
    assert sandbox_api.counters()["delivered"] == 7
    assert broker.enqueued == 1, "the campaign's dispatch only: its task served the single"


def test_messages_committed_while_a_task_sends_join_its_next_batch(pipeline, sandbox_api, broker):
    """Under load a burst costs one task: the signal stays up while the task takes batch after batch."""
    # Slow sends, so the three requests below surely commit while the task is still at work.
    sandbox_api.set_faults(latency_ms=800)
    openids = sandbox_api.followers()
    first = send(pipeline, touser=openids[0]).message.pk
    task = threading.Thread(target=lambda: (broker.run_all(), connection.close()))
    task.start()
    time.sleep(0.1)
    during = [send(pipeline, touser=openids[index]).message.pk for index in range(1, 4)]
    task.join()
    assert broker.enqueued == 1
    assert statuses([first, *during]) == [Message.Status.SENT] * 4
    # The task took the signal down when nothing new came: the next message enqueues a task again.
    send(pipeline, touser=openids[4])
    assert broker.enqueued == 2


def test_a_retry_is_sent_at_its_time_by_the_task_that_stays_for_it(pipeline, sandbox_api, broker, settings):
    """The task that wrote the retry waits for it (the retry waiter) and claims it at once when it is due."""
    settings.WXNOTIFY_RETRY_BASE_DELAY = 0.6
    settings.WXNOTIFY_RETRY_WAIT_HORIZON_SECONDS = 30
    sandbox_api.set_faults(error_rate=1.0, error_code=-1)
    pk = send(pipeline, touser=sandbox_api.followers()[0]).message.pk

    def heal_after_the_first_send() -> None:
        deadline = time.monotonic() + 10
        while sandbox_api.counters()["sends"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        sandbox_api.set_faults(error_rate=0.0)

    healer = threading.Thread(target=heal_after_the_first_send)
    healer.start()
    broker.run_all()
    healer.join()
    message = Message.objects.get(pk=pk)
    assert (message.status, message.attempts) == (Message.Status.SENT, 2)
    assert sandbox_api.counters()["sends"] == 2
    # Claimed at its time: the backoff was 0.3 to 0.6 s, and an idle task looks for due work every 0.2 s.
    lateness = (message.attempted_at - message.next_attempt_at).total_seconds()
    assert 0 <= lateness < 2, lateness
    assert cache.get(dispatch.RETRY_WAITER_KEY) is None, "the waiter let go of its key when nothing was left"


def test_a_lost_task_delays_later_messages_by_the_signal_timeout_only(pipeline, sandbox_api, broker, monkeypatch):
    monkeypatch.setattr("messaging.dispatch.ALIVE_KEY_SECONDS", 1)
    openids = sandbox_api.followers()
    broker.lose = 1
    first = send(pipeline, touser=openids[0]).message.pk
    second = send(pipeline, touser=openids[1]).message.pk
    assert broker.enqueued == 1 and broker.tasks.empty(), "the one task was lost; the signal still stands"
    # The database cache rounds expiry times to the second: wait until the signal is really gone.
    deadline = time.monotonic() + 5
    while cache.get(dispatch.DELIVERY_ALIVE_KEY) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    third = send(pipeline, touser=openids[2]).message.pk
    assert broker.enqueued == 2
    broker.run_all()
    assert statuses([first, second, third]) == [Message.Status.SENT] * 3


def test_a_held_account_keeps_its_singles_queued_for_later(pipeline, sandbox_api, broker):
    ratelimit.hold_account(pipeline.pk, time.time() + 60)
    try:
        held = send(pipeline, touser=sandbox_api.followers()[0]).message.pk
        broker.run_all()
        message = Message.objects.get(pk=held)
        assert message.status == Message.Status.QUEUED
        assert message.next_attempt_at is not None and message.attempts == 0
        assert sandbox_api.counters()["sends"] == 0
    finally:
        ratelimit.release_hold(pipeline.pk)


def test_concurrent_senders_and_workers_leave_nothing_for_the_sweeper(pipeline, sandbox_api, broker):
    """Requests commit while tasks delete the signal and claim: every message is still sent, exactly once."""
    sandbox_api.set_faults(latency_ms=20)
    openids = sandbox_api.followers()
    senders_done = threading.Event()
    sent_ids: list[int] = []
    errors: list[BaseException] = []
    ids_lock = threading.Lock()

    def sender(offset: int) -> None:
        try:
            rng = random.Random(offset)
            for index in range(15):
                pk = send(pipeline, touser=openids[(offset + index) % len(openids)]).message.pk
                with ids_lock:
                    sent_ids.append(pk)
                time.sleep(rng.uniform(0, 0.02))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    def worker() -> None:
        try:
            while True:
                try:
                    broker.tasks.get(timeout=0.05)
                except queue.Empty:
                    if senders_done.is_set() and broker.tasks.empty():
                        return
                    continue
                deliver_due_messages()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    senders = [threading.Thread(target=sender, args=(offset,)) for offset in range(4)]
    workers = [threading.Thread(target=worker) for _ in range(2)]
    for thread in senders + workers:
        thread.start()
    for thread in senders:
        thread.join()
    senders_done.set()
    for thread in workers:
        thread.join()

    assert not errors, errors
    assert len(sent_ids) == 60
    counts = dict.fromkeys(Message.Status.values, 0)
    for status in statuses(sent_ids):
        counts[status] += 1
    assert counts[Message.Status.SENT] == 60, counts
    assert Message.objects.filter(pk__in=sent_ids, attempts=1).count() == 60
    assert sandbox_api.counters()["sends"] == 60
    assert broker.enqueued < 60, "requests coalesced into fewer tasks than messages"


def test_a_repeat_inside_a_transaction_leaves_the_transaction_usable(pipeline, sandbox_api, broker):
    """The repeat is found by the unique constraint; the savepoint around the INSERT keeps the outer block alive."""
    openid = sandbox_api.followers()[0]
    first = send(pipeline, touser=openid, client_msg_id="repeat-in-atomic")
    with transaction.atomic():
        again = send(pipeline, touser=openid, client_msg_id="repeat-in-atomic")
        assert Message.objects.filter(client_msg_id="repeat-in-atomic").count() == 1
    assert (first.created, again.created) == (True, False)
    assert again.message.pk == first.message.pk
