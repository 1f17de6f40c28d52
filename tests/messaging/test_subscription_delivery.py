"""Subscription notifications through the send pipeline, against the sandbox WeChat: bizsend, the consent ledger
checked before each send and kept in step with WeChat's answers, no blind resend, and subscribe_msg_sent_event
receipts reconciled like TEMPLATESENDJOBFINISH (before or after the write-back, with or without a msgid).

Messages are written straight to the table (the API that accepts them is not this module's subject); tasks run
inline, with real transactions, as in ``test_pipeline``.
"""

from __future__ import annotations

import itertools
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from messaging.models import Campaign, Channel, DeliveryReceipt, Message, SendingCap
from messaging.reasons import CAPPED_REASON, CONSENT_NO_CREDIT_REASON, CONSENT_REJECTED_REASON
from messaging.services import apply_received_receipts, record_subscription_receipts, send_message
from messaging.tasks import deliver_campaign, deliver_due_messages, sweep_messages
from sandbox.demo import DEMO_APPID, DEMO_SUBSCRIPTION_TEMPLATES
from subscriptions.models import SubscriptionConsent
from templates_app.models import SubscriptionTemplate
from templates_app.services import sync_subscription_templates
from tests.factories import ORDER_TEMPLATE
from tests.messaging.test_pipeline import pipeline, refreshed, run_due_retries, send, slow_retries
from wxnotify.wechat.errors import OUTCOME_UNKNOWN_ERRCODE

__all__ = ["pipeline"]  # the fixture, imported for these tests

BIZSEND = "/cgi-bin/message/subscribe/bizsend"
ONE_TIME = DEMO_SUBSCRIPTION_TEMPLATES[0]["pri_tmpl_id"]
DATA = {
    "character_string1": {"value": "SO20261128001"},
    "thing2": {"value": "机械键盘"},
    "time3": {"value": "2026年11月28日 10:30"},
    "phrase7": {"value": "已发货"},
}
PAGE = "https://shop.example.com/orders/SO20261128001"
_keys = itertools.count(1)


@pytest.fixture
def subscriptions(pipeline):
    """The demo account with its subscription templates synced from the sandbox."""
    sync_subscription_templates(pipeline)
    return pipeline


def non_follower(n: int = 0) -> str:
    """An openid the account has never seen as a follower: subscription notifications reach them too."""
    return f"oSubscriber{n:016d}"


def grant(account, sandbox_api, openid: str, credits: int = 1, *, ours: int | None = None) -> None:
    """The user accepted the one-time template ``credits`` times: at WeChat, and in our ledger (``ours`` if given)."""
    if credits:
        sandbox_api.state.grant_credit(DEMO_APPID, openid, ONE_TIME, credits)
    SubscriptionConsent.objects.update_or_create(
        account=account, openid=openid, pri_tmpl_id=ONE_TIME, defaults={"credits": credits if ours is None else ours}
    )


def subscription_message(account, openid: str, **fields) -> Message:
    """A queued subscription notification, as the API (another module's work) stores one."""
    return Message.objects.create(
        account=account,
        channel=Channel.SUBSCRIBE,
        template=None,
        subscription_template=SubscriptionTemplate.objects.get(account=account, pri_tmpl_id=ONE_TIME),
        template_id_sent=ONE_TIME,
        touser=openid,
        data=fields.pop("data", DATA),
        url=fields.pop("url", PAGE),
        client_msg_id=f"sub-{next(_keys)}",
        **fields,
    )


def dead_workers() -> dict:
    """The fields of a message whose worker died mid-send, forty seconds ago: its lease ran out."""
    now = timezone.now()
    return {
        "status": Message.Status.SENDING,
        "attempts": 1,
        "attempted_at": now - timedelta(seconds=40),
        "lease_expires_at": now - timedelta(seconds=1),
    }


def our_credits(account, openid: str) -> int:
    return SubscriptionConsent.objects.get(account=account, openid=openid, pri_tmpl_id=ONE_TIME).credits


def wechat_credits(sandbox_api, openid: str) -> int:
    return sum(held["credits"] for held in sandbox_api.state.credits(DEMO_APPID, openid))


def sent_event(account, openid: str, msgid: int, *, error_code: int = 0, status: str = "success") -> None:
    """What the callback does with a subscribe_msg_sent_event, then the receipt task."""
    item = {"TemplateId": ONE_TIME, "MsgID": str(msgid), "ErrorCode": str(error_code), "ErrorStatus": status}
    record_subscription_receipts(account=account, openid=openid, items=[item], event_time=timezone.now())
    apply_received_receipts()


