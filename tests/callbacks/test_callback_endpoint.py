"""The WeChat callback endpoint with real signed and encrypted requests: vectors, modes, attacks, duplicates."""

from __future__ import annotations

import itertools
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest
from defusedxml import ElementTree
from django.core.cache import cache
from django.db import OperationalError
from django.test import Client
from redis.exceptions import RedisError

from accounts.models import Follower, OfficialAccount
from callbacks import messages, services
from callbacks.models import ProcessedCallback
from messaging.models import DeliveryReceipt, Message
from messaging.services import ReceivedReceipt
from templates_app.models import MessageTemplate
from wxnotify.wechat.crypto import CallbackCrypto, compute_signature

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "data" / "test-vectors.json").read_text(encoding="utf-8"))
PLAIN_APPID = "wx00000000000000a1"
SAFE_APPID = "wx00000000000000a2"
TOKEN = "callbacktoken"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
ORIGINAL_ID = "gh_0123456789ab"

# De-duplication and binding state live in the shared cache: every test starts and ends with it empty.
pytestmark = pytest.mark.usefixtures("fresh_cache")


@dataclass
class WeChat:
    """Builds requests the way WeChat's servers do for one account, and posts them with the test client."""

    client: Client
    account: OfficialAccount

    @property
    def path(self) -> str:
        return self.account.callback_path()

    def crypto(self, appid: str | None = None) -> CallbackCrypto:
        return CallbackCrypto(self.account.token, self.account.encoding_aes_key, appid or self.account.appid)

    def query(self, *, timestamp: int | None = None, nonce: str | None = None, token: str | None = None) -> dict:
        timestamp_text = str(int(time.time()) if timestamp is None else timestamp)
        nonce = nonce or str(secrets.randbelow(10**9))
        signature = compute_signature(token or self.account.token, timestamp_text, nonce)
        return {"signature": signature, "timestamp": timestamp_text, "nonce": nonce}

    def post_raw(self, query: dict, body: bytes | str, **extra):
        return self.client.post(f"{self.path}?{urlencode(query)}", data=body, content_type="text/xml", **extra)

    def post(self, xml: str, *, encrypted: bool | None = None, appid: str | None = None, **query_options):
        """POST ``xml`` signed; AES-encrypted (safe-mode envelope) when ``encrypted`` or the account is safe."""
        if encrypted is None:
            encrypted = self.account.message_mode == OfficialAccount.MessageMode.SAFE
        query = self.query(**query_options)
        if not encrypted:
            return self.post_raw(query, xml)
        encrypt = self.crypto(appid).encrypt(xml)
        query["encrypt_type"] = "aes"
        query["msg_signature"] = compute_signature(self.account.token, query["timestamp"], query["nonce"], encrypt)
        envelope = (
            f"<xml><ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        )
        return self.post_raw(query, envelope)

    def open_reply(self, response) -> ElementTree:
        """The passive reply as an element, decrypted (and its signature checked) when it is encrypted."""
        root = ElementTree.fromstring(response.content)
        if root.find("Encrypt") is None:
            return root
        plaintext = self.crypto().decrypt_message(
            root.findtext("MsgSignature"), root.findtext("TimeStamp"), root.findtext("Nonce"), root.findtext("Encrypt")
        )
        return ElementTree.fromstring(plaintext)


# Events are de-duplicated by sender + CreateTime + event: distinct events a test sends get distinct times.
_event_times = itertools.count(int(time.time()) - 120)


def event_xml(openid: str, event: str, *, create_time: int | None = None, **elements: str) -> str:
    parts = [
        f"<ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName>",
        f"<FromUserName><![CDATA[{openid}]]></FromUserName>",
        f"<CreateTime>{create_time or next(_event_times)}</CreateTime>",
        "<MsgType><![CDATA[event]]></MsgType>",
        f"<Event><![CDATA[{event}]]></Event>",
    ]
    parts += [f"<{name}><![CDATA[{value}]]></{name}>" for name, value in elements.items()]
    return "<xml>" + "".join(parts) + "</xml>"


def text_xml(openid: str, content: str, *, msg_id: int | None = None) -> str:
    return (
        f"<xml><ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName>"
        f"<FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{content}]]></Content><MsgId>{msg_id or secrets.randbelow(10**18)}</MsgId></xml>"
    )


def new_openid() -> str:
    return "o" + secrets.token_urlsafe(20)[:27]


def make_account(appid: str, mode: str, **fields) -> OfficialAccount:
    defaults = {"name": f"Account {appid}", "app_secret": "s" * 32, "token": TOKEN, "encoding_aes_key": AES_KEY}
    defaults.update(fields)
    return OfficialAccount.objects.create(appid=appid, message_mode=mode, **defaults)


@pytest.fixture
def plain(db, client) -> WeChat:
    return WeChat(client, make_account(PLAIN_APPID, OfficialAccount.MessageMode.PLAINTEXT))


@pytest.fixture
def safe(db, client) -> WeChat:
    return WeChat(client, make_account(SAFE_APPID, OfficialAccount.MessageMode.SAFE))


@pytest.fixture
def frozen_clock(monkeypatch):
    """Set our clock (as the callback sees it) to a vector's timestamp."""

    def freeze(timestamp: str | int) -> None:
        monkeypatch.setattr(messages, "current_timestamp", lambda: int(timestamp))

    return freeze


# --- URL verification -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_url_verification_echoes_echostr_for_official_vector(client):
    account = make_account(PLAIN_APPID, OfficialAccount.MessageMode.PLAINTEXT, token="AAAAA")
    query = {
        "signature": "f464b24fc39322e44b38aa78f5edd27bd1441696",
        "timestamp": "1714036504",
        "nonce": "1514711492",
        "echostr": "4375120948345356249",
    }
    response = client.get(account.callback_path(), query)
    assert response.status_code == 200
    assert response.content == b"4375120948345356249"
    assert response["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize(
    "change",
    [
        {"signature": "f464b24fc39322e44b38aa78f5edd27bd1441697"},
        {"timestamp": "1714036505"},
        {"echostr": ""},
        {"signature": ""},
    ],
)
@pytest.mark.django_db
def test_url_verification_refuses_anything_else(client, change):
    account = make_account(PLAIN_APPID, OfficialAccount.MessageMode.PLAINTEXT, token="AAAAA")
    query = {
        "signature": "f464b24fc39322e44b38aa78f5edd27bd1441696",
        "timestamp": "1714036504",
        "nonce": "1514711492",
        "echostr": "4375120948345356249",
        **change,
    }
    response = client.get(account.callback_path(), query)
    assert response.status_code == 403
    assert response.content == b""


@pytest.mark.django_db
def test_unknown_and_inactive_accounts_are_404(client):
    make_account(PLAIN_APPID, OfficialAccount.MessageMode.PLAINTEXT, is_active=False)
    assert client.get(f"/wechat/callback/{PLAIN_APPID}/").status_code == 404
    assert client.post(f"/wechat/callback/{PLAIN_APPID}/", data="<xml/>", content_type="text/xml").status_code == 404
    assert client.post("/wechat/callback/wx0000000000000099/").status_code == 404


# --- Vectors: compatible and safe mode --------------------------------------------------------------


@pytest.mark.django_db
def test_official_sample_in_compatible_mode_creates_the_follower(client, frozen_clock):
    vector = VECTORS["official_sample"]
    account = make_account(
        vector["appid"],
        OfficialAccount.MessageMode.COMPATIBLE,
        token=vector["token"],
        encoding_aes_key=vector["encoding_aes_key"],
    )
    frozen_clock(vector["timestamp"])
    # The sample's body: plaintext fields next to <Encrypt>, as compatible mode sends them.
    body = (
        vector["plaintext"]
        .replace("\n", "")
        .replace("</xml>", f"<Encrypt><![CDATA[{vector['encrypt']}]]></Encrypt></xml>")
    )
    query = {
        "signature": vector["signature"],
        "timestamp": vector["timestamp"],
        "nonce": vector["nonce"],
        "openid": "oyORnuP8q7ou2gfYjqLzSIWZf0rs",
        "encrypt_type": "aes",
        "msg_signature": vector["msg_signature"],
    }
    response = client.post(f"{account.callback_path()}?{urlencode(query)}", data=body, content_type="text/xml")
    assert response.status_code == 200
    assert response.content == b"success"
    follower = Follower.objects.get(account=account, openid="oyORnuP8q7ou2gfYjqLzSIWZf0rs")
    assert follower.source == Follower.Source.CALLBACK
    assert follower.subscribed is True
    assert follower.last_interaction_at is not None


@pytest.mark.django_db
def test_doc_worked_example_in_safe_mode(client, frozen_clock):
    vector = VECTORS["doc_worked_example"]
    account = make_account(
        vector["appid"],
        OfficialAccount.MessageMode.SAFE,
        token=vector["token"],
        encoding_aes_key=vector["encoding_aes_key"],
    )
    frozen_clock(vector["timestamp"])
    body = (
        "<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName>"
        f"<Encrypt><![CDATA[{vector['encrypt']}]]></Encrypt></xml>"
    )
    query = {
        "signature": vector["signature"],
        "timestamp": vector["timestamp"],
        "nonce": vector["nonce"],
        "encrypt_type": "aes",
        "msg_signature": vector["msg_signature"],
    }
    response = client.post(f"{account.callback_path()}?{urlencode(query)}", data=body, content_type="text/xml")
    assert response.status_code == 200
    assert response.content == b"success"
    assert Follower.objects.filter(account=account, openid="o9AgO5Kd5ggOC-bXrbNODIiE3bGY").exists()


@pytest.mark.django_db
def test_vector_is_refused_when_our_clock_is_far_from_its_timestamp(client):
    vector = VECTORS["doc_worked_example"]
    account = make_account(
        vector["appid"],
        OfficialAccount.MessageMode.SAFE,
        token=vector["token"],
        encoding_aes_key=vector["encoding_aes_key"],
    )
    body = f"<xml><Encrypt><![CDATA[{vector['encrypt']}]]></Encrypt></xml>"
    query = {
        "signature": vector["signature"],
        "timestamp": vector["timestamp"],
        "nonce": vector["nonce"],
        "encrypt_type": "aes",
        "msg_signature": vector["msg_signature"],
    }
    response = client.post(f"{account.callback_path()}?{urlencode(query)}", data=body, content_type="text/xml")
    assert response.status_code == 403
    assert not Follower.objects.exists()


# --- Followers ---------------------------------------------------------------------------------------


def test_subscribe_and_unsubscribe_in_plaintext_mode(plain):
    openid = new_openid()
    subscribed_at = int(time.time()) - 5
    response = plain.post(event_xml(openid, "subscribe", create_time=subscribed_at, EventKey=""))
    assert response.status_code == 200
    assert response.content == b"success"
    follower = Follower.objects.get(account=plain.account, openid=openid)
    assert follower.subscribed is True
    assert follower.source == Follower.Source.CALLBACK
    assert int(follower.subscribed_at.timestamp()) == subscribed_at
    assert follower.last_interaction_at is not None

    assert plain.post(event_xml(openid, "unsubscribe")).status_code == 200
    follower.refresh_from_db()
    assert follower.subscribed is False
    assert follower.unsubscribed_at is not None


@pytest.mark.parametrize("create_time", ["999999999999", "-5", "soon", ""])
def test_unusable_create_time_falls_back_to_our_clock(plain, create_time):
    openid = new_openid()
    xml = event_xml(openid, "subscribe", create_time=1).replace("<CreateTime>1<", f"<CreateTime>{create_time}<")
    assert plain.post(xml).status_code == 200
    subscribed_at = Follower.objects.get(account=plain.account, openid=openid).subscribed_at
    assert abs(subscribed_at.timestamp() - time.time()) < 60


def test_first_contact_by_unsubscribe_creates_an_unsubscribed_follower(plain):
    openid = new_openid()
    assert plain.post(event_xml(openid, "unsubscribe")).status_code == 200
    follower = Follower.objects.get(account=plain.account, openid=openid)
    assert follower.subscribed is False
    assert follower.unsubscribed_at is not None


def test_subscribe_through_a_foreign_qr_code_records_its_scene(safe):
    openid = new_openid()
    response = safe.post(event_xml(openid, "subscribe", EventKey="qrscene_poster-2026", Ticket="T"))
    assert response.content == b"success"
    follower = Follower.objects.get(account=safe.account, openid=openid)
    assert follower.qr_scene_str == "poster-2026"
    assert follower.source == Follower.Source.QR


def test_any_message_updates_last_interaction(plain):
    openid = new_openid()
    plain.post(text_xml(openid, "hello"))
    follower = Follower.objects.get(account=plain.account, openid=openid)
    first = follower.last_interaction_at
    plain.post(event_xml(openid, "CLICK", EventKey="MENU_1"))
    follower.refresh_from_db()
    assert follower.last_interaction_at > first


def test_encrypted_callbacks_in_safe_mode_work(safe):
    openid = new_openid()
    response = safe.post(text_xml(openid, "hi"))
    assert response.status_code == 200
    assert response.content == b"success"
    assert Follower.objects.filter(account=safe.account, openid=openid).exists()


# --- Delivery receipts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("success", "success"),
        ("failed:user block", "failed:user block"),
        ("failed: user block", "failed:user block"),
        ("failed: system failed", "failed: system failed"),
        (" failed:system  failed ", "failed: system failed"),
        ("failed: something new", "failed: something new"),
    ],
)
def test_receipt_status_is_normalised(given, expected):
    assert services.normalise_receipt_status(given) == expected


