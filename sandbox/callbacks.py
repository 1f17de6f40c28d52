"""Server-to-service callbacks, built and signed the way WeChat builds them.

The sandbox pushes events (delivery reports, follows, scans, text messages) to an account's callback URL
with the same query string (``signature``, ``timestamp``, ``nonce``, ``openid`` and, in compatible/safe
mode, ``encrypt_type=aes`` + ``msg_signature``) and the same body shapes as WeChat, so our callback view
is exercised exactly as in production.  An account whose push format is JSON (``callback_format``, WeChat's other
choice in the push settings) gets each event as a JSON object instead, built from the same XML: numeric fields as
numbers, and a subscription event's ``List`` as an object when it holds one item (WeChat's own quirk, WxJava PR
#2477), an array otherwise; the AES envelope is then JSON too.  When delivery reports go out is
``sandbox.receipt_dispatch``'.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode
from xml.etree import ElementTree

import requests
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as defused_fromstring

from wxnotify.wechat.crypto import CallbackCrypto, CallbackCryptoError, compute_signature

CALLBACK_TIMEOUT_S = 5.0
CALLBACK_ATTEMPTS = 3
XML_HEADERS = {"Content-Type": "text/xml; charset=utf-8"}
JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}
FORMAT_XML = "xml"
FORMAT_JSON = "json"
FORMATS = (FORMAT_XML, FORMAT_JSON)
# Elements WeChat's JSON pushes carry as numbers; every other value is a string.
JSON_NUMBERS = frozenset({"CreateTime", "MsgId", "MsgID", "ErrorCode", "PopupScene"})

MODE_PLAINTEXT = "plaintext"
MODE_COMPATIBLE = "compatible"
MODE_SAFE = "safe"
MODES = (MODE_PLAINTEXT, MODE_COMPATIBLE, MODE_SAFE)


def cdata(value: str) -> str:
    """Wrap text in CDATA; a literal ``]]>`` is split across two sections so it cannot end the first."""
    return "<![CDATA[" + str(value).replace("]]>", "]]]]><![CDATA[>") + "]]>"


def event_xml(original_id: str, openid: str, elements: list[tuple[str, str | int]]) -> str:
    """An incoming-message XML as WeChat lays it out: text in CDATA, integers bare, one element per line."""
    lines = [
        "<xml>",
        f"<ToUserName>{cdata(original_id)}</ToUserName>",
        f"<FromUserName>{cdata(openid)}</FromUserName>",
        f"<CreateTime>{int(time.time())}</CreateTime>",
    ]
    for name, value in elements:
        text = str(value) if isinstance(value, int) else cdata(value)
        lines.append(f"<{name}>{text}</{name}>")
    lines.append("</xml>")
    return "\n".join(lines)


def subscription_event_xml(
    original_id: str, openid: str, event: str, wrapper: str, items: list[list[tuple[str, str | int]]]
) -> str:
    """A subscription-notification event: the common elements, then one ``<List>`` per template inside the
    event's wrapper (``SubscribeMsgPopupEvent`` ...), as
    https://developers.weixin.qq.com/doc/service/guide/product/subscription_messages/push.html shows it."""
    listed = []
    for item in items:
        parts = "".join(f"<{name}>{str(v) if isinstance(v, int) else cdata(v)}</{name}>" for name, v in item)
        listed.append(f"<List>{parts}</List>")
    wrapped = f"<{wrapper}>\n" + "\n".join(listed) + f"\n</{wrapper}>"
    xml = event_xml(original_id, openid, [("MsgType", "event"), ("Event", event)])
    return xml.replace("</xml>", f"{wrapped}\n</xml>")


def event_json(xml: str) -> str:
    """The JSON form of an event built by :func:`event_xml` or :func:`subscription_event_xml`."""

    def value(element: ElementTree.Element) -> str | int:
        text = element.text or ""
        return int(text) if element.tag in JSON_NUMBERS and text.lstrip("-").isdigit() else text

    document: dict[str, object] = {}
    for child in defused_fromstring(xml.encode("utf-8")):
        items = [{part.tag: value(part) for part in listed} for listed in child.iterfind("List")]
        if items:
            document["List"] = items[0] if len(items) == 1 else items
        else:
            document[child.tag] = value(child)
    return json.dumps(document, ensure_ascii=False)


