"""WeChat server callbacks: checking, decrypting, parsing and dispatching what WeChat POSTs to us.

The endpoint faces the internet, so every check runs before anything is trusted, in this order: known active
account (404), body size (413), URL ``signature`` (403), timestamp freshness (403), message mode (403: compatible
and safe accounts trust only the encrypted part, so a request without it is refused), XML parsed by ``defusedxml``
with DTDs, entities and external references refused (400), then in AES mode ``msg_signature``, decryption and the
AppID inside the ciphertext (403).  Only then is the message dispatched, and only once.

Exactly once: WeChat re-sends a message it got no answer for within 5 seconds (three tries in all), so each applied
message is recorded as a :class:`~accounts.models.ProcessedCallback` row, unique per account and message identity,
inserted in the same database transaction as the message's effect.  "Recorded" and "applied" therefore commit or
roll back together: a retry of a message that was applied finds the row and gets the first answer; a copy racing
the first fails on the unique constraint and gets the first answer too; a try that failed left nothing behind, so
the next try applies it.  No cache takes part: a failed cache write can never pass for a duplicate.

Any database failure (the account look-up included) answers 503, never ``success`` and never 500, so WeChat tries
again once the database is back.  Nothing else is answered ``success`` unless its effect is committed.

Timestamp freshness is our own replay policy (WeChat documents none): a request whose signed ``timestamp`` is
more than ``WECHAT_CALLBACK_MAX_CLOCK_SKEW`` seconds (default 300) away from our clock is refused.  The processed
rows are kept longer than that window (:func:`dedup_seconds`), so a captured request replayed while still fresh is
recognised; and since the plaintext-mode signature covers timestamp and nonce but not the body, a signed query
that comes back with a different body is refused (403), while the same query with the same body is a retry.

Anything slow (the ``user/info`` profile fetch for the unionid) goes to django-q2 after the transaction commits,
so the answer stays far inside WeChat's 5-second budget.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import re
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import partial

import defusedxml
import defusedxml.ElementTree as DefusedET
from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from django_q.tasks import async_task

from accounts import binding
from accounts.clients import wechat_client_for
from accounts.models import Follower, OfficialAccount, ProcessedCallback
from messaging.services import record_delivery_receipt
from wxnotify.outages import OUTAGE_ERRORS, is_outage, log_outage
from wxnotify.wechat.crypto import CallbackCrypto, CallbackCryptoError, verify_signature
from wxnotify.wechat.errors import WeChatError

logger = logging.getLogger("wxnotify.accounts.callbacks")

SUCCESS = "success"
OPENID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
# CreateTime becomes a datetime: ten digits reach 2286, more would overflow the year.
CREATE_TIME_RE = re.compile(r"[0-9]{1,10}")
MSGID_RE = re.compile(r"[0-9]{1,20}")
MAX_MSGID = 2**63 - 1  # stored in a BIGINT column
QRSCENE_PREFIX = "qrscene_"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
XML_CONTENT_TYPE = "application/xml; charset=utf-8"
RECEIPT_EVENT = "templatesendjobfinish"
# Failures of the database or the shared cache: not the caller's fault, so answered 503 (WeChat retries).  Any
# database error counts here, not only a lost connection: WeChat tries three times at most, and an event that
# cannot be stored must not be answered as if it had been.
INFRASTRUCTURE_ERRORS = (DatabaseError, *OUTAGE_ERRORS)
# Canonical TEMPLATESENDJOBFINISH statuses, keyed by their form without spaces around the colon.
RECEIPT_STATUSES = {
    "success": "success",
    "failed:user block": "failed:user block",
    "failed:system failed": "failed: system failed",
}


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
    """The flat child elements of a callback XML (nested wrappers such as subscription lists are not needed)."""

    fields: Mapping[str, str]

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
        different zero-id receipts are not mistaken for one another.
        """
        msg_id = self.get("MsgId").strip()
        if self.msg_type != "event" and msg_id:
            return f"msg:{msg_id}"
        receipt_id = self.get("MsgID").strip()
        if self.is_event(RECEIPT_EVENT) and receipt_id.strip("0"):
            return f"receipt:{receipt_id}"
        return f"event:{self.openid}:{self.get('CreateTime').strip()}:{self.msg_type}:{self.event}"