@pytest.fixture
def receipts(monkeypatch) -> list[ReceivedReceipt]:
    recorded: list[ReceivedReceipt] = []

    def record(receipts: list[ReceivedReceipt]) -> int:
        recorded.extend(receipts)
        return len(receipts)

    monkeypatch.setattr(services, "record_delivery_receipts", record)
    return recorded


def receipt_xml(openid: str, msgid: int, status: str, create_time: int | None = None) -> str:
    return (
        f"<xml><ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{create_time or int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        f"<Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>{msgid}</MsgID>"
        f"<Status><![CDATA[{status}]]></Status></xml>"
    )


def test_plaintext_receipt_is_handed_to_messaging_once(plain, receipts):
    openid = new_openid()
    xml = receipt_xml(openid, 3487542469355618313, "failed: user block", create_time=1_800_000_000)
    assert plain.post(xml).content == b"success"
    assert plain.post(xml).content == b"success"  # WeChat's retry: answered, not processed again
    assert len(receipts) == 1
    receipt = receipts[0]
    assert receipt.account_id == plain.account.pk
    assert receipt.msgid == 3487542469355618313
    assert receipt.wechat_status == "failed:user block"
    assert receipt.openid == openid
    assert int(receipt.event_time.timestamp()) == 1_800_000_000
    # A delivery report is WeChat's, not the user's: it creates no follower.
    assert not Follower.objects.exists()


