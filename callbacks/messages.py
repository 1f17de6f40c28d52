"""What WeChat POSTs to the callback endpoint, and the checks it passes before anything of it is trusted.

The endpoint faces the internet, so every check runs before anything is trusted, in this order: known active
account (404, :func:`callbacks.services.active_account`), body size (413), URL ``signature`` (403), timestamp
freshness (403), message mode (403: compatible and safe accounts trust only the encrypted part, so a request
without it is refused), XML parsed by ``defusedxml`` with DTDs, entities and external references refused, or JSON
(WeChat's other push format) parsed by the standard library, which resolves nothing outside the body (400),
then in AES mode ``msg_signature``, decryption and the AppID inside the ciphertext (403).  Only then is the
message dispatched (:mod:`callbacks.services`).

Timestamp freshness is our own replay policy (WeChat documents none): a request whose signed ``timestamp`` is
more than ``WECHAT_CALLBACK_MAX_CLOCK_SKEW`` seconds (default 300) away from our clock is refused.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

import defusedxml
import defusedxml.ElementTree as DefusedET
from django.conf import settings
from django.http import HttpRequest

from accounts.models import OfficialAccount
from wxnotify.middleware import drain_body
from wxnotify.wechat.crypto import CallbackCrypto, CallbackCryptoError, verify_signature

OPENID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
# CreateTime becomes a datetime: ten digits reach 2286, more would overflow the year.
CREATE_TIME_RE = re.compile(r"[0-9]{1,10}")
MSGID_RE = re.compile(r"[0-9]{1,20}")
MAX_MSGID = 2**63 - 1  # stored in a BIGINT column
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
XML_CONTENT_TYPE = "application/xml; charset=utf-8"
RECEIPT_EVENT = "templatesendjobfinish"
# Subscription-notification events (docs/wechat-api.md §6.6): their templates come as a list of items.
POPUP_EVENT = "subscribe_msg_popup_event"
CHANGE_EVENT = "subscribe_msg_change_event"
SENT_EVENT = "subscribe_msg_sent_event"
LIST_ELEMENT = "List"


class CallbackRejected(Exception):
    """A request we refuse; ``status`` is the HTTP answer, the message is for our logs only."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class CallbackResponse:
    body: str
    content_type: str = TEXT_CONTENT_TYPE


@dataclass(frozen=True)
class CallbackMessage:
    """The flat child elements of a callback (XML or JSON), and the items of a subscription event's ``List``.

    ``items`` holds one mapping per ``<List>`` (XML, inside the event's wrapper element) or per element of the JSON
    ``List`` (an object when there is one item, an array otherwise: both are taken).
    """

    fields: Mapping[str, str]
    items: tuple[Mapping[str, str], ...] = ()

    def get(self, name: str) -> str:
        return self.fields.get(name, "")

    @property
    def openid(self) -> str:
        return self.get("FromUserName").strip()

    @property
    def msg_type(self) -> str:
        return self.get("MsgType").strip().lower()

    @property
    def event(self) -> str:
        """The event name lower-cased: WeChat spells them ``subscribe`` and ``SCAN`` alike."""
        return self.get("Event").strip().lower()

    @property
    def event_key(self) -> str:
        return self.get("EventKey").strip()

    @property
    def create_time(self) -> dt.datetime | None:
        value = self.get("CreateTime").strip()
        if not CREATE_TIME_RE.fullmatch(value):
            return None
        return dt.datetime.fromtimestamp(int(value), tz=dt.UTC)

    def is_event(self, name: str) -> bool:
        return self.msg_type == "event" and self.event == name

    def dedup_identity(self) -> str:
        """What makes a delivery unique: MsgId for messages, MsgID for receipts, sender + time + event otherwise.

        A receipt with MsgID 0 (reported when ``client_msg_id`` was used) falls back to the event identity, so
        different zero-id receipts are not mistaken for one another.  A subscription event's identity adds its
        templates and choices.
        """
        msg_id = self.get("MsgId").strip()
        if self.msg_type != "event" and msg_id:
            return f"msg:{msg_id}"
        receipt_id = self.get("MsgID").strip()
        if self.is_event(RECEIPT_EVENT) and receipt_id.strip("0"):
            return f"receipt:{receipt_id}"
        identity = f"event:{self.openid}:{self.get('CreateTime').strip()}:{self.msg_type}:{self.event}"
        if self.items:
            # A subscription event's choices are part of it: a popup and a change of mind within one second differ;
            # so are the MsgIDs of a sent event: two sends of one template to one user reported within one second.
            listed = ";".join(
                f"{item.get('TemplateId', '')}={item.get('SubscribeStatusString', '')}"
                + (f"#{item['MsgID']}" if item.get("MsgID") else "")
                for item in self.items
            )
            identity = f"{identity}:{listed}"
        return identity


