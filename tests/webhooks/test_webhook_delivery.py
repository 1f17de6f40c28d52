"""Webhook events from status changes to a local receiver: signed, once each, in order per message, after outages.

Tasks run inline and the tests use real transactions: a send commits, its delivery task runs, the write-back
commits the outbox rows, and their nudge runs the webhook task, as the workers would.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from accounts.models import Follower, OfficialAccount
from messaging import events
from messaging.models import ApprovalPolicy, Campaign, Message
from messaging.services import (
    RecipientSpec,
    apply_received_receipts,
    cancel_campaign,
    create_campaign,
    record_delivery_receipt,
    reject_campaign,
    send_message,
)
from messaging.tasks import sweep_messages
from sandbox.demo import DEMO_APPID
from tests.factories import (
    ORDER_DATA,
    ORDER_TEMPLATE,
    create_demo_account,
    create_staff,
    create_templates,
    ensure_staff_group,
)
from tests.webhooks.conftest import start_receiver
from webhooks import nudge, signing
from webhooks.models import Delivery, Endpoint, Event
from webhooks.tasks import deliver_webhooks
from wxnotify.wechat.tokens import default_token_manager


@pytest.fixture
def account(transactional_db, sandbox_api, django_user_model):
    cache.clear()
    default_token_manager().forget(DEMO_APPID)
    account = create_demo_account(message_mode=OfficialAccount.MessageMode.SAFE)
    create_templates(account)
    Follower.objects.bulk_create([Follower(account=account, openid=openid) for openid in sandbox_api.followers()])
    yield account
    default_token_manager().forget(DEMO_APPID)


@pytest.fixture
def owner(account, django_user_model):
    return create_staff(django_user_model, "service", ensure_staff_group(), account)


def endpoint_for(account, owner, url: str, kinds=events.KINDS) -> Endpoint:
    return Endpoint.objects.create(
        owner=owner, account=account, url=url, secret="s3cret-for-the-tests", event_types=list(kinds)
    )


def send(account, openid: str) -> Message:
    message = send_message(account=account, template_id=ORDER_TEMPLATE, data=ORDER_DATA, touser=openid).message
    message.refresh_from_db()
    return message


def receipt(account, message: Message, status: str = "success") -> None:
    """WeChat's receipt as the callback stores it, then the workers' batch that applies it."""
    record_delivery_receipt(account=account, msgid=message.msgid, wechat_status=status, openid=message.touser)
    apply_received_receipts()


def pass_time() -> None:
    """What the schedule does every minute, with the clock past every backoff."""
    Delivery.objects.filter(state=Delivery.State.PENDING).update(next_attempt_at=timezone.now())
    deliver_webhooks()


def test_a_message_sent_then_delivered_reaches_the_receiver_signed_in_order(account, owner, receiver, sandbox_api):
    endpoint_for(account, owner, receiver.url)
    message = send(account, sandbox_api.followers()[0])
    receipt(account, message)

    assert [event["type"] for event in receiver.events()] == ["message.sent", "message.delivered"]
    sent, delivered = receiver.received
    for request in receiver.received:
        assert request.path == "/hooks/wxnotify"
        assert request.headers["X-Wxnotify-Event-Id"] == request.json["id"]
        fields = dict(part.split("=", 1) for part in request.headers["X-Wxnotify-Signature"].split(","))
        assert fields["v1"] == signing.signature("s3cret-for-the-tests", int(fields["t"]), request.body)
    assert sent.json["account"] == DEMO_APPID
    assert sent.json["message"] == {
        "id": message.pk,
        "channel": "template",
        "status": "sent",
        "touser": message.touser,
        "client_msg_id": message.client_msg_id,
        "msgid": message.msgid,
        "errcode": None,
        "errmsg": "",
        "campaign": None,
    }
    assert delivered.json["message"]["status"] == "delivered"
    log = Delivery.objects.order_by("pk")
    assert [(d.state, d.attempts, d.last_status_code) for d in log] == [("delivered", 1, 200)] * 2
    assert all(d.latency_ms is not None for d in log)


def test_without_a_subscribing_endpoint_no_event_is_written(account, owner, receiver, sandbox_api):
    endpoint_for(account, owner, receiver.url, kinds=[events.CAMPAIGN_FINISHED])
    message = send(account, sandbox_api.followers()[0])
    receipt(account, message, "failed: user block")
    assert Event.objects.count() == 0
    assert receiver.received == []


def test_an_event_rolls_back_with_its_status_change(account, owner, receiver, sandbox_api):
    endpoint_for(account, owner, receiver.url)
    message = send(account, sandbox_api.followers()[0])
    written = Event.objects.count()
    with pytest.raises(RuntimeError), transaction.atomic():
        receipt(account, message)
        assert Event.objects.count() == written + 1
        raise RuntimeError
    assert Event.objects.count() == written
    message.refresh_from_db()
    assert message.status == Message.Status.SENT


def test_a_receiver_down_for_an_hour_gets_every_event_later_once_each_in_order(account, owner, receiver, sandbox_api):
    receiver.server.shutdown()
    receiver.server.server_close()
    endpoint_for(account, owner, receiver.url)
    messages = [send(account, openid) for openid in sandbox_api.followers()[:6]]
    for index, message in enumerate(messages):
        receipt(account, message, "success" if index % 2 else "failed: system failed")
    # An hour of retries: only the first event of each message is tried; the later ones wait behind it.
    for _ in range(5):
        pass_time()
    log = Delivery.objects.all()
    assert log.count() == 12
    assert {d.attempts for d in log if d.event.kind == events.MESSAGE_SENT} == {6}
    assert {d.attempts for d in log if d.event.kind != events.MESSAGE_SENT} == {0}
    assert all("Connection" in d.last_error or "refused" in d.last_error for d in log if d.attempts)

    with start_receiver(receiver):
        pass_time()
        pass_time()

    ids = [event["id"] for event in receiver.events()]
    assert len(ids) == 12
    assert Counter(ids).most_common(1)[0][1] == 1
    order = defaultdict(list)
    for event in receiver.events():
        order[event["message"]["id"]].append(event["type"])
    for index, message in enumerate(messages):
        assert order[message.pk] == ["message.sent", "message.delivered" if index % 2 else "message.failed"]
    assert set(Delivery.objects.values_list("state", flat=True)) == {Delivery.State.DELIVERED}


def test_an_event_given_up_after_the_retry_window_no_longer_holds_the_next(account, owner, receiver, sandbox_api):
    receiver.status = 500
    endpoint_for(account, owner, receiver.url)
    message = send(account, sandbox_api.followers()[0])
    receipt(account, message)
    first = Delivery.objects.get(event__kind=events.MESSAGE_SENT)
    assert "HTTP 500" in first.last_error
    Delivery.objects.filter(pk=first.pk).update(retry_until=timezone.now() - timedelta(seconds=1))
    pass_time()
    first.refresh_from_db()
    assert (first.state, first.attempts) == (Delivery.State.FAILED, 2)
    receiver.status = 200
    pass_time()
    assert [event["type"] for event in receiver.events()] == ["message.delivered"]


def test_a_campaign_reports_its_failures_and_its_end(account, owner, receiver, sandbox_api, settings):
    endpoint_for(account, owner, receiver.url)
    openids = sandbox_api.followers()[:5]
    Follower.objects.filter(account=account, openid=openids[0]).update(subscribed=False)
    campaign = create_campaign(
        account=account, template_id=ORDER_TEMPLATE, data=ORDER_DATA, recipients=RecipientSpec.openids(openids)
    )
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.DONE
    kinds = Counter(event["type"] for event in receiver.events())
    assert kinds == {"message.sent": 4, "message.failed": 1, "campaign.finished": 1}
    finished = next(event for event in receiver.events() if event["type"] == "campaign.finished")
    assert finished["campaign"] == {"id": campaign.pk, "state": "done"}


def test_a_cancelled_campaign_reports_its_cancelled_messages_and_its_end(account, owner, receiver, sandbox_api):
    endpoint_for(account, owner, receiver.url, kinds=[events.MESSAGE_FAILED, events.CAMPAIGN_FINISHED])
    with transaction.atomic():
        # Cancelled before its delivery tasks start (they start on commit).
        campaign = create_campaign(
            account=account,
            template_id=ORDER_TEMPLATE,
            data=ORDER_DATA,
            recipients=RecipientSpec.openids(sandbox_api.followers()[:3]),
        )
        cancel_campaign(campaign)
    kinds = Counter(event["type"] for event in receiver.events())
    assert kinds == {"message.failed": 3, "campaign.finished": 1}


def test_a_rejected_campaign_reports_its_failed_messages_and_its_end(
    account, owner, receiver, sandbox_api, django_user_model
):
    endpoint_for(account, owner, receiver.url, kinds=[events.MESSAGE_FAILED, events.CAMPAIGN_FINISHED])
    ApprovalPolicy.objects.create(account=account, every_campaign=True)
    campaign = create_campaign(
        account=account,
        template_id=ORDER_TEMPLATE,
        data=ORDER_DATA,
        recipients=RecipientSpec.openids(sandbox_api.followers()[:3]),
        created_by=owner,
    )
    assert Event.objects.count() == 0

    reject_campaign(campaign, by=django_user_model.objects.create_superuser("approver"), note="Not now.")

    kinds = Counter(event["type"] for event in receiver.events())
    assert kinds == {"message.failed": 3, "campaign.finished": 1}
    finished = next(event for event in receiver.events() if event["type"] == "campaign.finished")
    assert finished["campaign"] == {"id": campaign.pk, "state": "rejected"}
    assert sandbox_api.messages() == []


def test_an_endpoint_whose_owner_lost_the_account_gets_nothing(account, owner, receiver, sandbox_api):
    endpoint_for(account, owner, receiver.url)
    account.operators.remove(owner)
    send(account, sandbox_api.followers()[0])
    assert Event.objects.count() == 1
    assert Delivery.objects.count() == 0
    assert receiver.received == []


def test_the_sweeper_reports_a_dead_workers_last_attempt_as_failed(account, owner, receiver, sandbox_api, settings):
    endpoint_for(account, owner, receiver.url, kinds=[events.MESSAGE_FAILED])
    past = timezone.now() - timedelta(minutes=1)
    message = Message.objects.create(
        account=account,
        template=account.templates.get(template_id=ORDER_TEMPLATE),
        template_id_sent=ORDER_TEMPLATE,
        touser=sandbox_api.followers()[0],
        client_msg_id="dead-worker-1",
        status=Message.Status.SENDING,
        attempts=settings.WXNOTIFY_MAX_ATTEMPTS,
        attempted_at=past,
        lease_expires_at=past,
    )
    sweep_messages()
    (event,) = receiver.events()
    assert (event["type"], event["message"]["id"], event["message"]["errcode"]) == ("message.failed", message.pk, -9001)


def test_a_backlog_starts_helper_tasks_and_each_event_still_arrives_once(
    account, owner, receiver, sandbox_api, settings, monkeypatch
):
    settings.WXNOTIFY_WEBHOOK_CONCURRENCY = 1  # claims of 4: a campaign of 8 fills them
    settings.WXNOTIFY_WEBHOOK_TASKS = 2
    started: list[tuple] = []
    real_async_task = nudge.async_task
    monkeypatch.setattr(
        nudge, "async_task", lambda *args, **kwargs: started.append(args) or real_async_task(*args, **kwargs)
    )
    endpoint_for(account, owner, receiver.url, kinds=[events.MESSAGE_SENT])
    create_campaign(
        account=account,
        template_id=ORDER_TEMPLATE,
        data=ORDER_DATA,
        recipients=RecipientSpec.openids(sandbox_api.followers()[:8]),
    )
    assert (nudge.DELIVER_TASK, 1) in started
    ids = [event["id"] for event in receiver.events()]
    assert len(ids) == len(set(ids)) == 8
    assert cache.get(nudge.working_key(1)) is None
