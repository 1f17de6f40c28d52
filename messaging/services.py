"""Actions of the send pipeline: accept messages and campaigns, cancel, retry, apply delivery receipts.

Accepting only writes rows and, once the transaction has committed, hands their ids to django-q2.  The
rows are the source of truth: if the broker loses the task (the Redis broker never re-delivers), the
sweeper in :mod:`messaging.tasks` finds the due rows again, and the ``client_msg_id`` every attempt
carries lets WeChat drop a resend.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from itertools import islice
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone
from django.utils.translation import gettext as _
from django_q.tasks import async_task

from accounts.models import Follower, OfficialAccount
from messaging.models import Campaign, DeliveryReceipt, Message
from templates_app.keywords import validate_template_data
from templates_app.models import MessageTemplate
from templates_app.selectors import get_active_template
from wxnotify.tracing import get_trace_id, traced

logger = logging.getLogger("wxnotify.messaging")

CLIENT_MSG_ID_MAX_LENGTH = 64
# Printable ASCII without spaces: WeChat documents no charset, and this survives every log and header.
_CLIENT_MSG_ID_RE = re.compile(r"^[\x21-\x7e]{1,64}$")
_OPENID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MINIPROGRAM_KEYS = {"appid", "pagepath"}
# Rows per INSERT and per follower lookup while expanding a campaign: big enough to be fast, small
# enough that memory stays flat however many recipients there are.
EXPANSION_CHUNK_SIZE = 2000
# How many offending names an error about a recipient list quotes.
_QUOTED_NAMES = 10

UNSUBSCRIBED_REASON = "The recipient no longer follows the account; not sent to WeChat."
CANCELLED_REASON = "Cancelled with its campaign."


class MessageRejected(Exception):
    """The request cannot be accepted; ``errors`` maps fields to readable messages (the API answers 400).

    Keys are request fields (``account``, ``touser``, ``user``, ``template_id``, ``url``, ``miniprogram``,
    ``client_msg_id``, ``recipients``); ``data`` maps to a dict of keyword → messages, or to a list for
    errors about the data as a whole, like DRF's nested serializer errors.
    """

    def __init__(self, errors: dict[str, Any]) -> None:
        self.errors = errors
        super().__init__("; ".join(sorted(errors)))


class IdempotencyConflict(Exception):
    """The ``client_msg_id`` was already used for a different request (the API answers 422)."""

    def __init__(self, existing: Message) -> None:
        self.existing = existing
        super().__init__(
            _("client_msg_id “%(id)s” was already used for a different message (#%(pk)s).")
            % {"id": existing.client_msg_id, "pk": existing.pk}
        )


@dataclass(frozen=True)
class SendResult:
    """The accepted message, and whether this call created it (False: an idempotent repeat)."""

    message: Message
    created: bool


@dataclass(frozen=True)
class RecipientSpec:
    """Who a campaign goes to: a list of openids, a list of usernames, or every subscribed follower.

    ``values`` may be any iterable (a generator too): it is consumed once, in chunks.
    """

    kind: str
    values: Iterable[str] = field(default=())

    @classmethod
    def openids(cls, openids: Iterable[str]) -> RecipientSpec:
        return cls(Campaign.RecipientKind.OPENIDS, openids)

    @classmethod
    def usernames(cls, usernames: Iterable[str]) -> RecipientSpec:
        return cls(Campaign.RecipientKind.USERNAMES, usernames)

    @classmethod
    def all_subscribed(cls) -> RecipientSpec:
        return cls(Campaign.RecipientKind.ALL_SUBSCRIBED)


# --- Enqueueing ---------------------------------------------------------------------------------------------------


def enqueue_delivery(message_ids: Sequence[int], trace_id: str = "") -> None:
    """Hand message ids to a delivery task; best effort, because the sweeper finds anything lost here."""
    try:
        async_task("messaging.tasks.deliver_messages", list(message_ids), trace_id=trace_id, save=False)
    except Exception:
        logger.exception("Could not enqueue delivery of %d message(s); the sweeper will pick them up", len(message_ids))


def enqueue_campaign(campaign_id: int, trace_id: str = "") -> None:
    """Let a worker cut the campaign's queued messages into delivery batches (keeps the request short)."""
    try:
        async_task("messaging.tasks.dispatch_campaign", campaign_id, trace_id=trace_id, save=False)
    except Exception:
        logger.exception("Could not enqueue campaign %s; the sweeper will pick its messages up", campaign_id)