def receipt_of(account, msgid: int) -> DeliveryReceipt:
    return DeliveryReceipt.objects.get(account=account, msgid=msgid, channel=Channel.SUBSCRIBE)


# --- Sending ------------------------------------------------------------------------------------------------------


def test_a_subscription_notification_goes_through_bizsend_and_spends_one_credit_at_both_ends(
    subscriptions, sandbox_api
):
    openid = non_follower()
    grant(subscriptions, sandbox_api, openid, 2)
    message = subscription_message(subscriptions, openid)
    deliver_due_messages()
    message = refreshed(message)
    assert (message.status, message.attempts, message.errcode) == (Message.Status.SENT, 1, None)
    delivered = sandbox_api.state.list_subscription_messages(DEMO_APPID, openid)
    assert len(delivered) == 1
    assert (delivered[0]["template_id"], delivered[0]["page"], delivered[0]["data"]) == (ONE_TIME, PAGE, DATA)
    assert delivered[0]["msgid"] == message.msgid
    assert "client_msg_id" not in sandbox_api.requests(BIZSEND)[0].json()
    assert not sandbox_api.requests("/cgi-bin/message/template/send")
    assert (our_credits(subscriptions, openid), wechat_credits(sandbox_api, openid)) == (1, 1)


@pytest.mark.parametrize("channel", [Channel.SUBSCRIBE, "auto"])
def test_a_single_send_on_channel_subscribe_or_auto_reaches_a_non_follower_through_bizsend(
    subscriptions, sandbox_api, channel
):
    """Accepted by ``send_message`` (the singles' work), delivered by the pipeline, credit spent at both ends."""
    openid = non_follower(20)
    grant(subscriptions, sandbox_api, openid)
    result = send_message(
        account=subscriptions,
        channel=channel,
        touser=openid,
        subscription_template_id=ONE_TIME,
        template_id=ORDER_TEMPLATE if channel == "auto" else "",
        data={key: item["value"] for key, item in DATA.items()},
        page=PAGE,
    )
    message = refreshed(result.message)
    assert (message.channel, message.status) == (Channel.SUBSCRIBE, Message.Status.SENT)
    [delivered] = sandbox_api.state.list_subscription_messages(DEMO_APPID, openid)
    assert (delivered["msgid"], delivered["page"]) == (message.msgid, PAGE)
    assert (our_credits(subscriptions, openid), wechat_credits(sandbox_api, openid)) == (0, 0)


def test_a_campaign_message_sends_the_campaigns_subscription_content(subscriptions, sandbox_api):
    openid = non_follower(1)
    grant(subscriptions, sandbox_api, openid)
    campaign = Campaign.objects.create(
        account=subscriptions,
        channel=Channel.SUBSCRIBE,
        subscription_template=SubscriptionTemplate.objects.get(account=subscriptions, pri_tmpl_id=ONE_TIME),
        data=DATA,
        page=PAGE,
        recipient_kind=Campaign.RecipientKind.OPENIDS,
        state=Campaign.State.RUNNING,
    )
    message = subscription_message(subscriptions, openid, campaign=campaign, data=None, url="")
    deliver_campaign(campaign.pk)
    assert refreshed(message).status == Message.Status.SENT
    delivered = sandbox_api.state.list_subscription_messages(DEMO_APPID, openid)
    assert (delivered[0]["data"], delivered[0]["page"]) == (DATA, PAGE)


def test_a_refused_or_creditless_user_fails_at_once_without_a_wechat_call(subscriptions, sandbox_api):
    rejected, used_up, unknown = non_follower(2), non_follower(3), non_follower(4)
    SubscriptionConsent.objects.create(account=subscriptions, openid=rejected, pri_tmpl_id=ONE_TIME, rejected=True)
    SubscriptionConsent.objects.create(account=subscriptions, openid=used_up, pri_tmpl_id=ONE_TIME, credits=0)
    sandbox_api.state.grant_credit(DEMO_APPID, rejected, ONE_TIME)  # WeChat's word would be asked in vain
    messages = {openid: subscription_message(subscriptions, openid) for openid in (rejected, used_up, unknown)}
    deliver_due_messages()
    outcomes = {openid: refreshed(m) for openid, m in messages.items()}
    assert {openid: (m.status, m.errcode) for openid, m in outcomes.items()} == dict.fromkeys(
        messages, (Message.Status.FAILED, None)
    )
    assert outcomes[rejected].errmsg == CONSENT_REJECTED_REASON
    assert outcomes[used_up].errmsg == outcomes[unknown].errmsg == CONSENT_NO_CREDIT_REASON
    assert sandbox_api.requests(BIZSEND) == []