# --- Request checks -------------------------------------------------------------------------------


def active_account(appid: str) -> OfficialAccount | None:
    """The account a callback URL names, without decrypting its AppSecret (callbacks never need it)."""
    try:
        return OfficialAccount.objects.defer("app_secret").get(appid=appid, is_active=True)
    except OfficialAccount.DoesNotExist:
        return None


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
            drain(request, declared)
        raise CallbackRejected(413, f"body of {declared} bytes declared")
    body = request.read(limit + 1)
    if len(body) > limit:
        drain(request, settings.WECHAT_CALLBACK_MAX_DRAIN_BYTES)
        raise CallbackRejected(413, "body larger than the limit")
    return body


def drain(request: HttpRequest, at_most: int) -> None:
    """Read and drop what is left of the request body, ``at_most`` bytes in all, in 64 KiB pieces."""
    left = at_most
    while left > 0:
        chunk = request.read(min(left, 64 * 1024))
        if not chunk:
            return
        left -= len(chunk)


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


def parse_xml(data: bytes | str) -> CallbackMessage:
    """Parse a callback XML with DTDs, entity declarations and external references refused (400)."""
    try:
        root = DefusedET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise CallbackRejected(400, f"refused XML construct: {type(exc).__name__}") from exc
    except (ET.ParseError, ValueError, LookupError) as exc:
        raise CallbackRejected(400, "body is not well-formed XML") from exc
    if root.tag != "xml":
        raise CallbackRejected(400, "root element is not <xml>")
    fields: dict[str, str] = {}
    for child in root:
        if isinstance(child.tag, str):
            fields.setdefault(child.tag, child.text or "")
    return CallbackMessage(fields)


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
    return parse_xml(plaintext)


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


def handle_post(account: OfficialAccount, query: Mapping[str, str], body: bytes) -> CallbackResponse:
    """Check, decrypt, parse and dispatch one POSTed callback; the answer WeChat gets."""
    encrypted = check_request(account, query)
    message = parse_xml(body)
    if encrypted:
        message = decrypt(account, query, message)
    validate(message)
    reply = dispatch_once(account, message, signed_query=f"{query.get('timestamp')}:{query.get('nonce', '')}")
    if not reply:
        return CallbackResponse(SUCCESS)
    reply_xml = text_reply_xml(message, reply)
    if encrypted:
        reply_xml = crypto_for(account).encrypt_reply(reply_xml, nonce=str(secrets.randbelow(10**10)))
    return CallbackResponse(reply_xml, XML_CONTENT_TYPE)


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


# --- Dispatch -------------------------------------------------------------------------------------


def dedup_seconds() -> int:
    """How long a processed message is remembered: past WeChat's retries and past the freshness window."""
    return 2 * settings.WECHAT_CALLBACK_MAX_CLOCK_SKEW + 60


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def content_digest(message: CallbackMessage) -> str:
    """What the message says, independent of XML layout: its fields in a canonical order."""
    return digest(json.dumps(sorted(message.fields.items()), ensure_ascii=False))


def answer_already_given(
    account: OfficialAccount, identity: str, signed_query: str, content: str
) -> ProcessedCallback | None:
    """The record of this message if it was applied; 403 when its signed query was used for another body."""
    seen = list(
        ProcessedCallback.objects.filter(Q(identity=identity) | Q(signed_query=signed_query), account=account).only(
            "identity", "content", "reply"
        )
    )
    for record in seen:
        if record.identity == identity:
            return record
    if any(record.content != content for record in seen):
        raise CallbackRejected(403, "signed query already used for another message")
    return None


_sqlite_write_turn = threading.Lock()


@contextlib.contextmanager
def one_sqlite_writer() -> Iterator[None]:
    """On SQLite, one callback transaction of this process at a time; nothing on other databases.

    SQLite has one writer at a time, and a writer that finds the lock taken sleeps and polls (the busy timeout):
    with a dozen request threads polling, an unlucky one starves for seconds, past WeChat's 5-second wait.
    Queued on a lock of the process, the threads take turns in order and only the processes compete.
    """
    if connection.vendor != "sqlite":
        yield
        return
    with _sqlite_write_turn:
        yield