@dataclass(frozen=True)
class CallbackTarget:
    """What signing and addressing a callback needs from an account; ``token`` and key stay out of reprs."""

    appid: str
    original_id: str
    callback_url: str
    mode: str
    token: str = field(repr=False)
    encoding_aes_key: str = field(repr=False)
    format: str = FORMAT_XML

    def crypto(self) -> CallbackCrypto:
        return CallbackCrypto(self.token, self.encoding_aes_key, self.appid)


def build_callback(target: CallbackTarget, openid: str, xml: str) -> tuple[str, bytes]:
    """Return the signed URL and body WeChat would POST for ``xml`` in the account's message mode and push format."""
    timestamp = str(int(time.time()))
    nonce = str(secrets.randbelow(10**10))
    params = {
        "signature": compute_signature(target.token, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
        "openid": openid,
    }
    if target.format == FORMAT_JSON:
        return _signed_json(target, params, event_json(xml))
    body = xml
    if target.mode in (MODE_SAFE, MODE_COMPATIBLE):
        encrypt = target.crypto().encrypt(xml)
        params["encrypt_type"] = "aes"
        params["msg_signature"] = compute_signature(target.token, timestamp, nonce, encrypt)
        encrypt_element = f"<Encrypt>{cdata(encrypt)}</Encrypt>"
        if target.mode == MODE_SAFE:
            body = f"<xml>\n<ToUserName>{cdata(target.original_id)}</ToUserName>\n{encrypt_element}\n</xml>"
        else:
            body = xml.replace("</xml>", f"{encrypt_element}\n</xml>")
    separator = "&" if "?" in target.callback_url else "?"
    return f"{target.callback_url}{separator}{urlencode(params)}", body.encode("utf-8")


def _signed_json(target: CallbackTarget, params: dict[str, str], document: str) -> tuple[str, bytes]:
    """The JSON push: the event itself, or in safe mode ``{"ToUserName", "Encrypt"}`` around its ciphertext (the
    event's fields beside ``Encrypt`` in compatible mode)."""
    body = document
    if target.mode in (MODE_SAFE, MODE_COMPATIBLE):
        encrypt = target.crypto().encrypt(document)
        params["encrypt_type"] = "aes"
        params["msg_signature"] = compute_signature(target.token, params["timestamp"], params["nonce"], encrypt)
        envelope = {"ToUserName": target.original_id} if target.mode == MODE_SAFE else json.loads(document)
        body = json.dumps({**envelope, "Encrypt": encrypt}, ensure_ascii=False)
    separator = "&" if "?" in target.callback_url else "?"
    return f"{target.callback_url}{separator}{urlencode(params)}", body.encode("utf-8")


def post_callback(session: requests.Session | None, target: CallbackTarget, openid: str, xml: str) -> requests.Response:
    """POST one signed callback once; raises ``requests.RequestException`` when the service is unreachable."""
    url, body = build_callback(target, openid, xml)
    poster = session if session is not None else requests
    headers = JSON_HEADERS if target.format == FORMAT_JSON else XML_HEADERS
    return poster.post(url, data=body, headers=headers, timeout=CALLBACK_TIMEOUT_S)


def open_reply(target: CallbackTarget, body: str) -> str | None:
    """The plaintext of the service's passive reply: decrypted when it is an encrypted envelope.

    Returns the body unchanged when it is not encrypted, and None when an envelope fails its
    ``MsgSignature`` check or does not decrypt, so a test can tell a bad reply from a plain one.
    """
    if "<Encrypt>" not in body:
        return body
    try:
        root = defused_fromstring(body.encode("utf-8"))
        crypto = target.crypto()
        message = crypto.decrypt_message(
            root.findtext("MsgSignature"),
            root.findtext("TimeStamp") or "",
            root.findtext("Nonce") or "",
            root.findtext("Encrypt") or "",
        )
    except (CallbackCryptoError, ElementTree.ParseError, DefusedXmlException):
        return None
    return message.decode("utf-8")