def test_encrypted_receipt_and_its_retries_are_stored_once(safe):
    """No ProcessedCallback row: the stored receipt, unique per msgid, is the record (one INSERT per receipt)."""
    openid = new_openid()
    xml = receipt_xml(openid, 3487542469355618313, "failed: user block", create_time=1_800_000_000)
    query = safe.query()
    timestamp, nonce = int(query["timestamp"]), query["nonce"]
    for _try in range(2):
        assert safe.post(xml, timestamp=timestamp, nonce=nonce).content == b"success"  # the same request again
    assert safe.post(xml).content == b"success"  # WeChat's retry, signed anew
    receipt = DeliveryReceipt.objects.get()
    assert (receipt.account, receipt.msgid, receipt.wechat_status, receipt.openid) == (
        safe.account,
        3487542469355618313,
        "failed:user block",
        openid,
    )
    assert int(receipt.event_time.timestamp()) == 1_800_000_000
    assert not ProcessedCallback.objects.exists()
    assert not Follower.objects.exists()


def test_encrypted_receipts_with_msgid_zero_keep_their_processed_record(safe):
    openid = new_openid()
    safe.post(receipt_xml(openid, 0, "success", create_time=1_800_000_000))
    safe.post(receipt_xml(openid, 0, "success", create_time=1_800_000_001))
    assert list(DeliveryReceipt.objects.values_list("msgid", flat=True)) == [0, 0]
    assert ProcessedCallback.objects.count() == 2


