"""Server-to-service callbacks, built and signed the way WeChat builds them.

The sandbox pushes events (delivery reports, follows, scans, text messages) to an account's callback URL
with the same query string (``signature``, ``timestamp``, ``nonce``, ``openid`` and, in compatible/safe
mode, ``encrypt_type=aes`` + ``msg_signature``) and the same body shapes as WeChat, so our callback view
is exercised exactly as in production.  When delivery reports go out is ``sandbox.receipt_dispatch``'.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class CallbackTarget:
    """What signing and addressing a callback needs from an account; ``token`` and key stay out of reprs."""

    appid: str
    original_id: str
    callback_url: str
    mode: str
    token: str = field(repr=False)
    encoding_aes_key: str = field(repr=False)

    def crypto(self) -> CallbackCrypto:
        return CallbackCrypto(self.token, self.encoding_aes_key, self.appid)


def build_callback(target: CallbackTarget, openid: str, xml: str) -> tuple[str, bytes]:
    """Return the signed URL and body WeChat would POST for ``xml`` in the account's message mode."""
    timestamp = str(int(time.time()))
    nonce = str(secrets.randbelow(10**10))
    params = {
        "signature": compute_signature(target.token, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
        "openid": openid,
    }
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


def post_callback(session: requests.Session | None, target: CallbackTarget, openid: str, xml: str) -> requests.Response:
    """POST one signed callback once; raises ``requests.RequestException`` when the service is unreachable."""
    url, body = build_callback(target, openid, xml)
    poster = session if session is not None else requests
    return poster.post(url, data=body, headers=XML_HEADERS, timeout=CALLBACK_TIMEOUT_S)


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
