"""Applying an authenticated WeChat callback exactly once, and answering it.

Exactly once: WeChat re-sends a message it got no answer for within 5 seconds (three tries in all), so each applied
message is recorded as a :class:`~callbacks.models.ProcessedCallback` row, unique per account and message identity,
inserted in the same database transaction as the message's effect.  "Recorded" and "applied" therefore commit or
roll back together: a retry of a message that was applied finds the row and gets the first answer; a copy racing
the first fails on the unique constraint and gets the first answer too; a try that failed left nothing behind, so
the next try applies it.  No cache takes part: a failed cache write can never pass for a duplicate.

Any database failure (the account look-up included) answers 503, never ``success`` and never 500, so WeChat tries
again once the database is back.  Nothing else is answered ``success`` unless its effect is committed.

The processed rows are kept longer than the freshness window of :mod:`callbacks.messages` (:func:`dedup_seconds`),
so a captured request replayed while still fresh is recognised; and since the plaintext-mode signature covers
timestamp and nonce but not the body, a signed query that comes back with a different body is refused (403), while
the same query with the same body is a retry.

Anything slow (the ``user/info`` profile fetch for the unionid) goes to django-q2 after the transaction commits,
so the answer stays far inside WeChat's 5-second budget.  A delivery receipt is answered once it is stored: WeChat
pushes one per message after a campaign, as fast as it delivers, and messaging applies them in batches.  An
encrypted receipt with a MsgID costs one INSERT and no ``ProcessedCallback`` row (:func:`store_receipt`): the stored
receipt is unique per msgid, so it is its own record of having been received.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import secrets
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from functools import partial

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from accounts import binding
from accounts.models import Follower, OfficialAccount
from callbacks.messages import (
    CHANGE_EVENT,
    POPUP_EVENT,
    RECEIPT_EVENT,
    SENT_EVENT,
    XML_CONTENT_TYPE,
    CallbackMessage,
    CallbackRejected,
    CallbackResponse,
    check_request,
    crypto_for,
    decrypt,
    parse_body,
    text_reply_xml,
    validate,
)
from callbacks.metrics import RECEIPTS_PER_INSERT
from callbacks.models import ProcessedCallback
from messaging.dispatch import request_receipt_application
from messaging.services import (
    ReceivedReceipt,
    record_delivery_receipts,
    record_subscription_receipts,
)
from subscriptions.services import record_change, record_popup
from wxnotify.group_commit import GroupCommit
from wxnotify.memo import memo_key, remember, remembered
from wxnotify.outages import OUTAGE_ERRORS, is_outage, log_outage

# The logger's name predates the callbacks app; log routing and alerts select on it.
logger = logging.getLogger("wxnotify.accounts.callbacks")

SUCCESS = "success"
QRSCENE_PREFIX = "qrscene_"
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
# Processed-callback rows deleted per statement: short write transactions, so SQLite's callback writers wait little.
PRUNE_BATCH_SIZE = 5000
# The django-q2 task that fetches a new follower's profile (stored in queued task rows: keep it importable).
FETCH_PROFILE_TASK = "accounts.tasks.fetch_follower_profile"
# At most this many receipts in one INSERT of RECEIPT_WRITES (a web process has a few dozen request threads at most).
RECEIPT_WRITE_BATCH = 100


def active_account(appid: str) -> OfficialAccount | None:
    """The account a callback URL names, without decrypting its AppSecret (callbacks never need it).

    Memoised per process for a few seconds (:mod:`wxnotify.memo`): every callback asks, a burst of receipts asks
    hundreds of times a second, and accounts rarely change.  Only found accounts are kept, so an AppID typed by a
    prober costs a query each time and fills nothing; an account deactivated, or given a new Token or EncodingAESKey,
    in another process is still served as before for up to the memo's lifetime (WeChat's retries then succeed).
    """
    key = memo_key("callback-account", appid)
    account = remembered(key)
    if account is None:
        account = OfficialAccount.objects.defer("app_secret").filter(appid=appid, is_active=True).first()
        remember(key, account)
    return account


def handle_post(account: OfficialAccount, query: Mapping[str, str], body: bytes) -> CallbackResponse:
    """Check, decrypt, parse and dispatch one POSTed callback; the answer WeChat gets."""
    encrypted = check_request(account, query)
    message = parse_body(body)
    if encrypted:
        message = decrypt(account, query, message)
    validate(message)
    if encrypted and is_numbered_receipt(message):
        store_receipt(account, message)
        return CallbackResponse(SUCCESS)
    reply = dispatch_once(account, message, signed_query=f"{query.get('timestamp')}:{query.get('nonce', '')}")
    if not reply:
        return CallbackResponse(SUCCESS)
    reply_xml = text_reply_xml(message, reply)
    if encrypted:
        reply_xml = crypto_for(account).encrypt_reply(reply_xml, nonce=str(secrets.randbelow(10**10)))
    return CallbackResponse(reply_xml, XML_CONTENT_TYPE)


def dedup_seconds() -> int:
    """How long a processed message is remembered: past WeChat's retries and past the freshness window."""
    return 2 * settings.WECHAT_CALLBACK_MAX_CLOCK_SKEW + 60


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def content_digest(message: CallbackMessage) -> str:
    """What the message says, independent of XML layout: its fields in a canonical order."""
    fields = sorted(message.fields.items())
    if message.items:
        return digest(json.dumps([fields, [sorted(item.items()) for item in message.items]], ensure_ascii=False))
    return digest(json.dumps(fields, ensure_ascii=False))


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

    The :class:`ProcessedCallback` row is inserted first, in the transaction that applies the message, without
    looking for it beforehand (repeats are rare, and every query counts in a burst of receipts): a repeat, or a
    copy racing this one after waiting on the unique index (PostgreSQL) or on the write lock (SQLite), fails with
    an integrity error, rolls back and is answered from the first try's row.  Any other database failure rolls
    everything back and answers 503, so one of WeChat's retries applies the message.  A receipt is only stored in
    that transaction; once it has committed, a task is asked to apply it (:mod:`messaging.dispatch`).
    """
    identity = digest(message.dedup_identity())
    query = digest(signed_query)
    content = content_digest(message)
    try:
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
            logger.info("Repeated callback for %s answered with the first answer", account.appid)
            return record.reply
    except INFRASTRUCTURE_ERRORS as exc:
        log_failure(exc, account.appid)
        raise CallbackRejected(503, "database unavailable") from exc
    if message.is_event(RECEIPT_EVENT) or message.is_event(SENT_EVENT):
        request_receipt_application()
    return reply


def is_numbered_receipt(message: CallbackMessage) -> bool:
    """A delivery receipt with a MsgID of its own (0 is reported when ``client_msg_id`` was used)."""
    return message.is_event(RECEIPT_EVENT) and bool(message.get("MsgID").strip().strip("0"))


def store_receipt(account: OfficialAccount, message: CallbackMessage) -> None:
    """Store an encrypted receipt with its MsgID: one INSERT in autocommit, no :class:`ProcessedCallback` row.

    The stored receipt is its own de-duplication record (unique per account and msgid, see
    ``messaging.models.DeliveryReceipt``): a retry or a replay inserts nothing and is answered ``success``, which the
    first try's committed row makes true.  The signed-query rule of ``ProcessedCallback`` is not needed here:
    ``msg_signature`` covers the ciphertext, so a signed query cannot be reused with another body.  Plaintext
    receipts (whose signature does not cover the body) and MsgID 0 receipts (no msgid to be unique on) keep
    :func:`dispatch_once`.  Receipts arriving side by side in this process share the INSERT (:data:`RECEIPT_WRITES`);
    each request still answers only once its own receipt is committed.  A database failure answers 503, so one of
    WeChat's retries stores the receipt.
    """
    try:
        RECEIPT_WRITES.submit(received_receipt(account, message))
    except INFRASTRUCTURE_ERRORS as exc:
        log_failure(exc, account.appid)
        raise CallbackRejected(503, "database unavailable") from exc


def write_receipts(receipts: Sequence[ReceivedReceipt]) -> int:
    """One batch of :data:`RECEIPT_WRITES`: the receipts in one INSERT; how many were new.

    The INSERT runs in autocommit (callback requests are not atomic), so it is committed when it returns, and the
    requests of the batch may answer ``success``.
    """
    with one_sqlite_writer():
        stored = record_delivery_receipts(receipts)
    RECEIPTS_PER_INSERT.observe(len(receipts))
    if stored < len(receipts):
        logger.info("%d repeated receipts: stored already", len(receipts) - stored)
    return stored


def after_receipts_written(_stored: int) -> None:
    """Once per batch, after its requests are released: make sure a task applies what it stored (repeats included:
    their first try's request for a task may have failed)."""
    request_receipt_application()


# Encrypted receipts of this process's request threads, written together (wxnotify.group_commit): in a burst, one
# INSERT, commit and task check per batch instead of per receipt.
RECEIPT_WRITES: GroupCommit[ReceivedReceipt, int] = GroupCommit(
    write_receipts, max_batch=RECEIPT_WRITE_BATCH, after_write=after_receipts_written
)


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
    if message.is_event(POPUP_EVENT) or message.is_event(CHANGE_EVENT) or message.is_event(SENT_EVENT):
        record_subscription_event(account, message)
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


def record_receipt(account: OfficialAccount, message: CallbackMessage) -> bool:
    """Hand a TEMPLATESENDJOBFINISH to messaging, which stores it to apply it with others a moment later (False: it
    was stored before).  For the receipts that :func:`dispatch_once` applies inside its transaction (plaintext, or
    MsgID 0); see :func:`store_receipt`."""
    return record_delivery_receipts([received_receipt(account, message)]) == 1


def received_receipt(account: OfficialAccount, message: CallbackMessage) -> ReceivedReceipt:
    """A TEMPLATESENDJOBFINISH as messaging stores it: WeChat's report, not an interaction of the user."""
    return ReceivedReceipt(
        account_id=account.pk,
        msgid=int(message.get("MsgID").strip()),
        wechat_status=normalise_receipt_status(message.get("Status")),
        openid=message.openid,
        event_time=message.create_time,
    )


def record_subscription_event(account: OfficialAccount, message: CallbackMessage) -> None:
    """Apply a subscription-notification event without touching the followers: these events come from users who may
    not follow the account, and a follower row would make them look subscribed.

    Popups and changes go to the consent ledger.  ``subscribe_msg_sent_event`` (bizsend's delivery report) is handed
    to messaging like a TEMPLATESENDJOBFINISH: each item stored as a receipt, applied with others a moment later.
    """
    if message.is_event(POPUP_EVENT):
        record_popup(account, message.openid, message.items)
    elif message.is_event(CHANGE_EVENT):
        record_change(account, message.openid, message.items)
    elif message.is_event(SENT_EVENT):
        record_subscription_receipts(
            account=account, openid=message.openid, items=message.items, event_time=message.create_time
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
    transaction.on_commit(partial(async_task, FETCH_PROFILE_TASK, follower.pk), robust=True)


def prune_processed_callbacks(older_than: datetime) -> int:
    """Delete the records of callbacks processed before ``older_than``; returns how many.

    Deleted in batches of :data:`PRUNE_BATCH_SIZE`, each its own short transaction: a burst of receipts leaves
    hundreds of thousands of rows, and one long delete would hold SQLite's write lock against the callbacks
    arriving meanwhile.
    """
    deleted = 0
    while True:
        batch = list(
            ProcessedCallback.objects.filter(processed_at__lt=older_than).values_list("pk", flat=True)[
                :PRUNE_BATCH_SIZE
            ]
        )
        if not batch:
            return deleted
        deleted += ProcessedCallback.objects.filter(pk__in=batch).delete()[0]