def test_the_follower_check_stays_the_template_messages(subscriptions, sandbox_api):
    """A template message to a follower who left fails as before; a subscription notification to them goes."""
    left = sandbox_api.followers()[0]
    subscriptions.followers.filter(openid=left).update(subscribed=False)
    grant(subscriptions, sandbox_api, left)
    template_message = send(subscriptions, touser=left).message
    message = subscription_message(subscriptions, left)
    deliver_due_messages()
    assert refreshed(template_message).status == Message.Status.FAILED
    assert refreshed(message).status == Message.Status.SENT


def test_the_accounts_sending_caps_apply_to_subscription_notifications(subscriptions, sandbox_api):
    """A cap over all the account's templates counts them too; only what the ledger allows is counted."""
    openid = non_follower(19)
    grant(subscriptions, sandbox_api, openid, 3)
    SendingCap.objects.create(account=subscriptions, template=None, limit=1, action=SendingCap.Action.FAIL)
    first, second = subscription_message(subscriptions, openid), subscription_message(subscriptions, openid)
    deliver_due_messages()
    assert [refreshed(m).status for m in (first, second)] == [Message.Status.SENT, Message.Status.FAILED]
    assert second.errmsg == CAPPED_REASON
    assert len(sandbox_api.requests(BIZSEND)) == 1
    assert our_credits(subscriptions, openid) == 2


def test_43101_fails_at_once_and_zeroes_our_credits(subscriptions, sandbox_api):
    openid = non_follower(5)
    grant(subscriptions, sandbox_api, openid, 0, ours=3)  # we counted three; WeChat holds none
    message = subscription_message(subscriptions, openid)
    deliver_due_messages()
    message = refreshed(message)
    assert (message.status, message.errcode, message.attempts) == (Message.Status.FAILED, 43101, 1)
    assert message.next_attempt_at is None
    assert our_credits(subscriptions, openid) == 0
    run_due_retries()
    assert len(sandbox_api.requests(BIZSEND)) == 1


def test_a_transient_error_is_retried_like_a_template_messages(subscriptions, sandbox_api, settings):
    slow_retries(settings)
    openid = non_follower(6)
    grant(subscriptions, sandbox_api, openid)
    sandbox_api.add_api_fault(BIZSEND, errcode=-1)
    message = subscription_message(subscriptions, openid)
    deliver_due_messages()
    message = refreshed(message)
    assert (message.status, message.errcode) == (Message.Status.QUEUED, -1)
    assert message.next_attempt_at > timezone.now() + timedelta(seconds=20)
    assert our_credits(subscriptions, openid) == 1, "a refused call spends nothing"
    run_due_retries()
    message = refreshed(message)
    assert (message.status, message.attempts) == (Message.Status.SENT, 2)
    assert len(sandbox_api.state.list_subscription_messages(DEMO_APPID, openid)) == 1
    assert (our_credits(subscriptions, openid), wechat_credits(sandbox_api, openid)) == (0, 0)


def test_a_quota_answer_holds_the_account_without_spending_the_attempt(subscriptions, sandbox_api):
    openid = non_follower(7)
    grant(subscriptions, sandbox_api, openid)
    sandbox_api.add_api_fault(BIZSEND, errcode=45009)
    message = subscription_message(subscriptions, openid)
    deliver_due_messages()
    message = refreshed(message)
    assert (message.status, message.attempts) == (Message.Status.QUEUED, 0)
    assert message.next_attempt_at > timezone.now() + timedelta(minutes=1)


# --- No blind resend ----------------------------------------------------------------------------------------------


def test_no_answer_fails_the_message_without_a_resend_and_its_receipt_turns_it_delivered(
    subscriptions, sandbox_api, settings
):
    settings.WECHAT_READ_TIMEOUT = 0.3
    openid = non_follower(8)
    grant(subscriptions, sandbox_api, openid, 2)
    sandbox_api.add_api_fault(BIZSEND, delay_ms=1200)  # handled by WeChat, the answer comes too late
    message = subscription_message(subscriptions, openid)
    deliver_due_messages()
    message = refreshed(message)
    assert (message.status, message.errcode) == (Message.Status.FAILED, OUTCOME_UNKNOWN_ERRCODE)
    assert "no resend window" in message.errmsg
    assert message.next_attempt_at is None
    run_due_retries()
    deliver_due_messages()
    delivered = sandbox_api.state.list_subscription_messages(DEMO_APPID, openid)
    assert len(delivered) == 1, "sent once, never resent"
    assert our_credits(subscriptions, openid) == 2, "unknown: nothing spent yet"

    sent_event(subscriptions, openid, delivered[0]["msgid"])
    message = refreshed(message)
    assert (message.status, message.errcode, message.msgid) == (
        Message.Status.DELIVERED,
        None,
        delivered[0]["msgid"],
    )
    assert receipt_of(subscriptions, delivered[0]["msgid"]).message_id == message.pk
    assert (our_credits(subscriptions, openid), wechat_credits(sandbox_api, openid)) == (1, 1)


