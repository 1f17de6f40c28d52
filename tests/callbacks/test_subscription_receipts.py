"""subscribe_msg_sent_event at the callback endpoint: each List item (XML, or JSON where one item comes as an object)
becomes a subscription receipt, applied to its message a moment later like a TEMPLATESENDJOBFINISH; a retry stores
nothing twice, and two reports of one second with different MsgIDs are two reports."""

from __future__ import annotations

import itertools
import json
import time

import pytest

from messaging.models import Channel, DeliveryReceipt, Message
from templates_app.models import SubscriptionTemplate
from tests.callbacks.test_callback_endpoint import ORIGINAL_ID, WeChat, new_openid, plain, safe
from tests.callbacks.test_subscription_events import post_json

__all__ = ["plain", "safe"]  # fixtures used by name below

pytestmark = pytest.mark.usefixtures("fresh_cache")

ONE = "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc"
TWO = "9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI"
_times = itertools.count(int(time.time()) - 60)
_msgids = itertools.count(1700827132819554304)


def sent_xml(openid: str, items: list[tuple[str, int, int, str]], create_time: int | None = None) -> str:
    """The event as WeChat's page shows it: one ``<List>`` per (TemplateId, MsgID, ErrorCode, ErrorStatus)."""
    listed = "".join(
        f"<List><TemplateId><![CDATA[{pri}]]></TemplateId><MsgID>{msgid}</MsgID><ErrorCode>{code}</ErrorCode>"
        f"<ErrorStatus><![CDATA[{status}]]></ErrorStatus></List>"
        for pri, msgid, code, status in items
    )
    return (
        f"<xml><ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{create_time or next(_times)}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        f"<Event><![CDATA[subscribe_msg_sent_event]]></Event><SubscribeMsgSentEvent>{listed}</SubscribeMsgSentEvent>"
        "</xml>"
    )


def sent_json(openid: str, item: dict) -> str:
    """A JSON event whose List holds one item, as an object (WxJava PR #2477)."""
    return json.dumps(
        {
            "ToUserName": ORIGINAL_ID,
            "FromUserName": openid,
            "CreateTime": next(_times),
            "MsgType": "event",
            "Event": "subscribe_msg_sent_event",
            "List": item,
        }
    )


def subscription_message(wechat: WeChat, openid: str, pri_tmpl_id: str = ONE, **fields) -> Message:
    template, _ = SubscriptionTemplate.objects.get_or_create(
        account=wechat.account,
        pri_tmpl_id=pri_tmpl_id,
        defaults={"title": "发货通知", "type": SubscriptionTemplate.Type.ONE_TIME, "content": "{{thing1.DATA}}"},
    )
    return Message.objects.create(
        account=wechat.account,
        channel=Channel.SUBSCRIBE,
        subscription_template=template,
        template_id_sent=pri_tmpl_id,
        touser=openid,
        data={"thing1": {"value": "x"}},
        client_msg_id=f"k-{next(_msgids)}",
        status=fields.pop("status", Message.Status.SENT),
        **fields,
    )


def refreshed(message: Message) -> Message:
    message.refresh_from_db()
    return message


@pytest.mark.parametrize("mode", ["plain", "safe"])
def test_an_xml_event_with_two_items_settles_both_messages(mode, request):
    wechat: WeChat = request.getfixturevalue(mode)
    openid = new_openid()
    one, two = next(_msgids), next(_msgids)
    delivered = subscription_message(wechat, openid, ONE, msgid=one)
    refused = subscription_message(wechat, openid, TWO)  # bizsend answered without a msgid
    xml = sent_xml(openid, [(ONE, one, 0, "success"), (TWO, two, 10005, "failed")])
    for _ in range(2):  # WeChat's retry of the same event stores and changes nothing more
        response = wechat.post(xml)
        assert (response.status_code, response.content) == (200, b"success")
    assert DeliveryReceipt.objects.filter(account=wechat.account, channel=Channel.SUBSCRIBE).count() == 2
    assert refreshed(delivered).status == Message.Status.DELIVERED
    refused = refreshed(refused)
    assert (refused.status, refused.errcode, refused.msgid) == (Message.Status.FAILED, 10005, two)
    assert "failed" in refused.errmsg and "10005" in refused.errmsg


@pytest.mark.parametrize("mode", ["plain", "safe"])
def test_a_json_event_with_one_item_as_an_object_is_a_receipt(mode, request):
    wechat: WeChat = request.getfixturevalue(mode)
    openid = new_openid()
    msgid = next(_msgids)
    message = subscription_message(wechat, openid)
    item = {"TemplateId": ONE, "MsgID": msgid, "ErrorCode": 0, "ErrorStatus": "success"}
    response = post_json(wechat, sent_json(openid, item))
    assert (response.status_code, response.content) == (200, b"success")
    receipt = DeliveryReceipt.objects.get(account=wechat.account, msgid=msgid)
    assert (receipt.channel, receipt.template_id, receipt.error_code, receipt.openid) == (
        Channel.SUBSCRIBE,
        ONE,
        0,
        openid,
    )
    message = refreshed(message)
    assert (message.status, message.msgid) == (Message.Status.DELIVERED, msgid)


def test_two_reports_within_one_second_are_two_reports(plain):
    openid = new_openid()
    first, second = subscription_message(plain, openid), subscription_message(plain, openid)
    moment = next(_times)
    for msgid in (next(_msgids), next(_msgids)):
        assert plain.post(sent_xml(openid, [(ONE, msgid, 0, "success")], create_time=moment)).status_code == 200
    assert {refreshed(first).status, refreshed(second).status} == {Message.Status.DELIVERED}


def test_a_report_for_no_message_waits_as_pending(plain):
    openid = new_openid()
    msgid = next(_msgids)
    assert plain.post(sent_xml(openid, [(ONE, msgid, 0, "success")])).status_code == 200
    assert DeliveryReceipt.objects.get(account=plain.account, msgid=msgid).state == DeliveryReceipt.State.PENDING


def test_an_item_without_a_template_is_skipped_and_the_others_kept(plain):
    openid = new_openid()
    msgid = next(_msgids)
    xml = sent_xml(openid, [("", next(_msgids), 0, "success"), (ONE, msgid, 0, "success")])
    assert plain.post(xml).status_code == 200
    assert list(
        DeliveryReceipt.objects.filter(account=plain.account, openid=openid).values_list("msgid", flat=True)
    ) == [msgid]
