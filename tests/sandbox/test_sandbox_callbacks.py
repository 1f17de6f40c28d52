"""Signed pushes from the sandbox to a tiny local receiver, in plaintext, compatible and safe mode."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit
from xml.etree.ElementTree import Element

import pytest
import requests
from defusedxml import ElementTree

from sandbox.demo import DEMO_ACCOUNT, DEMO_APPID, DEMO_SUBSCRIPTION_TEMPLATES, DEMO_TEMPLATES
from sandbox.state import seeded_openid, special_openids
from tests.servers import QuietHandler, free_port, serving
from wxnotify.wechat.crypto import CallbackCrypto, verify_signature

TOKEN = DEMO_ACCOUNT["token"]
AES_KEY = DEMO_ACCOUNT["encoding_aes_key"]
ORIGINAL_ID = DEMO_ACCOUNT["original_id"]
ORDER_TEMPLATE = DEMO_TEMPLATES[0]["template_id"]
ORDER_DATA = {
    "character_string1": {"value": "SO1"},
    "thing2": {"value": "键盘"},
    "time3": {"value": "10:30"},
    "amount4": {"value": "¥1.00"},
}


@dataclass
class Push:
    path: str
    query: dict[str, str]
    body: str


class Receiver:
    """Stands in for our callback endpoint: records every POST and answers with ``reply_body`` (``status`` 200
    unless changed).  Served by the ``receiver`` fixture."""

    def __init__(self) -> None:
        self.pushes: list[Push] = []
        self.reply_body = "success"
        self.status = 200
        self.arrived = threading.Condition()
        receiver = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8")
                split = urlsplit(self.path)
                # Record before answering: the sandbox's simulate call returns as soon as it has our answer,
                # and the test then reads ``pushes`` straight away.
                with receiver.arrived:
                    receiver.pushes.append(Push(split.path, dict(parse_qsl(split.query)), body))
                    receiver.arrived.notify_all()
                reply = receiver.reply_body.encode("utf-8")
                self.send_response(receiver.status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/wechat/callback/{DEMO_APPID}/"

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Push]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.pushes) >= count, timeout)
        return list(self.pushes)


@pytest.fixture
def receiver():
    server = Receiver()
    with serving(server.httpd):
        yield server


@pytest.fixture
def crypto():
    return CallbackCrypto(TOKEN, AES_KEY, DEMO_APPID)


def open_push(push: Push, mode: str, crypto: CallbackCrypto) -> Element:
    """Verify a push exactly as our callback view must and return its plaintext XML."""
    query = push.query
    assert verify_signature(TOKEN, query["signature"], query["timestamp"], query["nonce"])
    body = ElementTree.fromstring(push.body)
    if mode == "plaintext":
        assert "encrypt_type" not in query
        assert body.find("Encrypt") is None
        return body
    assert query["encrypt_type"] == "aes"
    encrypt = body.findtext("Encrypt")
    plaintext = crypto.decrypt_message(query["msg_signature"], query["timestamp"], query["nonce"], encrypt)
    if mode == "safe":
        assert [child.tag for child in body] == ["ToUserName", "Encrypt"]
        assert body.findtext("ToUserName") == ORIGINAL_ID
    else:
        assert body.findtext("FromUserName") == query["openid"]
        assert body.findtext("MsgType") is not None
    return ElementTree.fromstring(plaintext)


def fetch_token(sandbox, http):
    body = {"grant_type": "client_credential", "appid": DEMO_APPID, "secret": DEMO_ACCOUNT["secret"]}
    return http.post(f"{sandbox.base_url}/cgi-bin/stable_token", json=body).json()["access_token"]


def send(sandbox, http, token, touser, **extra):
    payload = {"touser": touser, "template_id": ORDER_TEMPLATE, "data": ORDER_DATA, **extra}
    return http.post(
        f"{sandbox.base_url}/cgi-bin/message/template/send",
        params={"access_token": token},
        data=json.dumps(payload, ensure_ascii=False).encode("utf-8"),
    ).json()


def wait_for_counter(sandbox, name: str, value: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while sandbox.counters()[name] < value and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.mark.parametrize("mode", ["plaintext", "compatible", "safe"])
def test_delivery_receipts_are_signed_and_encrypted_per_mode(wechat_sandbox, receiver, crypto, mode):
    wechat_sandbox.update_account(DEMO_APPID, mode=mode, callback_url=receiver.url)
    wechat_sandbox.set_faults(receipt_delay_ms=0)
    with requests.Session() as http:
        token = fetch_token(wechat_sandbox, http)
        recipients = [
            seeded_openid(DEMO_APPID, 0),
            special_openids(DEMO_APPID, "rblock_")[0],
            special_openids(DEMO_APPID, "rfail_")[0],
        ]
        msgids = {send(wechat_sandbox, http, token, openid)["msgid"]: openid for openid in recipients}
    pushes = receiver.wait_for(3)
    assert len(pushes) == 3
    statuses = {}
    for push in pushes:
        assert push.path == f"/wechat/callback/{DEMO_APPID}/"
        event = open_push(push, mode, crypto)
        assert event.findtext("Event") == "TEMPLATESENDJOBFINISH"
        assert event.findtext("MsgType") == "event"
        assert event.findtext("ToUserName") == ORIGINAL_ID
        msgid = int(event.findtext("MsgID"))
        assert event.findtext("FromUserName") == msgids[msgid] == push.query["openid"]
        statuses[msgids[msgid]] = event.findtext("Status")
    assert statuses == {
        recipients[0]: "success",
        recipients[1]: "failed:user block",
        recipients[2]: "failed: system failed",
    }
    wait_for_counter(wechat_sandbox, "receipts_sent", 3)
    assert wechat_sandbox.counters()["receipts_sent"] == 3


def test_receipts_wait_for_the_delay_and_duplicates_get_none(wechat_sandbox, receiver):
    wechat_sandbox.update_account(DEMO_APPID, callback_url=receiver.url)
    wechat_sandbox.set_faults(receipt_delay_ms=300)
    with requests.Session() as http:
        token = fetch_token(wechat_sandbox, http)
        started = time.monotonic()
        first = send(wechat_sandbox, http, token, seeded_openid(DEMO_APPID, 0), client_msg_id="once")
        again = send(wechat_sandbox, http, token, seeded_openid(DEMO_APPID, 0), client_msg_id="once")
    assert first["msgid"] == again["msgid"]
    pushes = receiver.wait_for(1)
    assert time.monotonic() - started >= 0.3
    time.sleep(0.5)
    assert len(receiver.pushes) == 1
    assert len(pushes) == 1


def test_no_receipts_when_switched_off(wechat_sandbox, receiver):
    wechat_sandbox.update_account(DEMO_APPID, callback_url=receiver.url)
    wechat_sandbox.set_faults(receipts=False, receipt_delay_ms=0)
    with requests.Session() as http:
        send(wechat_sandbox, http, fetch_token(wechat_sandbox, http), seeded_openid(DEMO_APPID, 0))
    time.sleep(0.3)
    assert receiver.pushes == []
    assert wechat_sandbox.state.snapshot()["receipts_pending"] == 0


def test_failing_callbacks_are_retried_three_times_then_counted(wechat_sandbox, receiver):
    receiver.status = 500
    wechat_sandbox.update_account(DEMO_APPID, callback_url=receiver.url)
    wechat_sandbox.set_faults(receipt_delay_ms=0)
    with requests.Session() as http:
        send(wechat_sandbox, http, fetch_token(wechat_sandbox, http), seeded_openid(DEMO_APPID, 0))
    assert len(receiver.wait_for(3)) == 3
    wait_for_counter(wechat_sandbox, "receipts_failed", 1)
    counters = wechat_sandbox.counters()
    assert (counters["receipts_sent"], counters["receipts_failed"]) == (0, 1)


def test_unreachable_callback_is_counted_not_fatal(wechat_sandbox):
    wechat_sandbox.update_account(DEMO_APPID, callback_url=closed_port_url())
    wechat_sandbox.set_faults(receipt_delay_ms=0)
    with requests.Session() as http:
        token = fetch_token(wechat_sandbox, http)
        send(wechat_sandbox, http, token, seeded_openid(DEMO_APPID, 0))
        wait_for_counter(wechat_sandbox, "receipts_failed", 1)
        assert wechat_sandbox.counters()["receipts_failed"] == 1
        assert send(wechat_sandbox, http, token, seeded_openid(DEMO_APPID, 1))["errcode"] == 0


def closed_port_url() -> str:
    """A URL on a port nothing listens on."""
    return f"http://127.0.0.1:{free_port()}/unreachable/"


def simulate(sandbox, action: str, **body):
    return requests.post(f"{sandbox.base_url}/sandbox/simulate/{action}", json=body, timeout=10).json()


@pytest.mark.parametrize("mode", ["plaintext", "compatible", "safe"])
def test_simulated_text_returns_the_passive_reply(wechat_sandbox, receiver, crypto, mode):
    wechat_sandbox.update_account(DEMO_APPID, mode=mode, callback_url=receiver.url)
    openid = seeded_openid(DEMO_APPID, 2)
    passive = (
        f"<xml><ToUserName><![CDATA[{openid}]]></ToUserName><FromUserName><![CDATA[{ORIGINAL_ID}]]></FromUserName>"
        "<CreateTime>1</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[已收到]]></Content></xml>"
    )
    receiver.reply_body = passive if mode == "plaintext" else crypto.encrypt_reply(passive, nonce="12345")
    reply = simulate(wechat_sandbox, "text", appid=DEMO_APPID, openid=openid, content="你好 ]]> world")
    assert reply["errcode"] == 0
    assert reply["status"] == 200
    assert reply["body"] == receiver.reply_body
    assert reply["reply"] == passive
    [push] = receiver.pushes
    message = open_push(push, mode, crypto)
    assert message.findtext("MsgType") == "text"
    assert message.findtext("Content") == "你好 ]]> world"
    assert int(message.findtext("MsgId")) > 2**53
    assert ElementTree.fromstring(reply["event"]).findtext("Content") == "你好 ]]> world"


def test_simulated_reply_with_a_bad_signature_is_flagged(wechat_sandbox, receiver):
    wechat_sandbox.update_account(DEMO_APPID, callback_url=receiver.url)
    wrong = CallbackCrypto("another-token", AES_KEY, DEMO_APPID)
    receiver.reply_body = wrong.encrypt_reply("<xml/>", nonce="1")
    reply = simulate(wechat_sandbox, "text", appid=DEMO_APPID, openid=seeded_openid(DEMO_APPID, 0), content="hi")
    assert reply["status"] == 200
    assert reply["reply"] is None


def test_subscribe_scan_and_unsubscribe_events(wechat_sandbox, receiver, crypto):
    wechat_sandbox.update_account(DEMO_APPID, callback_url=receiver.url)
    wechat_sandbox.set_faults(receipts=False)  # only the simulated events may reach the receiver here
    newcomer = "oNewcomer000000000000000000A"
    with requests.Session() as http:
        token = fetch_token(wechat_sandbox, http)
        ticket = http.post(
            f"{wechat_sandbox.base_url}/cgi-bin/qrcode/create",
            params={"access_token": token},
            json={"action_name": "QR_STR_SCENE", "action_info": {"scene": {"scene_str": "bind-7"}}},
        ).json()["ticket"]

        assert send(wechat_sandbox, http, token, newcomer)["errcode"] == 40003
        scanned = simulate(wechat_sandbox, "scan", appid=DEMO_APPID, openid=newcomer, ticket=ticket)
        assert scanned["status"] == 200
        event = open_push(receiver.pushes[-1], "safe", crypto)
        assert (event.findtext("Event"), event.findtext("EventKey")) == ("subscribe", "qrscene_bind-7")
        assert event.findtext("Ticket") == ticket
        assert send(wechat_sandbox, http, token, newcomer)["errcode"] == 0
        info = http.get(
            f"{wechat_sandbox.base_url}/cgi-bin/user/info", params={"access_token": token, "openid": newcomer}
        ).json()
        assert (info["subscribe"], info["subscribe_scene"], info["qr_scene_str"]) == (1, "ADD_SCENE_QR_CODE", "bind-7")

        simulate(wechat_sandbox, "scan", appid=DEMO_APPID, openid=newcomer, ticket=ticket)
        event = open_push(receiver.pushes[-1], "safe", crypto)
        assert (event.findtext("Event"), event.findtext("EventKey")) == ("SCAN", "bind-7")

        simulate(wechat_sandbox, "unsubscribe", appid=DEMO_APPID, openid=newcomer)
        event = open_push(receiver.pushes[-1], "safe", crypto)
        assert event.findtext("Event") == "unsubscribe"
        assert send(wechat_sandbox, http, token, newcomer)["errcode"] == 43004
        assert newcomer not in wechat_sandbox.followers()

        simulate(wechat_sandbox, "subscribe", appid=DEMO_APPID, openid=newcomer)
        event = open_push(receiver.pushes[-1], "safe", crypto)
        assert (event.findtext("Event"), event.findtext("EventKey")) == ("subscribe", "")
        assert wechat_sandbox.followers()[-1] == newcomer

        simulate(wechat_sandbox, "subscribe", appid=DEMO_APPID, openid="oScene00000000000000000000000", scene="42")
        event = open_push(receiver.pushes[-1], "safe", crypto)
        assert event.findtext("EventKey") == "qrscene_42"

        simulate(wechat_sandbox, "subscribe", appid=DEMO_APPID, openid="oKey", event_key="qrscene_invite-9")
        event = open_push(receiver.pushes[-1], "safe", crypto)
        assert event.findtext("EventKey") == "qrscene_invite-9"
        assert wechat_sandbox.account().followers["oKey"].qr_scene_str == "invite-9"
    assert len(receiver.pushes) == 6


def test_simulation_errors(wechat_sandbox, receiver):
    wechat_sandbox.update_account(DEMO_APPID, callback_url=receiver.url)
    assert simulate(wechat_sandbox, "scan", appid=DEMO_APPID, openid="oX", ticket="nope")["errcode"] == 40097
    assert simulate(wechat_sandbox, "subscribe", appid="wx0000000000000000", openid="oX")["errcode"] == 40013
    stranger = simulate(wechat_sandbox, "text", appid=DEMO_APPID, openid="oStranger", content="hi")
    assert stranger["errcode"] == 43004
    assert receiver.pushes == []


def test_simulation_without_callback_url_reports_it(wechat_sandbox):
    reply = simulate(wechat_sandbox, "subscribe", appid=DEMO_APPID, openid="oSomeone")
    assert (reply["errcode"], reply["status"]) == (0, None)
    assert reply["error"] == "account has no callback_url"
    unreachable = closed_port_url()
    wechat_sandbox.update_account(DEMO_APPID, callback_url=unreachable)
    reply = simulate(wechat_sandbox, "unsubscribe", appid=DEMO_APPID, openid="oSomeone")
    assert reply["error"].startswith("callback unreachable")


@pytest.mark.parametrize(("with_msgid", "error_code"), [(True, 0), (False, 10005)])
def test_bizsend_is_reported_as_subscribe_msg_sent_event(wechat_sandbox, receiver, crypto, with_msgid, error_code):
    """Each accepted bizsend is pushed like a template send's report; the faults drop the msgid from bizsend's answer
    (the event still names it) and make the report a failure.  A send refused (43101) is reported by nobody."""
    pri_tmpl_id = DEMO_SUBSCRIPTION_TEMPLATES[0]["pri_tmpl_id"]
    openid = "oSandboxSubscriber000000001"
    wechat_sandbox.update_account(DEMO_APPID, callback_url=receiver.url)
    wechat_sandbox.set_faults(receipt_delay_ms=0, bizsend_msgid=with_msgid, sent_event_error_code=error_code)
    wechat_sandbox.state.grant_credit(DEMO_APPID, openid, pri_tmpl_id)
    data = {
        "character_string1": {"value": "SO1"},
        "thing2": {"value": "键盘"},
        "time3": {"value": "2026年11月28日 10:30"},
        "phrase7": {"value": "已发货"},
    }
    with requests.Session() as http:
        token = fetch_token(wechat_sandbox, http)
        answers = [
            http.post(
                f"{wechat_sandbox.base_url}/cgi-bin/message/subscribe/bizsend",
                params={"access_token": token},
                data=json.dumps(
                    {"touser": openid, "template_id": pri_tmpl_id, "data": data}, ensure_ascii=False
                ).encode("utf-8"),
            ).json()
            for _ in range(2)
        ]
    assert [answer["errcode"] for answer in answers] == [0, 43101]
    assert ("msgid" in answers[0]) is with_msgid
    [push] = receiver.wait_for(1)
    event = open_push(push, "safe", crypto)
    assert (event.findtext("Event"), event.findtext("FromUserName")) == ("subscribe_msg_sent_event", openid)
    [item] = event.findall("SubscribeMsgSentEvent/List")
    msgid = wechat_sandbox.state.list_subscription_messages(DEMO_APPID, openid)[0]["msgid"]
    assert (item.findtext("TemplateId"), int(item.findtext("MsgID")), int(item.findtext("ErrorCode"))) == (
        pri_tmpl_id,
        msgid,
        error_code,
    )
    assert item.findtext("ErrorStatus") == ("success" if error_code == 0 else "failed")
    time.sleep(0.3)
    assert len(receiver.pushes) == 1


@pytest.mark.parametrize("mode", ["plaintext", "compatible", "safe"])
def test_an_account_on_json_gets_json_pushes_with_a_single_item_as_an_object(wechat_sandbox, receiver, crypto, mode):
    pri_tmpl_id = DEMO_SUBSCRIPTION_TEMPLATES[0]["pri_tmpl_id"]
    wechat_sandbox.update_account(DEMO_APPID, mode=mode, callback_url=receiver.url, callback_format="json")
    answer = simulate(
        wechat_sandbox,
        "subscribe_popup",
        appid=DEMO_APPID,
        openid="oJsonPusher0000000000000001",
        templates=[{"priTmplId": pri_tmpl_id, "status": "accept"}],
    )
    assert answer["status"] == 200
    [push] = receiver.wait_for(1)
    body = json.loads(push.body)
    if mode == "plaintext":
        event = body
    else:
        query = push.query
        plaintext = crypto.decrypt_message(query["msg_signature"], query["timestamp"], query["nonce"], body["Encrypt"])
        event = json.loads(plaintext)
        assert set(body) == ({"ToUserName", "Encrypt"} if mode == "safe" else {*event, "Encrypt"})
    assert (event["Event"], event["FromUserName"], event["ToUserName"]) == (
        "subscribe_msg_popup_event",
        "oJsonPusher0000000000000001",
        ORIGINAL_ID,
    )
    assert isinstance(event["CreateTime"], int)
    assert event["List"] == {"TemplateId": pri_tmpl_id, "SubscribeStatusString": "accept", "PopupScene": 1}
