"""Callbacks lose nothing: every event applied exactly once, every infrastructure failure answered 503.

The record of a processed message (``ProcessedCallback``) commits or rolls back with the message's effect, so no
failure can leave an event "answered but not applied" or "applied twice".  These tests break the database, the
cache and the timing at each step and check what WeChat hears and what the database holds.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.cache import cache
from django.core.management import call_command
from django.db import DatabaseError, OperationalError, connection
from django.utils import timezone
from django_q.models import Schedule

from accounts.models import Follower, OfficialAccount
from callbacks import messages, services, tasks
from callbacks.apps import CALLBACK_PRUNE_SCHEDULE_NAME, CALLBACK_PRUNE_TASK
from callbacks.metrics import RECEIPTS_PER_INSERT
from callbacks.models import ProcessedCallback
from messaging.models import DeliveryReceipt, Message
from templates_app.models import MessageTemplate
from tests.callbacks.test_callback_endpoint import (
    SAFE_APPID,
    WeChat,
    event_xml,
    make_account,
    new_openid,
    receipt_xml,
    text_xml,
)

pytestmark = pytest.mark.usefixtures("fresh_cache")


def sent_messages(account: OfficialAccount, count: int, first_msgid: int = 7_000_000) -> list[Message]:
    template = MessageTemplate.objects.create(
        account=account, template_id="tpl-reliability", title="Reliability", content="{{thing1.DATA}}"
    )
    return Message.objects.bulk_create(
        Message(
            account=account,
            template=template,
            template_id_sent=template.template_id,
            touser=f"oReliable{index:019d}",
            client_msg_id=f"reliability-{index}",
            status=Message.Status.SENT,
            msgid=first_msgid + index,
        )
        for index in range(count)
    )


def receipt_for(message: Message) -> str:
    return receipt_xml(message.touser, message.msgid, "success")


@pytest.fixture
def safe(db, client) -> WeChat:
    return WeChat(client, make_account(SAFE_APPID, OfficialAccount.MessageMode.SAFE))


# --- A failed write is never a duplicate ------------------------------------------------------------------------


def test_receipt_whose_database_write_fails_is_503_and_applied_by_the_retry(safe, monkeypatch):
    """The same request sent again (same query, same body) after a 503 is processed, not refused."""
    message = sent_messages(safe.account, 1)[0]
    real = services.record_delivery_receipts

    def locked_once(receipts):
        monkeypatch.setattr(services, "record_delivery_receipts", real)
        raise OperationalError("database is locked")

    monkeypatch.setattr(services, "record_delivery_receipts", locked_once)
    query = safe.query()
    encrypt = safe.crypto().encrypt(receipt_for(message))
    query.update(
        encrypt_type="aes", msg_signature=safe.crypto().msg_signature(query["timestamp"], query["nonce"], encrypt)
    )
    body = f"<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"

    first = safe.post_raw(query, body)
    assert first.status_code == 503
    assert first["Retry-After"] == "1"
    message.refresh_from_db()
    assert message.status == Message.Status.SENT
    assert not DeliveryReceipt.objects.exists()  # nothing stored: nothing claims the receipt

    retry = safe.post_raw(query, body)
    assert retry.status_code == 200
    assert retry.content == b"success"
    message.refresh_from_db()
    assert message.status == Message.Status.DELIVERED
    assert DeliveryReceipt.objects.get().state == DeliveryReceipt.State.APPLIED


@pytest.fixture
def plain(db, client) -> WeChat:
    """Plaintext receipts keep a ProcessedCallback record (their signature does not cover the body)."""
    return WeChat(client, make_account("wx00000000000000a1", OfficialAccount.MessageMode.PLAINTEXT))


def test_failure_to_record_the_message_rolls_back_its_effect(plain, monkeypatch):
    """The record is written with the effect: if the record cannot be written, the effect is not kept either."""
    message = sent_messages(plain.account, 1)[0]

    def failing_create(*args, **kwargs):
        raise OperationalError("disk I/O error")

    monkeypatch.setattr(ProcessedCallback.objects, "create", failing_create)
    assert plain.post(receipt_for(message)).status_code == 503
    message.refresh_from_db()
    assert message.status == Message.Status.SENT
    assert not DeliveryReceipt.objects.exists()


def test_cache_that_refuses_every_add_changes_nothing(safe, monkeypatch):
    """Django's database cache answers ``add`` with False when its write fails ("database is locked"): that must
    not pass for "already processed" any more."""
    monkeypatch.setattr(cache, "add", lambda *args, **kwargs: False)
    messages = sent_messages(safe.account, 3)
    for message in messages:
        assert safe.post(receipt_for(message)).content == b"success"
    assert Message.objects.filter(status=Message.Status.DELIVERED).count() == 3


# --- Infrastructure failures answer 503, never 500 ----------------------------------------------------------------


@pytest.mark.parametrize("error", [OperationalError("server closed the connection"), DatabaseError("gone")])
def test_account_look_up_failure_is_503(safe, monkeypatch, error):
    def failing(appid):
        raise error

    monkeypatch.setattr(services, "active_account", failing)
    response = safe.post(event_xml(new_openid(), "subscribe"))
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response.content == b""


def test_failure_answering_a_repeat_is_503_not_success(plain, monkeypatch):
    """A repeat whose look-up fails cannot know whether the first try was applied: it asks WeChat to retry."""
    message = sent_messages(plain.account, 1)[0]
    xml = receipt_for(message)
    assert plain.post(xml).content == b"success"

    def failing(*args, **kwargs):
        raise OperationalError("connection reset")

    monkeypatch.setattr(services, "answer_already_given", failing)
    assert plain.post(xml).status_code == 503


# --- Repeats get the first answer, and only the first try is applied ---------------------------------------------


def test_retry_of_a_processed_subscribe_gets_the_first_reply_and_is_not_applied_again(safe, monkeypatch):
    safe.account.welcome_reply = "欢迎"
    safe.account.save()
    applied = []
    real = services.dispatch
    monkeypatch.setattr(services, "dispatch", lambda *args: applied.append(args) or real(*args))
    xml = event_xml(new_openid(), "subscribe")
    query = safe.query()
    first = safe.open_reply(safe.post(xml, timestamp=int(query["timestamp"]), nonce=query["nonce"]))
    same_request = safe.open_reply(safe.post(xml, timestamp=int(query["timestamp"]), nonce=query["nonce"]))
    resigned = safe.open_reply(safe.post(xml))  # WeChat's retry with a fresh signature
    assert first.findtext("Content") == same_request.findtext("Content") == resigned.findtext("Content") == "欢迎"
    assert len(applied) == 1


def test_plaintext_retry_with_the_same_query_and_body_is_answered(db, client):
    plain = WeChat(client, make_account("wx00000000000000a1", OfficialAccount.MessageMode.PLAINTEXT))
    query = plain.query()
    openid = new_openid()
    body = event_xml(openid, "subscribe")
    assert plain.post_raw(query, body).content == b"success"
    assert plain.post_raw(query, body).content == b"success"
    forged = plain.post_raw(query, event_xml(openid, "unsubscribe"))
    assert forged.status_code == 403
    assert Follower.objects.get(openid=openid).subscribed is True


# --- Racing copies: exactly one applied ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_copies_of_one_receipt_racing_each_other_are_applied_once(monkeypatch):
    """Four threads hand in the same receipt at the same moment: one applies it, the others get its answer."""
    account = make_account(SAFE_APPID, OfficialAccount.MessageMode.SAFE)
    template = MessageTemplate.objects.create(account=account, template_id="tpl-race", title="Race", content="x")
    message = Message.objects.create(
        account=account,
        template=template,
        template_id_sent="tpl-race",
        touser="oRacingRecipient00000000001",
        client_msg_id="race",
        status=Message.Status.SENT,
        msgid=8_000_001,
    )
    parsed = messages.parse_xml(receipt_xml(message.touser, message.msgid, "success"))
    applied = []
    real = services.record_receipt

    def slow_record(*args):
        applied.append(args)
        time.sleep(0.2)  # keep the first transaction open while the others arrive
        return real(*args)

    monkeypatch.setattr(services, "record_receipt", slow_record)
    start = threading.Barrier(4)
    answers: list[object] = []

    def hand_in(index: int) -> None:
        try:
            start.wait()
            answers.append(services.dispatch_once(account, parsed, signed_query=f"{time.time()}:{index}"))
        except messages.CallbackRejected as exc:
            answers.append(exc.status)
        finally:
            connection.close()

    threads = [threading.Thread(target=hand_in, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == ["", "", "", ""]
    assert len(applied) == 1
    assert ProcessedCallback.objects.count() == 1
    message.refresh_from_db()
    assert message.status == Message.Status.DELIVERED
    assert DeliveryReceipt.objects.get().state == DeliveryReceipt.State.APPLIED


@pytest.mark.django_db(transaction=True)
def test_copies_of_one_encrypted_receipt_racing_each_other_are_stored_once():
    """The one INSERT of an encrypted receipt: four copies at the same moment, one row, every copy answered."""
    account = make_account(SAFE_APPID, OfficialAccount.MessageMode.SAFE)
    parsed = messages.parse_xml(receipt_xml("oRacingRecipient00000000002", 8_000_002, "success"))
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def hand_in() -> None:
        try:
            start.wait()
            services.store_receipt(account, parsed)
        except BaseException as exc:  # a failed thread must fail the test, not vanish
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=hand_in) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert DeliveryReceipt.objects.filter(msgid=8_000_002).count() == 1
    assert not ProcessedCallback.objects.exists()


def test_requests_are_not_atomic_so_a_shared_insert_commits_before_its_requests_answer():
    """The group commit's leader writes other requests' receipts on its own connection and releases them when the
    INSERT returns: that is their commit only in autocommit.  ATOMIC_REQUESTS would wrap the leader's request in a
    transaction and release the others before anything is committed."""
    assert not any(database.get("ATOMIC_REQUESTS") for database in settings.DATABASES.values())


def receipts_per_insert() -> tuple[float, float]:
    """(receipts, INSERTs) counted so far by the histogram of the group commit."""
    samples = {sample.name: sample.value for sample in RECEIPTS_PER_INSERT.collect()[0].samples}
    return samples["wxnotify_callback_receipts_per_insert_sum"], samples["wxnotify_callback_receipts_per_insert_count"]


@pytest.mark.django_db(transaction=True)
def test_receipts_arriving_during_a_write_share_the_next_insert_and_answer_after_it(monkeypatch):
    """The group commit of encrypted receipts (services.RECEIPT_WRITES): while one request's INSERT runs, five more
    receipts queue; none is answered before its own INSERT, which they share, and one task check follows each."""
    account = make_account(SAFE_APPID, OfficialAccount.MessageMode.SAFE)
    batches: list[int] = []
    writing, release = threading.Event(), threading.Event()
    real = services.record_delivery_receipts

    def gated(receipts):
        batches.append(len(receipts))
        if len(batches) == 1:
            writing.set()
            assert release.wait(10)
        return real(receipts)

    monkeypatch.setattr(services, "record_delivery_receipts", gated)
    task_checks: list[None] = []
    monkeypatch.setattr(services, "request_receipt_application", lambda: task_checks.append(None))
    answered: list[int] = []
    errors: list[BaseException] = []
    inserts_before = receipts_per_insert()

    def hand_in(index: int) -> None:
        try:
            parsed = messages.parse_xml(receipt_xml(f"oGroupRecipient{index:012d}", 8_100_000 + index, "success"))
            services.store_receipt(account, parsed)
            answered.append(index)
        except BaseException as exc:  # a failed thread must fail the test, not vanish
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=hand_in, args=(0,))]
    threads[0].start()
    assert writing.wait(10)
    threads += [threading.Thread(target=hand_in, args=(index,)) for index in range(1, 6)]
    for thread in threads[1:]:
        thread.start()
    deadline = time.monotonic() + 10
    while len(services.RECEIPT_WRITES._queue) < 5:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert answered == []
    release.set()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert sorted(answered) == list(range(6))
    assert batches == [1, 5]
    assert len(task_checks) == 2
    receipts, inserts = (after - before for after, before in zip(receipts_per_insert(), inserts_before, strict=True))
    assert (receipts, inserts) == (6, 2)  # what wxnotify_callback_receipts_per_insert tells operators
    assert DeliveryReceipt.objects.filter(account=account, state=DeliveryReceipt.State.RECEIVED).count() == 6


# --- Pruning ------------------------------------------------------------------------------------------------------


def test_pruning_forgets_records_past_the_replay_window_only(plain):
    messages = sent_messages(plain.account, 3)
    for message in messages:
        plain.post(receipt_for(message))
    DeliveryReceipt.objects.all().delete()  # applied receipts' own pruning is tested below
    old = timezone.now() - timedelta(seconds=services.dedup_seconds() + 5)
    first = ProcessedCallback.objects.order_by("pk").first()
    ProcessedCallback.objects.filter(pk=first.pk).update(processed_at=old)
    assert tasks.prune_processed_callbacks() == 1
    assert ProcessedCallback.objects.count() == 2
    assert not ProcessedCallback.objects.filter(pk=first.pk).exists()


def test_pruning_forgets_applied_receipts_past_the_replay_window_only(safe):
    """Applied receipts are kept as de-duplication records for the replay window; waiting ones are never pruned."""
    messages = sent_messages(safe.account, 2)
    for message in messages:
        assert safe.post(receipt_for(message)).content == b"success"  # applied inline (tasks run synchronously)
    old = timezone.now() - timedelta(seconds=services.dedup_seconds() + 5)
    DeliveryReceipt.objects.filter(msgid=messages[0].msgid).update(received_at=old)
    DeliveryReceipt.objects.create(
        account=safe.account, msgid=7_999_999, wechat_status="success", state=DeliveryReceipt.State.PENDING
    )
    DeliveryReceipt.objects.filter(msgid=7_999_999).update(received_at=old)
    assert tasks.prune_processed_callbacks() == 1
    assert sorted(DeliveryReceipt.objects.values_list("msgid", "state")) == [
        (messages[1].msgid, DeliveryReceipt.State.APPLIED),
        (7_999_999, DeliveryReceipt.State.PENDING),
    ]
    # A retry of the pruned receipt is stored again and changes nothing: its message is delivered already.
    assert safe.post(receipt_for(messages[0])).content == b"success"
    assert Message.objects.get(pk=messages[0].pk).status == Message.Status.DELIVERED


def test_pruning_deletes_in_batches(safe, monkeypatch):
    monkeypatch.setattr(services, "PRUNE_BATCH_SIZE", 2)
    old = timezone.now() - timedelta(hours=1)
    ProcessedCallback.objects.bulk_create(
        ProcessedCallback(
            account=safe.account, identity=f"{i:064d}", signed_query=f"{i:064d}", content="c", processed_at=old
        )
        for i in range(5)
    )
    assert services.prune_processed_callbacks(timezone.now()) == 5
    assert not ProcessedCallback.objects.exists()


@pytest.mark.django_db
def test_migrate_keeps_one_prune_schedule():
    call_command("migrate", verbosity=0)
    call_command("migrate", verbosity=0)
    schedules = Schedule.objects.filter(name=CALLBACK_PRUNE_SCHEDULE_NAME)
    assert [(s.func, s.schedule_type, s.minutes) for s in schedules] == [(CALLBACK_PRUNE_TASK, Schedule.MINUTES, 10)]


# --- Compatible mode trusts only the encrypted part ----------------------------------------------------------------


@pytest.mark.parametrize("mode", [OfficialAccount.MessageMode.COMPATIBLE, OfficialAccount.MessageMode.SAFE])
def test_raw_only_request_is_403_on_compatible_and_safe_accounts(db, client, mode):
    """The callback Token alone must not forge events: without ``Encrypt`` nothing is signed over the body."""
    wechat = WeChat(client, make_account(SAFE_APPID, mode))
    openid = new_openid()
    for query_extra in ({}, {"encrypt_type": "raw"}):
        response = wechat.post_raw({**wechat.query(), **query_extra}, event_xml(openid, "unsubscribe"))
        assert response.status_code == 403
    assert not Follower.objects.exists()
    assert wechat.post(text_xml(openid, "hi"), encrypted=True).content == b"success"
    assert Follower.objects.filter(openid=openid).exists()


# --- SQLite writers take turns ------------------------------------------------------------------------------------


def test_callback_writers_take_turns_on_sqlite_only(db):
    """On SQLite the threads of a process queue for the one write lock instead of polling it (starvation);
    PostgreSQL writes rows concurrently, so nothing is serialised there."""
    with services.one_sqlite_writer():
        held = services._sqlite_write_turn.locked()
    assert held is (connection.vendor == "sqlite")
    assert not services._sqlite_write_turn.locked()