# --- Validation ---------------------------------------------------------------------------------------------------


def generate_client_msg_id() -> str:
    return f"wxn-{uuid.uuid4().hex}"


def _check_account(account: OfficialAccount, errors: dict[str, Any]) -> None:
    if not account.is_active:
        errors["account"] = [_("This official account is inactive.")]


def _check_template(account: OfficialAccount, template_id: str, errors: dict[str, Any]) -> MessageTemplate | None:
    template = get_active_template(account, template_id) if template_id else None
    if template is None:
        errors["template_id"] = [_("No active template with this template_id for this account.")]
    return template


def _check_data(template: MessageTemplate | None, data: Any, errors: dict[str, Any]) -> dict[str, Any]:
    if template is None:
        return {}
    result = validate_template_data(template, data)
    if result.errors:
        errors["data"] = result.errors
    return result.data


def _check_link(url: str, miniprogram: Any, errors: dict[str, Any]) -> dict[str, str] | None:
    if url:
        if len(url) > 1024:
            errors["url"] = [_("The link URL is longer than 1024 characters.")]
        else:
            try:
                URLValidator(schemes=["http", "https"])(url)
            except ValidationError:
                errors["url"] = [_("Enter a valid http:// or https:// URL.")]
    if miniprogram in (None, {}):
        return None
    if not isinstance(miniprogram, Mapping) or set(miniprogram) - _MINIPROGRAM_KEYS:
        errors["miniprogram"] = [_('Give the mini-program as {"appid": "...", "pagepath": "..."}.')]
        return None
    appid = miniprogram.get("appid")
    pagepath = miniprogram.get("pagepath", "")
    if not isinstance(appid, str) or not appid.strip() or not isinstance(pagepath, str):
        errors["miniprogram"] = [_("The mini-program needs an appid, and pagepath must be a string.")]
        return None
    return {"appid": appid.strip(), "pagepath": pagepath}


def _check_client_msg_id(client_msg_id: str | None, errors: dict[str, Any]) -> None:
    if client_msg_id is not None and not _CLIENT_MSG_ID_RE.match(client_msg_id):
        errors["client_msg_id"] = [
            _("Use 1 to %(max)d printable ASCII characters without spaces.") % {"max": CLIENT_MSG_ID_MAX_LENGTH}
        ]


def _resolve_user(account: OfficialAccount, user: Any, errors: dict[str, Any]) -> Follower | None:
    username = user.get_username() if hasattr(user, "get_username") else str(user)
    follower = (
        Follower.objects.filter(account=account, user__username=username).order_by("-subscribed", "-updated_at").first()
    )
    if follower is None:
        if get_user_model().objects.filter(username=username).exists():
            errors["user"] = [_("This user has not bound their WeChat to this account.")]
        else:
            errors["user"] = [_("No such user.")]
    return follower


def _resolve_recipient(
    account: OfficialAccount, touser: str | None, user: Any, errors: dict[str, Any]
) -> tuple[str, Follower | None]:
    """The openid to send to and its follower row (None for an openid we have never seen)."""
    if touser and user:
        errors["touser"] = [_("Give either touser or user, not both.")]
        return "", None
    if user:
        follower = _resolve_user(account, user, errors)
        return (follower.openid, follower) if follower else ("", None)
    if not touser:
        errors["touser"] = [_("Give the recipient: touser (an openid) or user (a username).")]
        return "", None
    if not _OPENID_RE.match(touser):
        errors["touser"] = [_("This is not an openid.")]
        return "", None
    return touser, Follower.objects.filter(account=account, openid=touser).first()


