"""Receipts at WeChat's pace: a receipt is answered once it is stored, and applied a moment later in batches, each
exactly once.

An encrypted callback writes the receipt (state *received*) with one INSERT, the receipt being its own
de-duplication record, and answers; ``messaging.tasks.apply_received_receipts`` applies the stored receipts in
batches.  These tests hold the task back to see what a callback alone leaves behind, then run it, break it, race it
and check what the messages end up as.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.core.cache import cache
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext

from accounts.models import OfficialAccount
from callbacks.models import ProcessedCallback
from messaging import dispatch, tasks
from messaging.models import DeliveryReceipt, Message
from messaging.services import apply_received_receipts, record_delivery_receipt
from messaging.tasks import sweep_messages
from templates_app.models import MessageTemplate
from tests.callbacks.test_callback_endpoint import SAFE_APPID, WeChat, make_account, receipt_xml
from wxnotify import outages

pytestmark = pytest.mark.usefixtures("fresh_cache")

OTHER_APPID = "wx00000000000000b7"


def sent_messages(account: OfficialAccount, count: int, first_msgid: int = 8_000_000) -> list[Message]:
    template, _created = MessageTemplate.objects.get_or_create(
        account=account, template_id="tpl-batches", defaults={"title": "Batches", "content": "{{thing1.DATA}}"}
    )
    return Message.objects.bulk_create(
        Message(
            account=account,
            template=template,
            template_id_sent=template.template_id,
            touser=f"oBatch{account.pk:03d}{index:019d}"[:28],
            client_msg_id=f"batches-{account.pk}-{index}",
            status=Message.Status.SENT,
            msgid=first_msgid + index,
        )
        for index in range(count)
    )


def receipt_for(message: Message, status: str = "success") -> str:
    return receipt_xml(message.touser, message.msgid, status)


def statuses(messages: list[Message]) -> list[str]:
    return [Message.objects.get(pk=message.pk).status for message in messages]


@pytest.fixture
def safe(db, client) -> WeChat:
    return WeChat(client, make_account(SAFE_APPID, OfficialAccount.MessageMode.SAFE))


@pytest.fixture
def enqueued(monkeypatch) -> list[str]:
    """Tasks the callbacks enqueue, recorded and not run: what a callback alone leaves behind."""
    recorded: list[str] = []
    monkeypatch.setattr(dispatch, "async_task", lambda func, *args, **kwargs: recorded.append(func))
    return recorded


def test_a_receipt_is_answered_once_stored_and_applied_by_the_task(safe, enqueued):
    messages = sent_messages(safe.account, 3)
    for message in messages:
        assert safe.post(receipt_for(message)).content == b"success"
    assert statuses(messages) == [Message.Status.SENT] * 3
    assert DeliveryReceipt.objects.filter(state=DeliveryReceipt.State.RECEIVED).count() == 3
    assert not ProcessedCallback.objects.exists()  # the stored receipt is the record of an encrypted receipt
    assert enqueued == [dispatch.RECEIPTS_TASK]  # one task for the burst: the others saw its key up

    assert tasks.apply_received_receipts() == 3
    assert statuses(messages) == [Message.Status.DELIVERED] * 3
    # Applied receipts leave their outcome on the message and stay, each pointing to it, for the replay window.
    applied = DeliveryReceipt.objects.filter(state=DeliveryReceipt.State.APPLIED)
    assert sorted(applied.values_list("message_id", flat=True)) == sorted(message.pk for message in messages)
    assert cache.get(dispatch.RECEIPTS_ALIVE_KEY) is None
    assert tasks.apply_received_receipts() == 0


def test_a_retry_of_an_applied_receipt_is_answered_and_stores_nothing(safe, enqueued):
    message = sent_messages(safe.account, 1)[0]
    xml = receipt_for(message, "failed:user block")
    query = safe.query()
    timestamp, nonce = int(query["timestamp"]), query["nonce"]
    assert safe.post(xml, timestamp=timestamp, nonce=nonce).content == b"success"
    tasks.apply_received_receipts()
    finished = Message.objects.get(pk=message.pk)
    assert finished.status == Message.Status.FAILED

    assert safe.post(xml, timestamp=timestamp, nonce=nonce).content == b"success"  # the same request again
    assert safe.post(xml).content == b"success"  # WeChat's retry, signed anew
    assert DeliveryReceipt.objects.get().state == DeliveryReceipt.State.APPLIED  # the first, and only, copy
    assert not ProcessedCallback.objects.exists()
    assert tasks.apply_received_receipts() == 0
    assert Message.objects.get(pk=message.pk).finished_at == finished.finished_at


def test_a_batch_sorts_receipts_as_the_single_path_did(safe, enqueued):
    other = make_account(OTHER_APPID, OfficialAccount.MessageMode.SAFE)
    mine, theirs = sent_messages(safe.account, 2), sent_messages(other, 1, first_msgid=9_000_000)
    Message.objects.filter(pk=mine[1].pk).update(status=Message.Status.DELIVERED)
    record_delivery_receipt(account=safe.account, msgid=mine[0].msgid, wechat_status="failed: system failed")
    record_delivery_receipt(account=safe.account, msgid=mine[1].msgid, wechat_status="success")
    record_delivery_receipt(account=other, msgid=theirs[0].msgid, wechat_status="success")
    record_delivery_receipt(account=safe.account, msgid=theirs[0].msgid, wechat_status="success")
    record_delivery_receipt(account=safe.account, msgid=0, wechat_status="success")

    assert apply_received_receipts() == 5
    failed = Message.objects.get(pk=mine[0].pk)
    assert failed.status == Message.Status.FAILED
    assert failed.errmsg.endswith("failed: system failed")
    assert statuses([mine[1], theirs[0]]) == [Message.Status.DELIVERED, Message.Status.DELIVERED]
    kept = {(receipt.account_id, receipt.msgid): receipt.state for receipt in DeliveryReceipt.objects.all()}
    # Another account's msgid matches nothing of this account: it waits for a message of its own; MsgID 0 never will.
    assert kept == {
        (safe.account.pk, mine[0].msgid): DeliveryReceipt.State.APPLIED,
        (safe.account.pk, mine[1].msgid): DeliveryReceipt.State.APPLIED,  # its message was delivered already
        (other.pk, theirs[0].msgid): DeliveryReceipt.State.APPLIED,
        (safe.account.pk, theirs[0].msgid): DeliveryReceipt.State.PENDING,
        (safe.account.pk, 0): DeliveryReceipt.State.UNMATCHED,
    }


def test_a_batch_that_fails_is_rolled_back_whole_and_applied_by_the_next(safe, enqueued, monkeypatch):
    messages = sent_messages(safe.account, 3)
    for message in messages:
        safe.post(receipt_for(message))
    real_filter = DeliveryReceipt.objects.filter

    def failing_filter(*args, **kwargs):
        if "pk__in" in kwargs:
            raise OperationalError("server closed the connection")
        return real_filter(*args, **kwargs)

    monkeypatch.setattr(DeliveryReceipt.objects, "filter", failing_filter)
    with pytest.raises(OperationalError):
        apply_received_receipts()
    monkeypatch.undo()
    assert statuses(messages) == [Message.Status.SENT] * 3
    assert DeliveryReceipt.objects.filter(state=DeliveryReceipt.State.RECEIVED).count() == 3

    assert apply_received_receipts() == 3
    assert statuses(messages) == [Message.Status.DELIVERED] * 3


def test_receipts_a_task_left_behind_are_applied_by_the_sweeper(safe, enqueued):
    message = sent_messages(safe.account, 1)[0]
    safe.post(receipt_for(message))
    assert sweep_messages()["receipts_received"] == 1
    assert statuses([message]) == [Message.Status.DELIVERED]


def test_a_cache_that_keeps_no_key_still_gets_the_receipts_applied(safe, enqueued, monkeypatch):
    monkeypatch.setattr(cache, "add", lambda *args, **kwargs: False)
    for message in sent_messages(safe.account, 2):
        safe.post(receipt_for(message))
    assert enqueued == [dispatch.RECEIPTS_TASK] * 2


def test_a_broken_cache_or_broker_is_logged_and_the_receipt_kept(safe, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(outages, "_last_logged", {})
    monkeypatch.setattr(cache, "get", broken)
    monkeypatch.setattr(dispatch, "async_task", broken)
    message = sent_messages(safe.account, 1)[0]
    assert safe.post(receipt_for(message)).content == b"success"
    assert DeliveryReceipt.objects.filter(state=DeliveryReceipt.State.RECEIVED).count() == 1
    assert "left to the sweeper" in caplog.text


def test_receipts_run_inline_are_applied_before_the_answer(safe):
    """With tasks run inline (the tests' WXNOTIFY_TASKS_SYNC) the task runs after the commit, within the request."""
    message = sent_messages(safe.account, 1)[0]
    assert safe.post(receipt_for(message)).content == b"success"
    assert statuses([message]) == [Message.Status.DELIVERED]


def test_the_account_of_a_callback_is_looked_up_once_per_memo_lifetime(safe, enqueued):
    messages = sent_messages(safe.account, 2)
    safe.post(receipt_for(messages[0]))
    with CaptureQueriesContext(connection) as queries:
        assert safe.post(receipt_for(messages[1])).content == b"success"
    assert not [query for query in queries if "accounts_officialaccount" in query["sql"]]
    safe.account.is_active = False
    safe.account.save()  # forgets this process's memo at once
    assert safe.post(receipt_for(messages[1])).status_code == 404


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_apply_each_receipt_once(client, enqueued):
    account = make_account(SAFE_APPID, OfficialAccount.MessageMode.SAFE)
    messages = sent_messages(account, 40)
    for message in messages:
        record_delivery_receipt(account=account, msgid=message.msgid, wechat_status="success")
    taken: list[int] = []
    errors: list[BaseException] = []

    def applier() -> None:
        try:
            while batch := apply_received_receipts(batch_size=7):
                taken.append(batch)
        except BaseException as exc:  # a failed thread must fail the test, not vanish
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=applier) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sum(taken) == 40
    assert statuses(messages) == [Message.Status.DELIVERED] * 40
    assert set(DeliveryReceipt.objects.values_list("state", flat=True)) == {DeliveryReceipt.State.APPLIED}