def query_params(request: HttpRequest) -> dict[str, str]:
    """The query string as a plain dict, the last value of a repeated name winning (as ``request.GET.get`` does).

    Cheaper than ``request.GET``'s ``QueryDict``, which a burst of receipts would build hundreds of times a second for
    the five names the checks read.
    """
    return dict(parse_qsl(request.META.get("QUERY_STRING", ""), keep_blank_values=True))


def verify_url(account: OfficialAccount, query: Mapping[str, str]) -> str:
    """URL verification (GET): the ``echostr`` to echo when the signature is valid."""
    echostr = query.get("echostr", "")
    if not echostr or not verify_signature(
        account.token, query.get("signature"), query.get("timestamp", ""), query.get("nonce", "")
    ):
        raise CallbackRejected(403, "URL verification with a bad signature")
    return echostr


def read_body(request: HttpRequest) -> bytes:
    """The request body; more than ``WECHAT_CALLBACK_MAX_BODY_BYTES`` is refused (413).

    An oversized body is still read (and dropped) up to ``WECHAT_CALLBACK_MAX_DRAIN_BYTES`` before the 413 is
    answered: a server that closes a connection with unread request bytes makes the kernel reset it, and the
    client would see the reset instead of the 413.  A body declared larger than that bound is not read at all
    (reading gigabytes to be polite is a denial of service); the server's own handling of the connection then
    applies (gunicorn's sync worker closes it).
    """
    limit = settings.WECHAT_CALLBACK_MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        if declared <= settings.WECHAT_CALLBACK_MAX_DRAIN_BYTES:
            drain_body(request, declared)
        raise CallbackRejected(413, f"body of {declared} bytes declared")
    body = request.read(limit + 1)
    if len(body) > limit:
        drain_body(request, settings.WECHAT_CALLBACK_MAX_DRAIN_BYTES)
        raise CallbackRejected(413, "body larger than the limit")
    return body


def check_request(account: OfficialAccount, query: Mapping[str, str]) -> bool:
    """Signature, freshness and message mode of a POST; returns True when the body is AES-encrypted."""
    timestamp = query.get("timestamp", "")
    if not verify_signature(account.token, query.get("signature"), timestamp, query.get("nonce", "")):
        raise CallbackRejected(403, "bad signature")
    if not TIMESTAMP_RE.fullmatch(timestamp):
        raise CallbackRejected(403, "timestamp is not a number")
    skew = abs(current_timestamp() - int(timestamp))
    if skew > settings.WECHAT_CALLBACK_MAX_CLOCK_SKEW:
        raise CallbackRejected(403, f"timestamp {skew}s away from our clock")
    encrypt_type = query.get("encrypt_type", "raw").strip().lower() or "raw"
    if encrypt_type not in {"raw", "aes"}:
        raise CallbackRejected(400, "unknown encrypt_type")
    encrypted = encrypt_type == "aes"
    if account.message_mode != OfficialAccount.MessageMode.PLAINTEXT and not encrypted:
        # Compatible mode sends the encrypted copy too: only it is signed over the body (msg_signature).
        raise CallbackRejected(403, f"plaintext-only callback for an account in {account.message_mode} mode")
    if encrypted and not account.encoding_aes_key:
        raise CallbackRejected(403, "encrypted callback for an account without an EncodingAESKey")
    return encrypted


def current_timestamp() -> int:
    return int(time.time())


def parse_body(data: bytes | str) -> CallbackMessage:
    """A callback body in either of WeChat's formats: JSON when it starts with ``{``, XML otherwise.

    WeChat sends the format chosen in the account's push settings (XML, or JSON where offered), and the AES
    envelope and the plaintext inside it share that format; no account setting of ours records the choice, so the
    body says which it is.  Either way the same checks follow (signatures, decryption, :func:`validate`).
    """
    head = data.lstrip()[:1]
    if head in (b"{", "{"):
        return parse_json(data)
    return parse_xml(data)