def request_fingerprint(
    *, touser: str, template_id: str, data: Mapping[str, Any], url: str, miniprogram: Mapping[str, str] | None
) -> str:
    """A hash of what was asked, to tell a repeat of a request from another request reusing its key."""
    canonical = json.dumps(
        {"touser": touser, "template_id": template_id, "data": data, "url": url, "miniprogram": miniprogram},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _replay(existing: Message, fingerprint: str) -> SendResult:
    if existing.request_fingerprint != fingerprint:
        raise IdempotencyConflict(existing)
    return SendResult(existing, created=False)


# --- Single messages ----------------------------------------------------------------------------------------------


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
    created_by: Any = None,
    trace_id: str = "",
) -> SendResult:
    """Accept one template message and queue it for delivery once the surrounding transaction commits.

    ``user`` (a username or a user) is resolved through the follower binding of ``account``.  The same
    ``client_msg_id`` with the same request returns the existing message and sends nothing; with a
    different request it raises :class:`IdempotencyConflict`.  When two identical requests race, the
    unique (account, client_msg_id) constraint decides and the loser returns the winner's message.
    A recipient known to have unfollowed gets a message that fails at once, without a WeChat call.
    """
    errors: dict[str, Any] = {}
    _check_account(account, errors)
    openid, follower = _resolve_recipient(account, touser, user, errors)
    template = _check_template(account, template_id, errors)
    normalized = _check_data(template, data, errors)
    mini = _check_link(url or "", miniprogram, errors)
    _check_client_msg_id(client_msg_id, errors)
    if errors:
        raise MessageRejected(errors)

    fingerprint = request_fingerprint(
        touser=openid, template_id=template_id, data=normalized, url=url or "", miniprogram=mini
    )
    if client_msg_id:
        existing = Message.objects.filter(account=account, client_msg_id=client_msg_id).first()
        if existing is not None:
            return _replay(existing, fingerprint)
    now = timezone.now()
    message = Message(
        account=account,
        template=template,
        template_id_sent=template_id,
        touser=openid,
        follower=follower,
        data=normalized,
        url=url or "",
        miniprogram=mini,
        client_msg_id=client_msg_id or generate_client_msg_id(),
        request_fingerprint=fingerprint,
        created_by=created_by if getattr(created_by, "pk", None) else None,
        trace_id=trace_id,
    )
    if follower is not None and not follower.subscribed:
        message.status = Message.Status.FAILED
        message.errmsg = UNSUBSCRIBED_REASON
        message.finished_at = now
    else:
        message.enqueued_at = now
    try:
        with transaction.atomic():
            message.save()
    except IntegrityError:
        existing = Message.objects.filter(account=account, client_msg_id=message.client_msg_id).first()
        if existing is None:
            raise
        return _replay(existing, fingerprint)
    with traced(trace_id or get_trace_id()):
        logger.info("Accepted message #%s to %s (%s)", message.pk, openid, message.status)
    if message.status == Message.Status.QUEUED:
        transaction.on_commit(partial(enqueue_delivery, [message.pk], trace_id))
    return SendResult(message, created=True)


# --- Campaigns ----------------------------------------------------------------------------------------------------