def test_a_dead_workers_subscription_notification_is_failed_not_resent(subscriptions, sandbox_api, settings):
    openid = non_follower(9)
    grant(subscriptions, sandbox_api, openid)
    message = subscription_message(subscriptions, openid, **dead_workers())
    result = sweep_messages()
    assert result["recovered"] == 1
    message = refreshed(message)
    assert (message.status, message.errcode) == (Message.Status.FAILED, OUTCOME_UNKNOWN_ERRCODE)
    assert "worker sending it stopped" in message.errmsg
    assert message.outcome_unknown_since is not None
    assert sandbox_api.requests(BIZSEND) == []


def test_a_receipt_that_came_during_the_unanswered_attempt_is_applied_when_the_message_fails(
    subscriptions, sandbox_api, settings
):
    settings.WECHAT_READ_TIMEOUT = 0.3
    openid = non_follower(17)
    grant(subscriptions, sandbox_api, openid)
    send(subscriptions, touser=sandbox_api.followers()[1])  # fetches the token, so the next id goes to the send
    sandbox_api.state._ids = itertools.count(40_000_000_000_000_001)
    sent_event(subscriptions, openid, 40_000_000_000_000_001)  # WeChat reported it while we waited for the answer
    sandbox_api.add_api_fault(BIZSEND, delay_ms=1200)
    message = subscription_message(subscriptions, openid)
    deliver_due_messages()
    message = refreshed(message)
    assert (message.status, message.msgid) == (Message.Status.DELIVERED, 40_000_000_000_000_001)
    assert receipt_of(subscriptions, 40_000_000_000_000_001).state == DeliveryReceipt.State.APPLIED
    assert (our_credits(subscriptions, openid), wechat_credits(sandbox_api, openid)) == (0, 0)


def test_a_receipt_that_came_while_the_worker_was_dead_is_applied_when_the_sweeper_fails_it(subscriptions, sandbox_api):
    openid = non_follower(18)
    grant(subscriptions, sandbox_api, openid)
    sent_event(subscriptions, openid, 424_244)
    message = subscription_message(subscriptions, openid, **dead_workers())
    sweep_messages()
    message = refreshed(message)
    assert (message.status, message.errcode, message.msgid) == (Message.Status.DELIVERED, None, 424_244)
    assert our_credits(subscriptions, openid) == 0


def test_a_queued_subscription_notification_with_an_unknown_outcome_is_never_claimed(subscriptions, sandbox_api):
    """However it got back in the queue (a retry asked for by hand), inside the template's resend window too."""
    openid = non_follower(10)
    grant(subscriptions, sandbox_api, openid)
    message = subscription_message(
        subscriptions, openid, attempts=1, outcome_unknown_since=timezone.now() - timedelta(seconds=5)
    )
    deliver_due_messages()
    sweep_messages()
    message = refreshed(message)
    assert (message.status, message.errcode) == (Message.Status.FAILED, OUTCOME_UNKNOWN_ERRCODE)
    assert sandbox_api.requests(BIZSEND) == []


# --- Receipts -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_msgid", [True, False], ids=["bizsend-msgid", "no-msgid"])
def test_a_receipt_after_the_write_back_delivers_the_message(subscriptions, sandbox_api, with_msgid):
    sandbox_api.set_faults(bizsend_msgid=with_msgid)
    openid = non_follower(11)
    grant(subscriptions, sandbox_api, openid, 2)
    first, second = subscription_message(subscriptions, openid), subscription_message(subscriptions, openid)
    deliver_due_messages()
    msgids = [sent["msgid"] for sent in sandbox_api.state.list_subscription_messages(DEMO_APPID, openid)]
    # Both went out side by side: which got which msgid is the order WeChat took them in.
    assert {refreshed(first).msgid, refreshed(second).msgid} == (set(msgids) if with_msgid else {None})
    for msgid in msgids:
        sent_event(subscriptions, openid, msgid)
    assert {(refreshed(m).status, m.msgid) for m in (first, second)} == {
        (Message.Status.DELIVERED, msgids[0]),
        (Message.Status.DELIVERED, msgids[1]),
    }
    assert {receipt_of(subscriptions, msgid).state for msgid in msgids} == {DeliveryReceipt.State.APPLIED}
    # A retry of the event (or a replay) changes nothing.
    sent_event(subscriptions, openid, msgids[0], error_code=10005, status="failed")
    assert refreshed(first).status == Message.Status.DELIVERED


