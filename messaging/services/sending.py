"""Accepting one template message: validate, store it once (idempotently), and signal the workers."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import Follower, OfficialAccount
from accounts.selectors import followers_by_username
from messaging import dispatch, events, scheduling
from messaging.models import Message
from messaging.reasons import UNSUBSCRIBED_REASON
from messaging.services import duplicates
from messaging.services.checks import (
    OPENID_RE,
    IdempotencyConflict,
    MessageRejected,
    check_account,
    check_client_msg_id,
    check_data,
    check_link,
    check_send_at,
    check_template,
    generate_client_msg_id,
    vanished_reference,
)
from wxnotify.tracing import get_trace_id, traced

logger = logging.getLogger("wxnotify.messaging")


@dataclass(frozen=True)
class SendResult:
    """The accepted message, and whether this call created it (False: an idempotent repeat, or with ``duplicate``
    the first message of the same content to the same user within the account's duplicate window)."""

    message: Message
    created: bool
    duplicate: bool = False


def _resolve_user(account: OfficialAccount, user: Any, errors: dict[str, Any]) -> tuple[str, int | None, bool]:
    """The openid, follower id and subscription of the follower a user's messages go to ("" when unbound)."""
    username = user.get_username() if hasattr(user, "get_username") else str(user)
    follower = followers_by_username(account.pk, [username]).get(username)
    if follower is None:
        # One answer whether or not the username exists: the API must not tell callers which usernames there are.
        errors["user"] = [_("No follower of this account is bound to this user.")]
        return "", None, True
    return follower.openid, follower.pk, follower.subscribed


def _resolve_recipient(
    account: OfficialAccount, touser: str | None, user: Any, errors: dict[str, Any]
) -> tuple[str, int | None, bool]:
    """The openid to send to, its follower id (None for an openid we have never seen) and whether it follows."""
    if touser and user:
        errors["touser"] = [_("Give either touser or user, not both.")]
        return "", None, True
    if user:
        return _resolve_user(account, user, errors)
    if not touser:
        errors["touser"] = [_("Give the recipient: touser (an openid) or user (a username).")]
        return "", None, True
    if not OPENID_RE.match(touser):
        errors["touser"] = [_("This is not an openid.")]
        return "", None, True
    # At most one row (unique per account); order_by() spares the join the model's default ordering would add.
    # A send only links the message to the follower and checks the subscription: the other columns stay unread.
    row = Follower.objects.filter(account=account, openid=touser).order_by().values_list("id", "subscribed").first()
    return (touser, *row) if row else (touser, None, True)


def request_fingerprint(
    *,
    touser: str,
    template_id: str,
    data: Mapping[str, Any],
    url: str,
    miniprogram: Mapping[str, str] | None,
    send_at: datetime | None = None,
    respect_quiet_hours: bool = False,
) -> str:
    """A hash of what was asked, to tell a repeat of a request from another request reusing its key.

    A send time and ``respect_quiet_hours`` count only when given, so a request without them hashes as it did
    before they existed (a client retrying across an upgrade is still recognised); the same key with another send
    time is another request (422), not a silent replay of the first.
    """
    asked: dict[str, Any] = {
        "touser": touser,
        "template_id": template_id,
        "data": data,
        "url": url,
        "miniprogram": miniprogram,
    }
    if send_at is not None:
        asked["send_at"] = send_at.timestamp()
    if respect_quiet_hours:
        asked["respect_quiet_hours"] = True
    canonical = json.dumps(
        asked,
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _replay(existing: Message, fingerprint: str) -> SendResult:
    if existing.request_fingerprint != fingerprint:
        raise IdempotencyConflict(existing)
    return SendResult(existing, created=False)


def _insert(message: Message) -> None:
    """Save a new message; a unique-constraint clash must leave the caller's transaction usable.

    Inside a transaction that takes a savepoint.  In autocommit (an API request) the INSERT is a transaction
    of its own, and BEGIN/COMMIT around it would only add two round trips to every request.
    A message inserted failed (its recipient unfollowed) has its ``message.failed`` event written in the same
    transaction (messaging.events).
    """
    failed = message.status == Message.Status.FAILED
    if transaction.get_connection().in_atomic_block or (failed and events.wanted(events.MESSAGE_FAILED)):
        with transaction.atomic():
            message.save()
            if failed:
                events.record_messages(events.MESSAGE_FAILED, Message.objects.filter(pk=message.pk))
    else:
        message.save()


def send_message(
    *,
    account: OfficialAccount,
    template_id: str,
    data: Any,
    touser: str | None = None,
    user: Any = None,
    url: str = "",
    miniprogram: Mapping[str, str] | None = None,
    client_msg_id: str | None = None,
    send_at: datetime | None = None,
    respect_quiet_hours: bool = False,
    created_by: Any = None,
    trace_id: str = "",
) -> SendResult:
    """Accept one template message and queue it for delivery once the surrounding transaction commits.

    ``user`` (a username or a user) is resolved through the follower binding of ``account``.  The same
    ``client_msg_id`` with the same request returns the existing message and sends nothing; with a
    different request it raises :class:`IdempotencyConflict`.  When two identical requests race, the
    unique (account, client_msg_id) constraint decides and the loser returns the winner's message.
    A recipient known to have unfollowed gets a message that fails at once, without a WeChat call.  With the
    account's duplicate window on, the same content to the same user within it returns the first message with
    ``duplicate`` set and stores nothing (:mod:`messaging.services.duplicates`).
    Without ``trace_id`` the current one (e.g. the request's, see :mod:`wxnotify.tracing`) is stored.

    With ``send_at`` (see ``check_send_at``) the message is stored ``scheduled`` and sent at that time; it can be
    cancelled or rescheduled until then.  Single messages are transactional and ignore the account's quiet hours
    unless ``respect_quiet_hours``: then one accepted inside them waits as scheduled until they end (as does one
    whose send time or retry falls inside them, see messaging.scheduling).
    """
    trace_id = trace_id or get_trace_id()
    errors: dict[str, Any] = {}
    check_account(account, errors)
    openid, follower_id, subscribed = _resolve_recipient(account, touser, user, errors)
    template = check_template(account, template_id, errors)
    normalized = check_data(template, data, errors)
    mini = check_link(url or "", miniprogram, errors)
    check_client_msg_id(client_msg_id, errors)
    now = timezone.now()
    send_at = check_send_at(account, send_at, errors, now)
    if errors:
        raise MessageRejected(errors)

    fingerprint = request_fingerprint(
        touser=openid,
        template_id=template_id,
        data=normalized,
        url=url or "",
        miniprogram=mini,
        send_at=send_at,
        respect_quiet_hours=respect_quiet_hours,
    )
    content = duplicates.content_hash(template_id=template_id, data=normalized, url=url or "", miniprogram=mini)
    # A repeated client_msg_id is found by the unique constraint rather than a look-up first: repeats are
    # rare, and every other request saves a query.
    message = Message(
        account=account,
        template=template,
        template_id_sent=template_id,
        touser=openid,
        follower_id=follower_id,
        data=normalized,
        url=url or "",
        miniprogram=mini,
        client_msg_id=client_msg_id or generate_client_msg_id(),
        request_fingerprint=fingerprint,
        content_hash=content,
        send_at=send_at,
        respect_quiet_hours=respect_quiet_hours,
        created_by=created_by if getattr(created_by, "pk", None) else None,
        trace_id=trace_id,
    )
    if not subscribed:
        message.status = Message.Status.FAILED
        message.errmsg = UNSUBSCRIBED_REASON
        message.finished_at = now
    elif send_at is not None:
        message.status, message.next_attempt_at = Message.Status.SCHEDULED, send_at
        message.wait_reason = Message.WaitReason.SEND_AT
    elif respect_quiet_hours and (quiet_until := account.quiet_hours_end(now)) is not None:
        message.status, message.next_attempt_at = Message.Status.SCHEDULED, quiet_until
        message.wait_reason = Message.WaitReason.QUIET_HOURS
    window = duplicates.window_of(account)
    with duplicates.guarded(account.pk, openid, content) if window else contextlib.nullcontext():
        if window:
            original = duplicates.originals(account.pk, openid, content, now - window).first()
            if original is not None:
                if original.client_msg_id == message.client_msg_id:
                    return _replay(original, fingerprint)
                with traced(trace_id):
                    logger.info("Duplicate of message #%s to %s within the window: not accepted", original.pk, openid)
                return SendResult(original, created=False, duplicate=True)
        try:
            _insert(message)
        except IntegrityError:
            existing = Message.objects.filter(account=account, client_msg_id=message.client_msg_id).first()
            if existing is None:
                raise vanished_reference() from None
            return _replay(existing, fingerprint)
    with traced(trace_id):
        logger.info("Accepted message #%s to %s (%s)", message.pk, openid, message.status)
    if message.status == Message.Status.QUEUED:
        transaction.on_commit(dispatch.request_singles_delivery)
    elif message.status == Message.Status.SCHEDULED:
        when = message.next_attempt_at
        transaction.on_commit(lambda: scheduling.wake_before(when, timezone.now()))
    return SendResult(message, created=True)