def test_receipts_with_msgid_zero_are_not_merged(plain, receipts):
    openid = new_openid()
    plain.post(receipt_xml(openid, 0, "success", create_time=1_800_000_000))
    plain.post(receipt_xml(openid, 0, "success", create_time=1_800_000_001))
    assert [receipt.msgid for receipt in receipts] == [0, 0]


@pytest.mark.parametrize("msgid", ["", "abc", "-1", str(2**63)])
def test_receipt_without_a_storable_msgid_is_400(plain, receipts, msgid):
    response = plain.post(
        receipt_xml(new_openid(), 1, "success").replace("<MsgID>1</MsgID>", f"<MsgID>{msgid}</MsgID>")
    )
    assert response.status_code == 400
    assert receipts == []


# --- Duplicates -------------------------------------------------------------------------------------------


def test_retried_subscribe_is_not_processed_twice(plain):
    """WeChat's retry of a subscribe arriving after the unsubscribe must not re-subscribe the user."""
    openid = new_openid()
    subscribe = event_xml(openid, "subscribe", create_time=int(time.time()) - 10)
    plain.post(subscribe)
    plain.post(event_xml(openid, "unsubscribe"))
    response = plain.post(subscribe)  # same message, fresh signature: a retry (or a replay)
    assert response.status_code == 200
    assert response.content == b"success"
    assert Follower.objects.get(account=plain.account, openid=openid).subscribed is False