def dispatch_once(account: OfficialAccount, message: CallbackMessage, *, signed_query: str) -> str:
    """Apply ``message`` unless it was applied before; a repeat gets the first answer.

    The :class:`ProcessedCallback` row is inserted first, in the transaction that applies the message: a copy of
    the message racing this one waits on the unique index (PostgreSQL) or on the write lock (SQLite), then fails
    with an integrity error and is answered from the winner's row.  Any other database failure rolls everything
    back and answers 503, so one of WeChat's retries applies the message.
    """
    identity = digest(message.dedup_identity())
    query = digest(signed_query)
    content = content_digest(message)
    try:
        record = answer_already_given(account, identity, query, content)
        if record is not None:
            logger.info("Repeated callback for %s answered with the first answer", account.appid)
            return record.reply
        try:
            with one_sqlite_writer(), transaction.atomic():
                record = ProcessedCallback.objects.create(
                    account=account, identity=identity, signed_query=query, content=content
                )
                reply = dispatch(account, message)
                if reply:
                    ProcessedCallback.objects.filter(pk=record.pk).update(reply=reply)
        except IntegrityError as exc:
            record = answer_already_given(account, identity, query, content)
            if record is None:
                raise CallbackRejected(503, "integrity error without a competing record") from exc
            logger.info("Callback for %s applied meanwhile by another request", account.appid)
            return record.reply
    except INFRASTRUCTURE_ERRORS as exc:
        log_failure(exc, account.appid)
        raise CallbackRejected(503, "database unavailable") from exc
    return reply


def log_failure(exc: BaseException, appid: str) -> None:
    """An outage is logged once a minute (it fails every callback); any other database error each time, in full."""
    if is_outage(exc):
        log_outage(logger, "Database or cache (callbacks answered 503)", exc)
    else:
        logger.error("Callback for %s not processed", appid, exc_info=exc)


def dispatch(account: OfficialAccount, message: CallbackMessage) -> str:
    """Apply one authenticated message; returns the passive reply text ("" for none)."""
    if message.is_event(RECEIPT_EVENT):
        record_receipt(account, message)
        return ""
    follower, created = touch_follower(account, message)
    reply = ""
    if message.is_event("subscribe"):
        reply = on_subscribe(follower, created, message)
    elif message.is_event("unsubscribe"):
        on_unsubscribe(follower, message)
    elif message.is_event("scan"):
        reply = bind_by_scene(follower, message.event_key)
    elif message.msg_type == "text" and binding.is_code_candidate(message.get("Content")):
        reply = bind_by_code(follower, message.get("Content"))
    if created and not message.is_event("unsubscribe") and not message.is_event("subscribe"):
        fetch_profile_later(follower)
    return reply


def record_receipt(account: OfficialAccount, message: CallbackMessage) -> None:
    """Hand a TEMPLATESENDJOBFINISH to messaging; a receipt is WeChat's report, not an interaction of the user."""
    record_delivery_receipt(
        account=account,
        msgid=int(message.get("MsgID").strip()),
        wechat_status=normalise_receipt_status(message.get("Status")),
        openid=message.openid,
        event_time=message.create_time,
    )


def normalise_receipt_status(status: str) -> str:
    """WeChat's exact status strings, whatever the whitespace (``failed: user block`` exists in the wild)."""
    collapsed = " ".join(status.split())
    return RECEIPT_STATUSES.get(re.sub(r"\s*:\s*", ":", collapsed).lower(), collapsed)


def touch_follower(account: OfficialAccount, message: CallbackMessage) -> tuple[Follower, bool]:
    """The sender's follower, created on first contact; every message or event counts as an interaction."""
    now = timezone.now()
    follower, created = Follower.objects.get_or_create(
        account=account,
        openid=message.openid,
        defaults={
            "source": Follower.Source.CALLBACK,
            "subscribed": not message.is_event("unsubscribe"),
            "last_interaction_at": now,
        },
    )
    follower.account = account  # the loaded row would otherwise fetch it again (with its AppSecret)
    if not created:
        follower.last_interaction_at = now
        follower.save(update_fields=["last_interaction_at", "updated_at"])
    return follower, created


