"""Accepting one message — a template message or a subscription notification, or on channel ``auto`` whichever
the recipient can get (:mod:`.routing`) — validate, store it once (idempotently), and signal the workers."""

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
from messaging.models import Channel, Message
from messaging.reasons import CONSENT_NO_CREDIT_REASON, CONSENT_REJECTED_REASON, UNSUBSCRIBED_REASON
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
    check_subscription_template,
    check_template,
    generate_client_msg_id,
    vanished_reference,
)
from messaging.services.routing import auto_channel, check_channel_fields, no_channel_error
from subscriptions.selectors import REJECTED, consent_for
from templates_app.models import MessageTemplate, SubscriptionTemplate
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
    channel: str = Channel.TEMPLATE,
    subscription_template_id: str = "",
    subscription_data: Mapping[str, Any] | None = None,
    page: str = "",
) -> str:
    """A hash of what was asked, to tell a repeat of a request from another request reusing its key.

    A send time, ``respect_quiet_hours`` and the fields of the other channels (channel, subscription template,
    subscription data, page) count only when given, so a request without them hashes as it did before they existed
    (a client retrying across an upgrade is still recognised); the same key with another send time or another
    channel is another request (422), not a silent replay of the first.
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
    if channel != Channel.TEMPLATE:
        asked["channel"] = str(channel)
    if subscription_template_id:
        asked["subscription_template_id"] = subscription_template_id
    if subscription_data is not None:
        asked["subscription_data"] = subscription_data
    if page:
        asked["page"] = page
    canonical = json.dumps(
        asked,
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _as_keyword_values(data: Any) -> Any:
    """``{"k": "v"}`` as ``{"k": {"value": "v"}}``, WeChat's shape, so both forms of an ``auto`` request hash alike:
    its data is not normalised by one template, since which one it goes with is decided for the recipient."""
    if not isinstance(data, Mapping):
        return data
    return {str(name): raw if isinstance(raw, Mapping) else {"value": raw} for name, raw in data.items()}


@dataclass(frozen=True)
class _Content:
    """What the message sends on its channel, as stored; ``failure`` a reason to store it failed at once."""

    channel: Channel
    template: MessageTemplate | None
    subscription_template: SubscriptionTemplate | None
    template_id_sent: str
    data: dict[str, Any]
    link: str
    failure: str = ""


def _consent_failure(account: OfficialAccount, openid: str, pri_tmpl_id: str) -> str:
    """The reason the ledger refuses this subscription notification now, or "" when it allows it."""
    consent = consent_for(account, openid, pri_tmpl_id)
    if consent.can_send:
        return ""
    return CONSENT_REJECTED_REASON if consent.reason == REJECTED else CONSENT_NO_CREDIT_REASON


def _auto_content(
    account: OfficialAccount,
    template: MessageTemplate,
    subscription_template: SubscriptionTemplate,
    *,
    data: Any,
    subscription_data: Any,
    url: str,
    page: str,
    openid: str,
    follows: bool,
    errors: dict[str, Any],
) -> _Content | None:
    """Channel ``auto``'s message for this recipient (:func:`.routing.auto_channel`), or None with a ``channel``
    error, and the data errors of each channel that was open to the recipient, when neither channel is."""
    template_errors: dict[str, Any] = {}
    subscription_errors: dict[str, Any] = {}
    template_data = check_data(template, data, template_errors)
    values = data if subscription_data is None else subscription_data
    subscription_values = check_data(subscription_template, values, subscription_errors, field="subscription_data")
    pri_tmpl_id = subscription_template.pri_tmpl_id
    route = auto_channel(
        follows=follows,
        template_fits=not template_errors,
        subscription_fits=not subscription_errors,
        consent_allows=lambda: not _consent_failure(account, openid, pri_tmpl_id),
    )
    if route == Channel.TEMPLATE:
        return _Content(Channel.TEMPLATE, template, None, template.template_id, template_data, url)
    if route == Channel.SUBSCRIBE:
        return _Content(Channel.SUBSCRIBE, None, subscription_template, pri_tmpl_id, subscription_values, page)
    errors["channel"] = [no_channel_error()]
    if follows:
        errors.update(template_errors)
    if subscription_errors and not _consent_failure(account, openid, pri_tmpl_id):
        errors.update(subscription_errors)
    return None


def _content(
    account: OfficialAccount,
    channel: str,
    *,
    template_id: str,
    subscription_template_id: str,
    data: Any,
    subscription_data: Any,
    url: str,
    page: str,
    openid: str,
    follower_id: int | None,
    subscribed: bool,
    errors: dict[str, Any],
) -> _Content | None:
    """The message's content on its channel, checked; None when ``errors`` got an entry.

    A template message to a recipient known to have unfollowed, and a subscription notification the consent ledger
    refuses, are returned with their ``failure``: stored failed at once, without a WeChat call.
    """
    template = subscription_template = None
    if channel in (Channel.TEMPLATE, Channel.AUTO) and "template_id" not in errors:
        template = check_template(account, template_id, errors)
    if channel in (Channel.SUBSCRIBE, Channel.AUTO) and "subscription_template_id" not in errors:
        subscription_template = check_subscription_template(account, subscription_template_id, errors)
    if channel == Channel.TEMPLATE:
        normalized = check_data(template, data, errors)
        failure = "" if subscribed else UNSUBSCRIBED_REASON
        return None if errors else _Content(Channel.TEMPLATE, template, None, template_id, normalized, url, failure)
    if channel == Channel.SUBSCRIBE:
        normalized = check_data(subscription_template, data, errors)
        if errors:
            return None
        failure = _consent_failure(account, openid, subscription_template_id)
        return _Content(
            Channel.SUBSCRIBE, None, subscription_template, subscription_template_id, normalized, page, failure
        )
    if errors:
        return None
    return _auto_content(
        account,
        template,
        subscription_template,
        data=data,
        subscription_data=subscription_data,
        url=url,
        page=page,
        openid=openid,
        follows=follower_id is not None and subscribed,
        errors=errors,
    )


def _replay(existing: Message, fingerprint: str) -> SendResult:
    if existing.request_fingerprint != fingerprint:
        raise IdempotencyConflict(existing)
    return SendResult(existing, created=False)


def _insert(message: Message) -> None:
    """Save a new message; a unique-constraint clash must leave the caller's transaction usable.

    Inside a transaction that takes a savepoint.  In autocommit (an API request) the INSERT is a transaction
    of its own, and BEGIN/COMMIT around it would only add two round trips to every request.
    A message inserted failed (its recipient unfollowed, or the ledger refused it) has its ``message.failed`` event
    written in the same transaction (messaging.events).
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
    data: Any,
    template_id: str = "",
    touser: str | None = None,
    user: Any = None,
    url: str = "",
    miniprogram: Mapping[str, str] | None = None,
    client_msg_id: str | None = None,
    send_at: datetime | None = None,
    respect_quiet_hours: bool = False,
    created_by: Any = None,
    trace_id: str = "",
    channel: str = Channel.TEMPLATE,
    subscription_template_id: str = "",
    subscription_data: Any = None,
    page: str = "",
) -> SendResult:
    """Accept one message and queue it for delivery once the surrounding transaction commits.

    ``channel`` (:mod:`.routing`): ``template`` sends ``template_id`` with ``data`` and ``url``; ``subscribe`` a
    subscription notification, ``subscription_template_id`` (its priTmplId) with ``data`` and ``page``, to anyone
    the consent ledger allows, follower or not; ``auto`` the template message when the recipient follows and the data
    fits, else the subscription notification (``subscription_data``, or ``data``) when the ledger allows it, else
    :class:`MessageRejected` with a ``channel`` error.  ``miniprogram`` goes with either channel.

    ``user`` (a username or a user) is resolved through the follower binding of ``account``.  The same
    ``client_msg_id`` with the same request returns the existing message and sends nothing; with a
    different request it raises :class:`IdempotencyConflict`.  When two identical requests race, the
    unique (account, client_msg_id) constraint decides and the loser returns the winner's message.
    A template message to a recipient known to have unfollowed, and a subscription notification the ledger refuses
    (a known rejection, no credit and no long-term grant), are stored failed at once, without a WeChat call.  With
    the account's duplicate window on, the same content to the same user within it returns the first message with
    ``duplicate`` set and stores nothing (:mod:`messaging.services.duplicates`).
    Without ``trace_id`` the current one (e.g. the request's, see :mod:`wxnotify.tracing`) is stored.

    With ``send_at`` (see ``check_send_at``) the message is stored ``scheduled`` and sent at that time; it can be
    cancelled or rescheduled until then.  Single messages are transactional and ignore the account's quiet hours
    unless ``respect_quiet_hours``: then one accepted inside them waits as scheduled until they end (as does one
    whose send time or retry falls inside them, see messaging.scheduling).
    """
    trace_id = trace_id or get_trace_id()
    url, page = url or "", page or ""
    errors: dict[str, Any] = {}
    check_account(account, errors)
    openid, follower_id, subscribed = _resolve_recipient(account, touser, user, errors)
    check_channel_fields(
        channel,
        errors,
        template_id=template_id,
        subscription_template_id=subscription_template_id,
        subscription_data=subscription_data,
        url=url,
        page=page,
    )
    mini = check_link(url, miniprogram, errors)
    check_link(page, None, errors, url_field="page")
    check_client_msg_id(client_msg_id, errors)
    now = timezone.now()
    send_at = check_send_at(account, send_at, errors, now)
    content = _content(
        account,
        channel,
        template_id=template_id,
        subscription_template_id=subscription_template_id,
        data=data,
        subscription_data=subscription_data,
        url=url,
        page=page,
        openid=openid,
        follower_id=follower_id,
        subscribed=subscribed,
        errors=errors,
    )
    auto = channel == Channel.AUTO

    def fingerprint_of(asked_data: Any) -> str:
        return request_fingerprint(
            touser=openid,
            template_id=template_id,
            data=asked_data,
            url=url,
            miniprogram=mini,
            send_at=send_at,
            respect_quiet_hours=respect_quiet_hours,
            channel=channel,
            subscription_template_id=subscription_template_id,
            subscription_data=None if subscription_data is None else _as_keyword_values(subscription_data),
            page=page,
        )

    if content is None:
        # An auto request refused for want of a channel may repeat one accepted while a channel was open (the
        # credit it used is spent now): the repeat answers that message, as any repeat does.
        if auto and "channel" in errors and client_msg_id:
            existing = Message.objects.filter(account=account, client_msg_id=client_msg_id).first()
            if existing is not None:
                return _replay(existing, fingerprint_of(_as_keyword_values(data)))
        raise MessageRejected(errors)
    # What was asked: the data as normalised for its one template, or for auto as given (routing may change).
    fingerprint = fingerprint_of(_as_keyword_values(data) if auto else content.data)

    content_key = duplicates.content_hash(
        template_id=content.template_id_sent,
        data=content.data,
        url=content.link,
        miniprogram=mini,
        channel=content.channel,
    )
    # A repeated client_msg_id is found by the unique constraint rather than a look-up first: repeats are
    # rare, and every other request saves a query.
    message = Message(
        account=account,
        channel=content.channel,
        template=content.template,
        subscription_template=content.subscription_template,
        template_id_sent=content.template_id_sent,
        touser=openid,
        follower_id=follower_id,
        data=content.data,
        url=content.link,
        miniprogram=mini,
        client_msg_id=client_msg_id or generate_client_msg_id(),
        request_fingerprint=fingerprint,
        content_hash=content_key,
        send_at=send_at,
        respect_quiet_hours=respect_quiet_hours,
        created_by=created_by if getattr(created_by, "pk", None) else None,
        trace_id=trace_id,
    )
    if content.failure:
        message.status = Message.Status.FAILED
        message.errmsg = content.failure
        message.finished_at = now
    elif send_at is not None:
        message.status, message.next_attempt_at = Message.Status.SCHEDULED, send_at
        message.wait_reason = Message.WaitReason.SEND_AT
    elif respect_quiet_hours and (quiet_until := account.quiet_hours_end(now)) is not None:
        message.status, message.next_attempt_at = Message.Status.SCHEDULED, quiet_until
        message.wait_reason = Message.WaitReason.QUIET_HOURS
    window = duplicates.window_of(account)
    with duplicates.guarded(account.pk, openid, content_key) if window else contextlib.nullcontext():
        if window:
            original = duplicates.originals(account.pk, openid, content_key, now - window).first()
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
        logger.info("Accepted %s #%s to %s (%s)", message.channel, message.pk, openid, message.status)
    if message.status == Message.Status.QUEUED:
        transaction.on_commit(dispatch.request_singles_delivery)
    elif message.status == Message.Status.SCHEDULED:
        when = message.next_attempt_at
        transaction.on_commit(lambda: scheduling.wake_before(when, timezone.now()))
    return SendResult(message, created=True)