def _chunked(values: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(values)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _quote(names: list[str], total: int) -> str:
    shown = ", ".join(names[:_QUOTED_NAMES])
    if total > _QUOTED_NAMES:
        shown += _(" (and %(count)d more)") % {"count": total - _QUOTED_NAMES}
    return shown


def _campaign_client_msg_id(campaign: Campaign, key: str) -> str:
    """``c<campaign>-<key>``: unique per recipient of a campaign, so a duplicate recipient is inserted once."""
    candidate = f"c{campaign.pk}-{key}"
    if len(candidate) <= CLIENT_MSG_ID_MAX_LENGTH:
        return candidate
    return f"c{campaign.pk}-h{hashlib.sha256(key.encode('utf-8')).hexdigest()[:40]}"


def _campaign_message(campaign: Campaign, openid: str, follower_id: int | None, key: str, now: datetime) -> Message:
    message = Message(
        account_id=campaign.account_id,
        template_id=campaign.template_id,
        template_id_sent=campaign.template.template_id,
        touser=openid,
        follower_id=follower_id,
        data=None,
        client_msg_id=_campaign_client_msg_id(campaign, key),
        campaign=campaign,
        created_by_id=campaign.created_by_id,
        trace_id=campaign.trace_id,
        created_at=now,
        updated_at=now,
    )
    return message


def _mark_unsubscribed(message: Message, now: datetime) -> Message:
    message.status = Message.Status.FAILED
    message.errmsg = UNSUBSCRIBED_REASON
    message.finished_at = now
    return message


def _expand_openids(campaign: Campaign, openids: Iterable[str], errors: dict[str, Any], now: datetime) -> None:
    invalid: list[str] = []
    invalid_count = 0
    for chunk in _chunked(openids, EXPANSION_CHUNK_SIZE):
        known = {
            openid: (pk, subscribed)
            for pk, openid, subscribed in Follower.objects.filter(
                account_id=campaign.account_id, openid__in=chunk
            ).values_list("pk", "openid", "subscribed")
        }
        rows = []
        for openid in chunk:
            if not isinstance(openid, str) or not _OPENID_RE.match(openid):
                invalid_count += 1
                if len(invalid) < _QUOTED_NAMES:
                    invalid.append(str(openid)[:70])
                continue
            follower_id, subscribed = known.get(openid, (None, True))
            message = _campaign_message(campaign, openid, follower_id, openid, now)
            rows.append(message if subscribed else _mark_unsubscribed(message, now))
        if not invalid_count:
            Message.objects.bulk_create(rows, ignore_conflicts=True)
    if invalid_count:
        errors["recipients"] = [_("These are not openids: %(names)s.") % {"names": _quote(invalid, invalid_count)}]


def _expand_usernames(campaign: Campaign, usernames: Iterable[str], errors: dict[str, Any], now: datetime) -> None:
    unbound: list[str] = []
    unbound_count = 0
    for chunk in _chunked(usernames, EXPANSION_CHUNK_SIZE):
        chosen: dict[str, tuple[int, str, bool]] = {}
        for pk, openid, subscribed, username in (
            Follower.objects.filter(account_id=campaign.account_id, user__username__in=chunk)
            .order_by("user_id", "-subscribed", "-updated_at")
            .values_list("pk", "openid", "subscribed", "user__username")
        ):
            chosen.setdefault(username, (pk, openid, subscribed))
        rows = []
        for username in chunk:
            if username not in chosen:
                unbound_count += 1
                if len(unbound) < _QUOTED_NAMES:
                    unbound.append(str(username)[:150])
                continue
            follower_id, openid, subscribed = chosen[username]
            message = _campaign_message(campaign, openid, follower_id, f"f{follower_id}", now)
            rows.append(message if subscribed else _mark_unsubscribed(message, now))
        if not unbound_count:
            Message.objects.bulk_create(rows, ignore_conflicts=True)
    if unbound_count:
        errors["recipients"] = [
            _("These users have not bound their WeChat to this account: %(names)s.")
            % {"names": _quote(unbound, unbound_count)}
        ]


def _expand_all_subscribed(campaign: Campaign, now: datetime) -> None:
    """One INSERT … SELECT from the followers table: no rows travel through Python, on SQLite and PostgreSQL."""
    fields = {f.name: f for f in Message._meta.concrete_fields}
    adapted_now = connection.ops.adapt_datetimefield_value(now)
    # Field name → (SQL expression, parameters). Every concrete column but the id is spelled out, so a new
    # field without a value here fails loudly instead of silently missing its default.
    values: dict[str, tuple[str, list[Any]]] = {
        "account": ("%s", [campaign.account_id]),
        "template": ("%s", [campaign.template_id]),
        "template_id_sent": ("%s", [campaign.template.template_id]),
        "touser": ("f.openid", []),
        "follower": ("f.id", []),
        "data": ("NULL", []),
        "url": ("%s", [""]),
        "miniprogram": ("NULL", []),
        "client_msg_id": ("%s || CAST(f.id AS TEXT)", [f"c{campaign.pk}-f"]),
        "request_fingerprint": ("%s", [""]),
        "status": ("%s", [Message.Status.QUEUED.value]),
        "errcode": ("NULL", []),
        "errmsg": ("%s", [""]),
        "msgid": ("NULL", []),
        "attempts": ("0", []),
        "next_attempt_at": ("NULL", []),
        "enqueued_at": ("NULL", []),
        "lease_expires_at": ("NULL", []),
        "claim_token": ("%s", [""]),
        "campaign": ("%s", [campaign.pk]),
        "created_by": ("%s", [campaign.created_by_id]),
        "trace_id": ("%s", [campaign.trace_id]),
        "created_at": ("%s", [adapted_now]),
        "updated_at": ("%s", [adapted_now]),
        "sent_at": ("NULL", []),
        "finished_at": ("NULL", []),
    }
    missing = set(fields) - set(values) - {"id"}
    if missing:
        raise RuntimeError(f"INSERT … SELECT does not fill Message fields {sorted(missing)}")
    quote = connection.ops.quote_name
    columns = ", ".join(quote(fields[name].column) for name in values)
    expressions = ", ".join(sql for sql, _params in values.values())
    params = [param for _sql, field_params in values.values() for param in field_params]
    follower_table = quote(Follower._meta.db_table)
    sql = (
        f"INSERT INTO {quote(Message._meta.db_table)} ({columns}) "  # noqa: S608 -- names quoted, values bound
        f"SELECT {expressions} FROM {follower_table} f "
        f"WHERE f.{quote(Follower._meta.get_field('account').column)} = %s "
        f"AND f.{quote(Follower._meta.get_field('subscribed').column)} = %s "
        f"ORDER BY f.{quote(Follower._meta.pk.column)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, campaign.account_id, True])


def create_campaign(
    *,
    account: OfficialAccount,
    template_id: str,
    data: Any,
    recipients: RecipientSpec,
    url: str = "",
    miniprogram: Mapping[str, str] | None = None,
    name: str = "",
    created_by: Any = None,
    trace_id: str = "",
) -> Campaign:
    """Accept a bulk send: validate once, expand the recipients into queued messages, start delivery.

    Expansion streams the recipients in chunks with bulk inserts (every subscribed follower in a single
    INSERT … SELECT), so memory stays flat for 100,000 recipients.  Everything happens in one transaction:
    a rejected campaign leaves nothing behind, and delivery starts only after the commit.  Campaign
    messages keep ``data`` empty and send the campaign's data.
    """
    errors: dict[str, Any] = {}
    _check_account(account, errors)
    template = _check_template(account, template_id, errors)
    normalized = _check_data(template, data, errors)
    mini = _check_link(url or "", miniprogram, errors)
    if recipients.kind not in Campaign.RecipientKind.values:
        errors["recipients"] = [_("Give openids, usernames, or all subscribed followers.")]
    if errors:
        raise MessageRejected(errors)

    now = timezone.now()
    with transaction.atomic():
        campaign = Campaign.objects.create(
            account=account,
            template=template,
            name=name,
            data=normalized,
            url=url or "",
            miniprogram=mini,
            recipient_kind=recipients.kind,
            state=Campaign.State.EXPANDING,
            created_by=created_by if getattr(created_by, "pk", None) else None,
            trace_id=trace_id,
        )
        if recipients.kind == Campaign.RecipientKind.OPENIDS:
            _expand_openids(campaign, recipients.values, errors, now)
        elif recipients.kind == Campaign.RecipientKind.USERNAMES:
            _expand_usernames(campaign, recipients.values, errors, now)
        else:
            _expand_all_subscribed(campaign, now)
        count = Message.objects.filter(campaign=campaign).count()
        if not count and not errors:
            errors["recipients"] = [_("The campaign has no recipients.")]
        if errors:
            transaction.set_rollback(True)
            raise MessageRejected(errors)
        campaign.recipient_count = count
        campaign.state = Campaign.State.RUNNING
        campaign.save(update_fields=["recipient_count", "state"])
        transaction.on_commit(partial(enqueue_campaign, campaign.pk, trace_id))
    with traced(trace_id or get_trace_id()):
        logger.info("Accepted campaign #%s with %d recipient(s)", campaign.pk, count)
    return campaign


def finish_campaigns(campaign_ids: Iterable[int] | None = None) -> int:
    """Mark running campaigns with no queued or sending message left as done; returns how many."""
    unfinished = Message.objects.filter(
        campaign=OuterRef("pk"), status__in=[Message.Status.QUEUED, Message.Status.SENDING]
    )
    campaigns = Campaign.objects.filter(state=Campaign.State.RUNNING).exclude(Exists(unfinished))
    if campaign_ids is not None:
        campaigns = campaigns.filter(pk__in=list(campaign_ids))
    return campaigns.update(state=Campaign.State.DONE, finished_at=timezone.now())


def cancel_campaign(campaign: Campaign) -> int:
    """Stop a campaign: its queued messages fail as cancelled, those already sending finish; returns how many."""
    now = timezone.now()
    with transaction.atomic():
        changed = Campaign.objects.filter(
            pk=campaign.pk, state__in=[Campaign.State.EXPANDING, Campaign.State.RUNNING, Campaign.State.DONE]
        ).update(state=Campaign.State.CANCELLED, cancelled_at=now)
        cancelled = Message.objects.filter(campaign=campaign, status=Message.Status.QUEUED).update(
            status=Message.Status.FAILED, errcode=None, errmsg=CANCELLED_REASON, finished_at=now, updated_at=now
        )
    if changed:
        campaign.state, campaign.cancelled_at = Campaign.State.CANCELLED, now
    logger.info("Cancelled campaign #%s: %d queued message(s) will not be sent", campaign.pk, cancelled)
    return cancelled


def retry_failed(campaign: Campaign) -> int:
    """Queue a campaign's failed messages again (same client_msg_id); returns how many.

    A cancelled campaign stays cancelled: its failed messages are not retried.
    """
    if campaign.state == Campaign.State.CANCELLED:
        return 0
    now = timezone.now()
    with transaction.atomic():
        retried = Message.objects.filter(campaign=campaign, status=Message.Status.FAILED).update(
            status=Message.Status.QUEUED,
            attempts=0,
            errcode=None,
            errmsg="",
            next_attempt_at=None,
            enqueued_at=now,
            finished_at=None,
            updated_at=now,
        )
        if retried:
            Campaign.objects.filter(pk=campaign.pk).update(state=Campaign.State.RUNNING, finished_at=None)
            campaign.state, campaign.finished_at = Campaign.State.RUNNING, None
            transaction.on_commit(partial(enqueue_campaign, campaign.pk, campaign.trace_id))
    return retried


# --- Delivery receipts --------------------------------------------------------------------------------------------


def _normalise_status(wechat_status: str) -> str:
    return " ".join((wechat_status or "").split())


def _receipt_outcome(status: str) -> tuple[str, str]:
    """(message status, reason) for a TEMPLATESENDJOBFINISH status (``success``, ``failed:user block``, …)."""
    if status.lower() == "success":
        return Message.Status.DELIVERED, ""
    return Message.Status.FAILED, _("WeChat could not deliver it: %(status)s") % {"status": status}


def _apply_receipt(message_id: int, status: str, event_time: datetime | None) -> bool:
    """Move a sent message to delivered/failed; False if it was not waiting for a receipt (e.g. a duplicate)."""
    new_status, reason = _receipt_outcome(status)
    return bool(
        Message.objects.filter(pk=message_id, status=Message.Status.SENT).update(
            status=new_status,
            errmsg=reason[:512],
            finished_at=event_time or timezone.now(),
            updated_at=timezone.now(),
        )
    )


def _find_sent_message(account_id: int, msgid: int, openid: str) -> Message | None:
    candidates = Message.objects.filter(account_id=account_id, msgid=msgid)
    if openid:
        return candidates.filter(touser=openid).first() or candidates.first()
    return candidates.first()


def record_delivery_receipt(
    *,
    account: OfficialAccount,
    msgid: int,
    wechat_status: str,
    openid: str = "",
    event_time: datetime | None = None,
) -> DeliveryReceipt | Message:
    """Apply WeChat's ``TEMPLATESENDJOBFINISH`` report: the message becomes delivered, or failed with WeChat's status.

    The receipt can beat the sending worker, which stores ``msgid`` only after WeChat answered: then it
    is kept as a pending :class:`DeliveryReceipt` and applied when the msgid lands (or by the sweeper).
    MsgID 0 (reported when client_msg_id de-duplicated a send) can never match and is kept as unmatched.
    Returns the message when applied at once, else the stored receipt.
    """
    status = _normalise_status(wechat_status)[:64]
    msgid = int(msgid)
    if msgid:
        message = _find_sent_message(account.pk, msgid, openid)
        if message is not None:
            if _apply_receipt(message.pk, status, event_time):
                message.refresh_from_db()
            return message
    receipt = DeliveryReceipt.objects.create(
        account=account,
        msgid=msgid,
        openid=openid[:64],
        wechat_status=status,
        event_time=event_time,
        state=DeliveryReceipt.State.PENDING if msgid else DeliveryReceipt.State.UNMATCHED,
        resolved_at=None if msgid else timezone.now(),
    )
    if msgid:
        # The worker may have stored the msgid between our lookup and the insert: look once more.
        apply_pending_receipts(account.pk, [msgid])
        receipt.refresh_from_db()
    return receipt


def apply_pending_receipts(account_id: int, msgids: Sequence[int]) -> int:
    """Apply receipts that arrived before their messages' msgids were stored; returns how many."""
    if not msgids:
        return 0
    pending = list(
        DeliveryReceipt.objects.filter(
            account_id=account_id, msgid__in=list(msgids), state=DeliveryReceipt.State.PENDING
        )
    )
    applied = 0
    for receipt in pending:
        message = _find_sent_message(account_id, receipt.msgid, receipt.openid)
        if message is None:
            continue
        _apply_receipt(message.pk, receipt.wechat_status, receipt.event_time)
        applied += DeliveryReceipt.objects.filter(pk=receipt.pk, state=DeliveryReceipt.State.PENDING).update(
            state=DeliveryReceipt.State.APPLIED, message=message, resolved_at=timezone.now()
        )
    return applied


def resolve_stale_receipts(older_than: datetime) -> tuple[int, int]:
    """Apply pending receipts received before ``older_than`` whose message now has its msgid, mark the rest unmatched.

    Returns (applied, unmatched).
    """
    applied = unmatched = 0
    stale = DeliveryReceipt.objects.filter(state=DeliveryReceipt.State.PENDING, received_at__lt=older_than)
    for account_id, msgid in stale.values_list("account_id", "msgid").distinct().iterator():
        applied += apply_pending_receipts(account_id, [msgid])
    unmatched = stale.update(state=DeliveryReceipt.State.UNMATCHED, resolved_at=timezone.now())
    return applied, unmatched