def test_captured_signed_query_cannot_carry_another_body(plain):
    """In plaintext mode the signature covers timestamp and nonce only, not the body."""
    query = plain.query()
    first, forged = new_openid(), new_openid()
    message = text_xml(first, "hi")
    assert plain.post_raw(query, message).status_code == 200
    response = plain.post_raw(query, event_xml(forged, "unsubscribe"))
    assert response.status_code == 403
    assert not Follower.objects.filter(openid=forged).exists()
    # The same message with the same query is a retry: answered, not refused.
    assert plain.post_raw(query, message).status_code == 200


def test_retried_text_message_is_not_processed_twice(plain, monkeypatch):
    dispatched = []
    real_dispatch = services.dispatch
    monkeypatch.setattr(services, "dispatch", lambda *args: dispatched.append(args) or real_dispatch(*args))
    xml = text_xml(new_openid(), "hello", msg_id=6054768590064713728)
    assert plain.post(xml).status_code == 200
    assert plain.post(xml).status_code == 200
    assert len(dispatched) == 1


def test_messages_are_deduplicated_per_account(plain, safe, monkeypatch):
    dispatched = []
    real_dispatch = services.dispatch
    monkeypatch.setattr(services, "dispatch", lambda *args: dispatched.append(args) or real_dispatch(*args))
    xml = text_xml(new_openid(), "hello", msg_id=42)
    plain.post(xml)
    safe.post(xml)
    assert len(dispatched) == 2


# --- Attacks: each gets its status and changes nothing --------------------------------------------------