@pytest.mark.parametrize("with_msgid", [True, False], ids=["bizsend-msgid", "no-msgid"])
def test_a_receipt_that_beats_the_write_back_waits_and_is_applied_by_it(subscriptions, sandbox_api, with_msgid):
    sandbox_api.set_faults(bizsend_msgid=with_msgid)
    openid = non_follower(12)
    grant(subscriptions, sandbox_api, openid)
    send(subscriptions, touser=sandbox_api.followers()[1])  # fetches the token, so the next id goes to the send
    sandbox_api.state._ids = itertools.count(30_000_000_000_000_001)
    sent_event(subscriptions, openid, 30_000_000_000_000_001)
    early = receipt_of(subscriptions, 30_000_000_000_000_001)
    assert early.state == DeliveryReceipt.State.PENDING
    message = subscription_message(subscriptions, openid)
    deliver_due_messages()
    message = refreshed(message)
    assert (message.status, message.msgid) == (Message.Status.DELIVERED, 30_000_000_000_000_001)
    early.refresh_from_db()
    assert (early.state, early.message_id) == (DeliveryReceipt.State.APPLIED, message.pk)


def test_a_failed_receipt_fails_the_message_naming_errorstatus_and_errorcode(subscriptions, sandbox_api):
    openid = non_follower(13)
    grant(subscriptions, sandbox_api, openid)
    message = subscription_message(subscriptions, openid)
    deliver_due_messages()
    sent_event(subscriptions, openid, refreshed(message).msgid, error_code=10005, status="failed:user block")
    message = refreshed(message)
    assert (message.status, message.errcode) == (Message.Status.FAILED, 10005)
    assert "failed:user block" in message.errmsg and "10005" in message.errmsg


def test_a_receipt_matching_no_message_waits_then_becomes_unmatched(subscriptions, sandbox_api):
    openid = non_follower(14)
    sent_event(subscriptions, openid, 424_243)
    stray = receipt_of(subscriptions, 424_243)
    assert stray.state == DeliveryReceipt.State.PENDING
    DeliveryReceipt.objects.filter(pk=stray.pk).update(received_at=timezone.now() - timedelta(hours=1))
    assert sweep_messages()["receipts_unmatched"] == 1
    stray.refresh_from_db()
    assert (stray.state, stray.message_id) == (DeliveryReceipt.State.UNMATCHED, None)


# --- Round trip through our callback ------------------------------------------------------------------------------


@pytest.mark.parametrize(("error_code", "callback_format"), [(0, "xml"), (10005, "xml"), (0, "json")])
def test_the_sandbox_reports_bizsend_to_our_callback_and_the_message_ends_there(
    subscriptions, sandbox_api, live_server, error_code, callback_format
):
    """In safe mode, as XML or as JSON (whose single List item comes as an object)."""
    sandbox_api.update_account(
        DEMO_APPID,
        callback_url=f"{live_server.url}{subscriptions.callback_path()}",
        callback_format=callback_format,
    )
    sandbox_api.set_faults(bizsend_msgid=False, sent_event_error_code=error_code, receipt_delay_ms=50)
    openid = non_follower(16)
    grant(subscriptions, sandbox_api, openid)
    message = subscription_message(subscriptions, openid)
    deliver_due_messages()
    deadline = time.monotonic() + 10
    while refreshed(message).status == Message.Status.SENT and time.monotonic() < deadline:
        time.sleep(0.05)
    message = refreshed(message)
    expected = Message.Status.DELIVERED if error_code == 0 else Message.Status.FAILED
    assert message.status == expected
    msgid = sandbox_api.state.list_subscription_messages(DEMO_APPID, openid)[0]["msgid"]
    assert message.msgid == msgid, "bizsend answered without it: the receipt brought it"
    assert receipt_of(subscriptions, msgid).state == DeliveryReceipt.State.APPLIED
