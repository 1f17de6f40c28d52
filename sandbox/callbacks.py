"""Server-to-service callbacks, built and signed the way WeChat builds them.

The sandbox pushes events (delivery reports, follows, scans, text messages) to an account's callback URL
with the same query string (``signature``, ``timestamp``, ``nonce``, ``openid`` and, in compatible/safe
mode, ``encrypt_type=aes`` + ``msg_signature``) and the same body shapes as WeChat, so our callback view
is exercised exactly as in production.  Delivery reports are asynchronous in WeChat; here a delay queue
feeds a small fixed pool of threads, which keeps a burst of sends from spawning a thread per receipt.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
import threading
import time
from collections.abc import Callable
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


@dataclass(order=True)
class Receipt:
    """A TEMPLATESENDJOBFINISH event waiting for its due time."""

    due: float
    seq: int
    appid: str = field(compare=False)
    openid: str = field(compare=False)
    msgid: int = field(compare=False)
    status: str = field(compare=False)
    generation: int = field(compare=False, default=0)


class DelayQueue:
    """A thread-safe min-heap of receipts released at their due time (``time.monotonic`` based)."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._heap: list[Receipt] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._heap)

    def put(self, appid: str, openid: str, msgid: int, status: str, delay_s: float, generation: int = 0) -> bool:
        """Queue a receipt; False when the queue is full (the caller counts it as failed)."""
        receipt = Receipt(time.monotonic() + delay_s, next(self._seq), appid, openid, msgid, status, generation)
        with self._cond:
            if len(self._heap) >= self.capacity:
                return False
            heapq.heappush(self._heap, receipt)
            if self._heap[0] is receipt:
                self._cond.notify()
        return True

    def get(self) -> Receipt | None:
        """Block until a receipt is due and return it; None once the queue is closed."""
        with self._cond:
            while not self._closed:
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0].due - time.monotonic()
                if wait <= 0:
                    receipt = heapq.heappop(self._heap)
                    if self._heap:
                        self._cond.notify()
                    return receipt
                self._cond.wait(wait)
            return None

    def clear(self) -> None:
        with self._cond:
            self._heap.clear()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class ReceiptDispatcher:
    """A fixed pool of threads that POSTs due receipts, each up to three times like WeChat.

    ``resolve(receipt)`` returns the account's current callback target (or None when it has no callback
    URL or the receipt predates a reset); ``record(receipt, ok)`` counts the outcome.  An unreachable
    service is counted, never raised.
    """

    def __init__(
        self,
        queue: DelayQueue,
        resolve: Callable[[Receipt], CallbackTarget | None],
        record: Callable[[Receipt, bool], None],
        workers: int = 8,
    ) -> None:
        self.queue = queue
        self._resolve = resolve
        self._record = record
        self._threads = [
            threading.Thread(target=self._run, name=f"sandbox-receipts-{n}", daemon=True) for n in range(workers)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self.queue.close()
        for thread in self._threads:
            thread.join(timeout=CALLBACK_TIMEOUT_S + 1)

    def _run(self) -> None:
        session = requests.Session()
        while (receipt := self.queue.get()) is not None:
            target = self._resolve(receipt)
            if target is None:
                continue
            xml = event_xml(
                target.original_id,
                receipt.openid,
                [
                    ("MsgType", "event"),
                    ("Event", "TEMPLATESENDJOBFINISH"),
                    ("MsgID", receipt.msgid),
                    ("Status", receipt.status),
                ],
            )
            self._record(receipt, self._deliver(session, target, receipt.openid, xml))

    @staticmethod
    def _deliver(session: requests.Session, target: CallbackTarget, openid: str, xml: str) -> bool:
        for _attempt in range(CALLBACK_ATTEMPTS):
            try:
                response = post_callback(session, target, openid, xml)
            except requests.RequestException:
                continue
            if response.status_code == 200:
                return True
        return False


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