# --- A task seen is relied on for a moment: one cache read per web process and second, not per receipt ------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def queued_tasks(monkeypatch, settings) -> tuple[list[str], list[str], Clock]:
    """Tasks go to a broker (not inline); the enqueued ones and the cache reads recorded, time in our hands."""
    monkeypatch.setitem(settings.Q_CLUSTER, "sync", False)
    monkeypatch.setattr(dispatch, "_receipts_task_seen_at", float("-inf"))
    clock = Clock()
    monkeypatch.setattr(dispatch.time, "monotonic", clock)
    enqueued: list[str] = []
    monkeypatch.setattr(dispatch, "async_task", lambda func, *args, **kwargs: enqueued.append(func))
    reads: list[str] = []
    real_get = cache.get
    monkeypatch.setattr(cache, "get", lambda key, *args, **kwargs: reads.append(key) or real_get(key, *args, **kwargs))
    return enqueued, reads, clock


def test_a_web_process_relies_on_a_task_it_enqueued_or_saw_for_a_second(queued_tasks):
    enqueued, reads, clock = queued_tasks
    dispatch.request_receipt_application()
    assert enqueued == [dispatch.RECEIPTS_TASK]
    reads.clear()
    clock.now += dispatch.RECEIPTS_TRUST_SECONDS / 2
    dispatch.request_receipt_application()
    assert (enqueued, reads) == ([dispatch.RECEIPTS_TASK], [])  # relied on: no read, no task
    clock.now += dispatch.RECEIPTS_TRUST_SECONDS
    dispatch.request_receipt_application()  # the key is still up (the task holds it): read, relied on anew
    assert (enqueued, reads) == ([dispatch.RECEIPTS_TASK], [dispatch.RECEIPTS_ALIVE_KEY])
    clock.now += dispatch.RECEIPTS_TRUST_SECONDS
    cache.delete(dispatch.RECEIPTS_ALIVE_KEY)  # the task took it down: lingering, then gone
    dispatch.request_receipt_application()
    assert enqueued == [dispatch.RECEIPTS_TASK] * 2
    assert dispatch.RECEIPTS_TRUST_SECONDS < dispatch.RECEIPTS_LINGER_SECONDS