def parse_json(data: bytes | str) -> CallbackMessage:
    """Parse a JSON callback: scalar members become fields (``CreateTime`` may be a number or a string), ``List``
    the items; a single item may come as an object rather than an array (WxJava PR #2477, and
    https://developers.weixin.qq.com/community/develop/doc/00042034428fa074706c908245b800)."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise CallbackRejected(400, "body is not valid JSON") from exc
    if not isinstance(document, dict):
        raise CallbackRejected(400, "JSON body is not an object")
    fields = {name: scalar_text(value) for name, value in document.items() if is_scalar(value)}
    listed = document.get(LIST_ELEMENT, [])
    listed = [listed] if isinstance(listed, dict) else listed
    if not isinstance(listed, list):
        raise CallbackRejected(400, "JSON List is neither an object nor an array")
    items = tuple(
        {name: scalar_text(value) for name, value in item.items() if is_scalar(value)}
        for item in listed
        if isinstance(item, dict)
    )
    return CallbackMessage(fields, items)


def is_scalar(value: object) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def scalar_text(value: str | int | float) -> str:
    return value if isinstance(value, str) else str(value)


def parse_xml(data: bytes | str) -> CallbackMessage:
    """Parse a callback XML with DTDs, entity declarations and external references refused (400).

    The ``<List>`` elements inside a wrapper (``SubscribeMsgPopupEvent`` ...) are the items, whatever the wrapper's
    name: WeChat's own example once named the change event's wrapper after the popup's.
    """
    try:
        root = DefusedET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise CallbackRejected(400, f"refused XML construct: {type(exc).__name__}") from exc
    except (ET.ParseError, ValueError, LookupError) as exc:
        raise CallbackRejected(400, "body is not well-formed XML") from exc
    if root.tag != "xml":
        raise CallbackRejected(400, "root element is not <xml>")
    fields: dict[str, str] = {}
    items: list[dict[str, str]] = []
    for child in root:
        if isinstance(child.tag, str):
            fields.setdefault(child.tag, child.text or "")
            items.extend(
                {part.tag: part.text or "" for part in listed if isinstance(part.tag, str)}
                for listed in child.iterfind(LIST_ELEMENT)
            )
    return CallbackMessage(fields, tuple(items))


def crypto_for(account: OfficialAccount) -> CallbackCrypto:
    return CallbackCrypto(account.token, account.encoding_aes_key, account.appid)


def decrypt(account: OfficialAccount, query: Mapping[str, str], envelope: CallbackMessage) -> CallbackMessage:
    """Verify ``msg_signature`` over the ciphertext, decrypt it, check its AppID and parse the inner XML.

    In compatible mode the envelope also carries plaintext copies of the fields; they are ignored, only what
    the ciphertext says is trusted.
    """
    encrypt = envelope.get("Encrypt").strip()
    if not encrypt:
        raise CallbackRejected(403, "encrypted callback without <Encrypt>")
    try:
        plaintext = crypto_for(account).decrypt_message(
            query.get("msg_signature"), query.get("timestamp", ""), query.get("nonce", ""), encrypt
        )
    except CallbackCryptoError as exc:
        raise CallbackRejected(403, f"ciphertext refused: {type(exc).__name__}") from exc
    return parse_body(plaintext)


def validate(message: CallbackMessage) -> None:
    """Refuse messages we could not store: the fields end up in columns with limits (PostgreSQL enforces them)."""
    if not OPENID_RE.fullmatch(message.openid):
        raise CallbackRejected(400, "FromUserName is not an openid")
    if not message.msg_type:
        raise CallbackRejected(400, "no MsgType")
    if message.is_event(RECEIPT_EVENT):
        msgid = message.get("MsgID").strip()
        if not MSGID_RE.fullmatch(msgid) or int(msgid) > MAX_MSGID:
            raise CallbackRejected(400, "TEMPLATESENDJOBFINISH without a numeric MsgID")


def cdata(value: str) -> str:
    """Text in CDATA; a literal ``]]>`` is split so it cannot close the section early."""
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def text_reply_xml(message: CallbackMessage, content: str) -> str:
    """A passive text reply to the sender of ``message`` (WeChat shows it in the chat)."""
    return (
        "<xml>"
        f"<ToUserName>{cdata(message.openid)}</ToUserName>"
        f"<FromUserName>{cdata(message.get('ToUserName').strip())}</FromUserName>"
        f"<CreateTime>{current_timestamp()}</CreateTime>"
        "<MsgType><![CDATA[text]]></MsgType>"
        f"<Content>{cdata(content)}</Content>"
        "</xml>"
    )