def on_subscribe(follower: Follower, created: bool, message: CallbackMessage) -> str:
    """Mark the follower subscribed and answer with the account's welcome reply (if any).

    A ``qrscene_`` key is the QR code they followed through; when it is one of our binding codes the binding
    confirmation follows the welcome text.
    """
    scene = message.event_key.removeprefix(QRSCENE_PREFIX) if message.event_key.startswith(QRSCENE_PREFIX) else ""
    follower.subscribed = True
    follower.subscribed_at = message.create_time or timezone.now()
    update_fields = ["subscribed", "subscribed_at", "updated_at"]
    if scene:
        # A binding scene holds a live token: keep only the fact that it was a binding code.
        follower.qr_scene_str = binding.SCENE_PREFIX if binding.is_binding_scene(scene) else scene[:64]
        update_fields.append("qr_scene_str")
        if created:
            follower.source = Follower.Source.QR
            update_fields.append("source")
    follower.save(update_fields=update_fields)
    fetch_profile_later(follower)
    welcome = follower.account.welcome_reply.strip()
    if scene and binding.is_binding_scene(scene):
        return "\n\n".join(part for part in (welcome, bind_by_scene(follower, scene)) if part)
    return welcome


def on_unsubscribe(follower: Follower, message: CallbackMessage) -> None:
    """Later sends to this follower fail fast without calling WeChat (the send pipeline checks ``subscribed``)."""
    follower.subscribed = False
    follower.unsubscribed_at = message.create_time or timezone.now()
    follower.save(update_fields=["subscribed", "unsubscribed_at", "updated_at"])


def bind_by_scene(follower: Follower, scene: str) -> str:
    """Bind through a scanned QR scene; scenes that are not ours (posters, campaigns) get no reply."""
    if not binding.is_binding_scene(scene):
        return ""
    try:
        user = binding.user_for_scene(follower.account, scene)
        outcome = binding.bind_follower(follower, user, proof=binding.Proof.TOKEN, scene=scene)
    except binding.BindingError as exc:
        return exc.reply
    return binding.outcome_reply(outcome, user)


def bind_by_code(follower: Follower, text: str) -> str:
    try:
        user = binding.user_for_code(follower.account, follower.openid, text)
    except binding.BindingError as exc:
        return exc.reply
    outcome = binding.bind_follower(follower, user, proof=binding.Proof.CODE)
    return binding.outcome_reply(outcome, user)


def fetch_profile_later(follower: Follower) -> None:
    """Queue the ``user/info`` call once the follower row is committed (robust: a broker hiccup is only logged)."""
    transaction.on_commit(partial(async_task, "accounts.callbacks.fetch_follower_profile", follower.pk), robust=True)


def fetch_follower_profile(follower_id: int) -> None:
    """django-q2 task: fill unionid, subscribe scene (and a missing remark) from ``user/info``.

    Only those columns are written (``update``), so a subscribe or unsubscribe processed meanwhile is not
    overwritten; a user who no longer follows gets nothing back from WeChat and is left alone.
    """
    follower = Follower.objects.select_related("account").filter(pk=follower_id).first()
    if follower is None or not follower.account.is_active:
        return
    try:
        info = wechat_client_for(follower.account).get_user_info(follower.openid)
    except WeChatError as exc:
        logger.warning("Profile of follower %s not fetched: %s", follower_id, exc)
        return
    if not info.get("subscribe"):
        return
    now = timezone.now()
    changes = {
        "unionid": str(info.get("unionid") or "")[:64],
        "subscribe_scene": str(info.get("subscribe_scene") or "")[:64],
        "synced_at": now,
        "updated_at": now,
    }
    if not follower.remark:  # once set, the remark is our operators' note (as in the follower sync)
        changes["remark"] = str(info.get("remark") or "")[:100]
    Follower.objects.filter(pk=follower_id).update(**changes)