def test_a_task_run_inline_or_not_enqueued_is_never_relied_on(queued_tasks, settings, monkeypatch):
    enqueued, _reads, _clock = queued_tasks
    settings.Q_CLUSTER["sync"] = True
    dispatch.request_receipt_application()
    cache.delete(dispatch.RECEIPTS_ALIVE_KEY)
    dispatch.request_receipt_application()
    assert enqueued == [dispatch.RECEIPTS_TASK] * 2  # an inline task has ended when async_task returns
    settings.Q_CLUSTER["sync"] = False

    def down(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(dispatch, "async_task", down)
    cache.delete(dispatch.RECEIPTS_ALIVE_KEY)
    dispatch.request_receipt_application()
    assert dispatch._receipts_task_seen_at == float("-inf")  # nothing to rely on: the next receipt tries again


@pytest.mark.django_db(transaction=True)
def test_a_receipt_stored_while_the_task_lingers_is_applied_by_that_task(monkeypatch, settings):
    """The promise a web process relies on: after taking its key down the task still looks for receipts for
    RECEIPTS_LINGER_SECONDS, so one stored then, by a process that saw the key a moment before, is applied."""
    monkeypatch.setitem(settings.Q_CLUSTER, "sync", False)
    monkeypatch.setattr(dispatch, "RECEIPTS_LINGER_SECONDS", 1.0)
    account = make_account(SAFE_APPID, OfficialAccount.MessageMode.SAFE)
    first, late = sent_messages(account, 2)
    record_delivery_receipt(account=account, msgid=first.msgid, wechat_status="success")
    taken: list[int] = []

    def run_task() -> None:
        try:
            taken.append(tasks.apply_received_receipts())
        finally:
            connection.close()

    task = threading.Thread(target=run_task)
    task.start()
    deadline = time.monotonic() + 10
    while statuses([first]) != [Message.Status.DELIVERED] or cache.get(dispatch.RECEIPTS_ALIVE_KEY) is not None:
        assert time.monotonic() < deadline, "the task never took its key down"
        time.sleep(0.01)
    record_delivery_receipt(account=account, msgid=late.msgid, wechat_status="success")
    task.join(10)
    assert taken == [2]
    assert statuses([first, late]) == [Message.Status.DELIVERED] * 2