XXE = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    "<xml><ToUserName>gh_x</ToUserName><FromUserName>&xxe;</FromUserName><CreateTime>1</CreateTime>"
    "<MsgType>text</MsgType><Content>x</Content><MsgId>1</MsgId></xml>"
)
BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE xml [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<xml><FromUserName>oAttacker</FromUserName><MsgType>text</MsgType><Content>&lol9;</Content></xml>"""
DTD_ONLY = '<?xml version="1.0"?><!DOCTYPE xml><xml><FromUserName>oAttacker</FromUserName><MsgType>text</MsgType></xml>'
PARAMETER_ENTITY = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/evil.dtd"> %remote;]>'
    "<xml><FromUserName>oAttacker</FromUserName><MsgType>text</MsgType></xml>"
)


@pytest.mark.parametrize("body", [XXE, BILLION_LAUGHS, DTD_ONLY, PARAMETER_ENTITY], ids=["xxe", "laughs", "dtd", "pe"])
@pytest.mark.parametrize("encrypted", [False, True], ids=["plaintext", "inside-ciphertext"])
def test_hostile_xml_is_400(plain, body, encrypted):
    if encrypted:
        plain.account.message_mode = OfficialAccount.MessageMode.COMPATIBLE
        plain.account.save()
    response = plain.post(body, encrypted=encrypted)
    assert response.status_code == 400
    assert not Follower.objects.exists()


def test_malformed_xml_is_400(plain):
    for body in ["", "not xml", "<xml>", "<root><FromUserName>o1</FromUserName></root>", "<xml></xml>"]:
        assert plain.post(body).status_code == 400, body
    assert not Follower.objects.exists()


@pytest.mark.parametrize(
    "query_change",
    [
        {"signature": "0" * 40},
        {"signature": ""},
        {"nonce": "other"},
        {"timestamp": "not-a-number"},
    ],
)
def test_bad_signature_is_403(plain, query_change):
    query = plain.query()
    query.update(query_change)
    response = plain.post_raw(query, text_xml(new_openid(), "hi"))
    assert response.status_code == 403
    assert not Follower.objects.exists()


def test_signature_with_another_token_is_403(plain):
    response = plain.post_raw(plain.query(token="guessed"), text_xml(new_openid(), "hi"))
    assert response.status_code == 403


@pytest.mark.parametrize("offset", [-301, 301, -86400])
def test_stale_or_future_timestamp_is_403(plain, offset):
    response = plain.post(text_xml(new_openid(), "hi"), timestamp=int(time.time()) + offset)
    assert response.status_code == 403
    assert not Follower.objects.exists()


def test_timestamp_inside_the_window_is_accepted(plain):
    assert plain.post(text_xml(new_openid(), "hi"), timestamp=int(time.time()) - 290).status_code == 200


def test_oversized_body_is_413(plain, settings):
    settings.WECHAT_CALLBACK_MAX_BODY_BYTES = 64 * 1024
    padding = "x" * (64 * 1024)
    response = plain.post(text_xml(new_openid(), padding))
    assert response.status_code == 413
    assert not Follower.objects.exists()


def test_body_at_the_limit_is_read(plain, settings):
    xml = text_xml(new_openid(), "hello")
    settings.WECHAT_CALLBACK_MAX_BODY_BYTES = len(xml.encode())
    assert plain.post(xml).status_code == 200


def test_declared_oversized_length_is_413_before_the_signature(plain):
    response = plain.client.post(plain.path, data=b"<xml/>", content_type="text/xml", CONTENT_LENGTH="10000000")
    assert response.status_code == 413


def test_wrong_appid_in_ciphertext_is_403(safe):
    response = safe.post(text_xml(new_openid(), "hi"), appid="wx00000000000000ff")
    assert response.status_code == 403
    assert not Follower.objects.exists()


def test_plaintext_body_in_safe_mode_is_403(safe):
    response = safe.post(text_xml(new_openid(), "hi"), encrypted=False)
    assert response.status_code == 403
    assert not Follower.objects.exists()


def test_bad_msg_signature_is_403(safe):
    query = safe.query()
    encrypt = safe.crypto().encrypt(text_xml(new_openid(), "hi"))
    query.update(encrypt_type="aes", msg_signature="0" * 40)
    response = safe.post_raw(query, f"<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>")
    assert response.status_code == 403
    assert not Follower.objects.exists()


def test_encrypted_request_without_encrypt_element_is_403(safe):
    query = safe.query()
    query.update(encrypt_type="aes", msg_signature="0" * 40)
    assert safe.post_raw(query, text_xml(new_openid(), "hi")).status_code == 403


def test_garbage_ciphertext_with_valid_msg_signature_is_403(safe):
    query = safe.query()
    encrypt = "bm90IGEgY2lwaGVydGV4dA=="
    query.update(
        encrypt_type="aes", msg_signature=compute_signature(TOKEN, query["timestamp"], query["nonce"], encrypt)
    )
    assert safe.post_raw(query, f"<xml><Encrypt>{encrypt}</Encrypt></xml>").status_code == 403


def test_openid_that_does_not_fit_is_400(plain):
    for openid in ["", "o" * 65, "bad openid", "o<script>"]:
        xml = text_xml("PLACEHOLDER", "hi").replace("<![CDATA[PLACEHOLDER]]>", f"<![CDATA[{openid}]]>")
        assert plain.post(xml).status_code == 400, openid
    assert not Follower.objects.exists()


def test_other_methods_are_405(plain):
    assert plain.client.put(plain.path).status_code == 405


# --- Infrastructure failures ------------------------------------------------------------------------------


def test_cache_outage_does_not_stop_callbacks(plain, monkeypatch):
    """De-duplication lives in the database: a shared cache that fails takes no event down with it."""

    def unavailable(*args, **kwargs):
        raise RedisError("connection refused")

    for method in ("add", "get", "set", "delete", "delete_many", "incr"):
        monkeypatch.setattr(cache, method, unavailable)
    openid = new_openid()
    xml = event_xml(openid, "subscribe")
    assert plain.post(xml).content == b"success"
    assert plain.post(xml).content == b"success"
    assert Follower.objects.filter(account=plain.account, openid=openid).count() == 1
    assert ProcessedCallback.objects.filter(account=plain.account).count() == 1


def test_cache_outage_while_binding_by_code_is_503(plain, monkeypatch):
    """Binding codes do live in the cache: the message is not applied and WeChat's retry finds the cache back."""

    def unavailable(*args, **kwargs):
        raise RedisError("connection refused")

    monkeypatch.setattr(cache, "get", unavailable)
    response = plain.post(text_xml(new_openid(), "123456"))
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert not Follower.objects.exists()
    assert not ProcessedCallback.objects.exists()


def test_database_failure_releases_the_claim_so_the_retry_is_processed(plain, monkeypatch):
    openid = new_openid()
    xml = text_xml(openid, "hi")
    real_touch = services.touch_follower

    def failing_once(*args):
        monkeypatch.setattr(services, "touch_follower", real_touch)
        raise OperationalError("server closed the connection")

    monkeypatch.setattr(services, "touch_follower", failing_once)
    assert plain.post(xml).status_code == 503
    assert not Follower.objects.filter(openid=openid).exists()
    assert plain.post(xml).status_code == 200  # WeChat's retry
    assert Follower.objects.filter(openid=openid).exists()


# --- Attacks on delivery receipts: no message changes -------------------------------------------------------


@pytest.fixture
def sent_message(safe):
    template = MessageTemplate.objects.create(
        account=safe.account, template_id="tpl-receipts", title="Receipts", content="{{thing1.DATA}}"
    )
    return Message.objects.create(
        account=safe.account,
        template=template,
        template_id_sent=template.template_id,
        touser="oReceiptRecipient0000000001",
        client_msg_id="receipt-attacks",
        status=Message.Status.SENT,
        msgid=555000111,
    )


def test_forged_receipts_change_no_message_and_a_genuine_one_does(safe, sent_message):
    receipt = receipt_xml(sent_message.touser, sent_message.msgid, "failed:user block")
    stale = int(time.time()) - 3600
    attempts = [
        safe.post_raw({**safe.query(), "signature": "0" * 40}, receipt),  # bad signature
        safe.post(receipt, timestamp=stale),  # replayed long after
        safe.post(receipt, appid="wx00000000000000ff"),  # ciphertext made for another AppID
        safe.post(receipt, encrypted=False),  # plaintext body in safe mode
        safe.post(XXE.replace("<MsgType>text</MsgType>", "<MsgType>event</MsgType>")),  # hostile XML inside
        safe.post(receipt.replace(str(sent_message.msgid), "x")),  # no usable MsgID
    ]
    assert [response.status_code for response in attempts] == [403, 403, 403, 403, 400, 400]
    sent_message.refresh_from_db()
    assert sent_message.status == Message.Status.SENT
    assert not DeliveryReceipt.objects.exists()

    assert safe.post(receipt).content == b"success"
    sent_message.refresh_from_db()
    assert sent_message.status == Message.Status.FAILED
    assert "user block" in sent_message.errmsg


# --- Welcome reply ---------------------------------------------------------------------------------------------


def test_welcome_reply_answers_a_subscribe(safe):
    safe.account.welcome_reply = "欢迎关注！回复 6 位绑定码即可绑定账号。"
    safe.account.save()
    openid = new_openid()
    reply = safe.open_reply(safe.post(event_xml(openid, "subscribe")))
    assert reply.findtext("Content") == "欢迎关注！回复 6 位绑定码即可绑定账号。"
    assert reply.findtext("ToUserName") == openid
    assert reply.findtext("FromUserName") == ORIGINAL_ID


def test_welcome_reply_in_plaintext_mode_is_plain_xml(plain):
    plain.account.welcome_reply = "Welcome ]]> aboard"
    plain.account.save()
    response = plain.post(event_xml(new_openid(), "subscribe"))
    assert b"<Encrypt>" not in response.content
    assert plain.open_reply(response).findtext("Content") == "Welcome ]]> aboard"


def test_no_welcome_reply_when_empty_or_for_other_events(safe):
    assert safe.post(event_xml(new_openid(), "subscribe")).content == b"success"
    safe.account.welcome_reply = "Welcome"
    safe.account.save()
    assert safe.post(event_xml(new_openid(), "SCAN", EventKey="poster")).content == b"success"
    assert safe.post(text_xml(new_openid(), "hello")).content == b"success"


def test_welcome_reply_is_edited_in_the_admin(admin_client, safe):
    page = admin_client.get(f"/admin/accounts/officialaccount/{safe.account.pk}/change/")
    assert page.status_code == 200
    assert 'name="welcome_reply"' in page.content.decode()
