"""Subscription-notification events at the callback endpoint: XML and JSON, one item or a list (a single JSON
item as an object), plaintext and safe mode; they change the consent ledger and never create followers."""

from __future__ import annotations

import itertools
import json
import time
from urllib.parse import urlencode

import pytest

from accounts.models import Follower
from callbacks.models import ProcessedCallback
from messaging.models import DeliveryReceipt
from subscriptions.models import SubscriptionConsent
from tests.callbacks.test_callback_endpoint import ORIGINAL_ID, WeChat, new_openid, plain, safe
from wxnotify.wechat.crypto import compute_signature

__all__ = ["plain", "safe"]  # fixtures used by name below

pytestmark = pytest.mark.usefixtures("fresh_cache")

ONE = "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc"
TWO = "9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI"
_times = itertools.count(int(time.time()) - 120)


def subscription_xml(openid: str, event: str, items: list[tuple[str, str]], wrapper: str) -> str:
    """The event as WeChat's page shows it (https://developers.weixin.qq.com/doc/service/guide/product/subscription_messages/push.html)."""
    listed = "".join(
        f"<List><TemplateId><![CDATA[{pri_tmpl_id}]]></TemplateId>"
        f"<SubscribeStatusString><![CDATA[{status}]]></SubscribeStatusString><PopupScene>1</PopupScene></List>"
        for pri_tmpl_id, status in items
    )
    return (
        f"<xml><ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{next(_times)}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        f"<Event><![CDATA[{event}]]></Event><{wrapper}>{listed}</{wrapper}></xml>"
    )


def subscription_json(openid: str, event: str, items: list[tuple[str, str]], *, single_object: bool = False) -> str:
    listed = [{"TemplateId": pri_tmpl_id, "SubscribeStatusString": status} for pri_tmpl_id, status in items]
    document = {
        "ToUserName": ORIGINAL_ID,
        "FromUserName": openid,
        "CreateTime": next(_times),
        "MsgType": "event",
        "Event": event,
        "List": listed[0] if single_object else listed,
    }
    return json.dumps(document)


def post_json(wechat: WeChat, body: str):
    """A JSON callback: plaintext, or in safe mode the JSON envelope around the encrypted JSON."""
    query = wechat.query()
    if wechat.account.message_mode != wechat.account.MessageMode.SAFE:
        return wechat.client.post(f"{wechat.path}?{urlencode(query)}", data=body, content_type="application/json")
    encrypt = wechat.crypto().encrypt(body)
    query["encrypt_type"] = "aes"
    query["msg_signature"] = compute_signature(wechat.account.token, query["timestamp"], query["nonce"], encrypt)
    envelope = json.dumps({"ToUserName": ORIGINAL_ID, "Encrypt": encrypt})
    return wechat.client.post(f"{wechat.path}?{urlencode(query)}", data=envelope, content_type="application/json")


def consent(wechat: WeChat, openid: str, pri_tmpl_id: str) -> SubscriptionConsent:
    return SubscriptionConsent.objects.get(account=wechat.account, openid=openid, pri_tmpl_id=pri_tmpl_id)


@pytest.mark.parametrize("mode", ["plain", "safe"])
def test_xml_popup_with_a_list_adds_credits_and_rejections_without_a_follower(mode, request):
    wechat: WeChat = request.getfixturevalue(mode)
    openid = new_openid()
    for _ in range(2):
        xml = subscription_xml(
            openid, "subscribe_msg_popup_event", [(ONE, "accept"), (TWO, "reject")], "SubscribeMsgPopupEvent"
        )
        response = wechat.post(xml)
        assert response.status_code == 200 and response.content == b"success"
    assert consent(wechat, openid, ONE).credits == 2
    assert consent(wechat, openid, TWO).rejected
    assert not Follower.objects.filter(openid=openid).exists()


def test_xml_change_event_single_item_rejects_whatever_the_wrapper_is_called(plain):
    openid = new_openid()
    plain.post(subscription_xml(openid, "subscribe_msg_popup_event", [(ONE, "accept")], "SubscribeMsgPopupEvent"))
    # WeChat's old example named the change event's wrapper after the popup's: the items count either way.
    response = plain.post(
        subscription_xml(openid, "subscribe_msg_change_event", [(ONE, "reject")], "SubscribeMsgPopupEvent")
    )
    assert response.status_code == 200
    row = consent(plain, openid, ONE)
    assert row.rejected and row.rejected_by == SubscriptionConsent.Source.CHANGE and row.credits == 1


@pytest.mark.parametrize("mode", ["plain", "safe"])
@pytest.mark.parametrize("single_object", [True, False])
def test_json_events_single_object_or_array(mode, single_object, request):
    wechat: WeChat = request.getfixturevalue(mode)
    openid = new_openid()
    response = post_json(
        wechat, subscription_json(openid, "subscribe_msg_popup_event", [(ONE, "accept")], single_object=single_object)
    )
    assert response.status_code == 200 and response.content == b"success"
    assert consent(wechat, openid, ONE).credits == 1
    response = post_json(
        wechat, subscription_json(openid, "subscribe_msg_change_event", [(ONE, "reject")], single_object=single_object)
    )
    assert response.status_code == 200
    assert consent(wechat, openid, ONE).rejected
    assert not Follower.objects.filter(openid=openid).exists()


def test_json_repeat_is_applied_once(plain):
    openid = new_openid()
    body = subscription_json(openid, "subscribe_msg_popup_event", [(ONE, "accept"), (TWO, "accept")])
    query = plain.query()
    for _ in range(2):
        response = plain.client.post(f"{plain.path}?{urlencode(query)}", data=body, content_type="application/json")
        assert response.status_code == 200
    assert consent(plain, openid, ONE).credits == 1 and consent(plain, openid, TWO).credits == 1


@pytest.mark.parametrize(
    "body", ["[1, 2]", '{"FromUserName": "oX", "List": 5}', '{"List": ' + "[" * 20000, "{not json"]
)
def test_bad_json_is_refused(plain, body):
    query = plain.query()
    response = plain.client.post(f"{plain.path}?{urlencode(query)}", data=body, content_type="application/json")
    assert response.status_code == 400
    assert not SubscriptionConsent.objects.exists()


def test_sent_event_is_stored_as_a_receipt_and_changes_no_consent_nor_follower(plain):
    openid = new_openid()
    xml = (
        f"<xml><ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{next(_times)}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        "<Event><![CDATA[subscribe_msg_sent_event]]></Event><SubscribeMsgSentEvent><List>"
        f"<TemplateId><![CDATA[{ONE}]]></TemplateId><MsgID>1700827132819554304</MsgID><ErrorCode>0</ErrorCode>"
        "<ErrorStatus><![CDATA[success]]></ErrorStatus></List></SubscribeMsgSentEvent></xml>"
    )
    assert plain.post(xml).status_code == 200
    assert ProcessedCallback.objects.filter(account=plain.account).count() == 1
    assert DeliveryReceipt.objects.filter(account=plain.account, msgid=1700827132819554304, template_id=ONE).exists()
    assert not SubscriptionConsent.objects.exists() and not Follower.objects.filter(openid=openid).exists()
