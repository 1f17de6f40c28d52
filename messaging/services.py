"""Actions of the send pipeline: accept messages and campaigns, cancel, retry, apply delivery receipts.

Accepting only writes rows and, once the transaction has committed, tells the workers there is work
(:mod:`messaging.dispatch`): a campaign's id, or for single messages a shared signal that many requests coalesce
into one delivery task.  The rows are the source of truth: if the broker loses the task (the Redis broker never
re-delivers), the sweeper (:mod:`messaging.sweeper`) finds the due rows again, and the ``client_msg_id`` every
attempt carries lets WeChat drop a resend.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from itertools import islice
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import Follower, OfficialAccount
from messaging import dispatch
from messaging.models import Campaign, DeliveryReceipt, Message
from templates_app.keywords import validate_template_data
from templates_app.models import MessageTemplate
from templates_app.selectors import get_active_template
from wxnotify.memo import forget_lookups
from wxnotify.tracing import get_trace_id, traced
from wxnotify.wechat.errors import OUTCOME_UNKNOWN_ERRCODE

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
# client_msg_ids of campaign messages: "c<campaign id>-" and a per-campaign secret (see _campaign_client_msg_id).
# Callers may not use the prefix, so no single send can take a campaign recipient's key beforehand.
CAMPAIGN_KEY_RE = re.compile(r"^c[0-9]+-")
CAMPAIGN_SALT_LENGTH = 8

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
    if client_msg_id is None:
        return
    if not _CLIENT_MSG_ID_RE.match(client_msg_id):
        errors["client_msg_id"] = [
            _("Use 1 to %(max)d printable ASCII characters without spaces.") % {"max": CLIENT_MSG_ID_MAX_LENGTH}
        ]
    elif CAMPAIGN_KEY_RE.match(client_msg_id):
        errors["client_msg_id"] = [_("client_msg_ids that start with “c”, digits and “-” are kept for campaigns.")]


def _resolve_user(account: OfficialAccount, user: Any, errors: dict[str, Any]) -> Follower | None:
    username = user.get_username() if hasattr(user, "get_username") else str(user)
    follower = (
        Follower.objects.filter(account=account, user__username=username).order_by("-subscribed", "-updated_at").first()
    )
    if follower is None:
        # One answer whether or not the username exists: the API must not tell callers which usernames there are.
        errors["user"] = [_("No follower of this account is bound to this user.")]
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
    # At most one row (unique per account); order_by() spares the join the model's default ordering would add.
    # A send only links the message to the follower and checks the subscription: the other columns stay unread.
    follower = Follower.objects.filter(account=account, openid=touser).only("id", "subscribed").order_by().first()
    return touser, follower


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


def _vanished_reference() -> MessageRejected:
    """The answer when an INSERT's foreign key fails: a row the request refers to (account, template, follower,
    sender) was deleted after it was looked up, maybe by another process whose change this process's look-up memo
    has not seen yet.  Forgetting the memo makes a repeated request find out exactly what is gone."""
    forget_lookups()
    changed = _("The account, template or recipient changed while this message was being accepted; send it again.")
    return MessageRejected({NON_FIELD_ERRORS: [changed]})


def _insert(message: Message) -> None:
    """Save a new message; a unique-constraint clash must leave the caller's transaction usable.

    Inside a transaction that takes a savepoint.  In autocommit (an API request) the INSERT is a transaction
    of its own, and BEGIN/COMMIT around it would only add two round trips to every request.
    """
    if transaction.get_connection().in_atomic_block:
        with transaction.atomic():
            message.save()
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
    created_by: Any = None,
    trace_id: str = "",
) -> SendResult:
    """Accept one template message and queue it for delivery once the surrounding transaction commits.

    ``user`` (a username or a user) is resolved through the follower binding of ``account``.  The same
    ``client_msg_id`` with the same request returns the existing message and sends nothing; with a
    different request it raises :class:`IdempotencyConflict`.  When two identical requests race, the
    unique (account, client_msg_id) constraint decides and the loser returns the winner's message.
    A recipient known to have unfollowed gets a message that fails at once, without a WeChat call.
    Without ``trace_id`` the current one (e.g. the request's, see :mod:`wxnotify.tracing`) is stored.
    """
    trace_id = trace_id or get_trace_id()
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
    # A repeated client_msg_id is found by the unique constraint rather than a look-up first: repeats are
    # rare, and every other request saves a query.
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
    try:
        _insert(message)
    except IntegrityError:
        existing = Message.objects.filter(account=account, client_msg_id=message.client_msg_id).first()
        if existing is None:
            raise _vanished_reference() from None
        return _replay(existing, fingerprint)
    with traced(trace_id):
        logger.info("Accepted message #%s to %s (%s)", message.pk, openid, message.status)
    if message.status == Message.Status.QUEUED:
        transaction.on_commit(dispatch.request_singles_delivery)
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


def _campaign_client_msg_id(campaign: Campaign, salt: str, key: str) -> str:
    """``c<campaign>-<salt>-<key>``: unique per recipient of a campaign, so a duplicate recipient is inserted once.

    Callers cannot use the ``c<digits>-`` prefix, and the random per-campaign ``salt`` keeps even messages
    accepted before that rule from holding a campaign recipient's key: a campaign never loses a recipient to a
    clash.  Keys too long for WeChat's 64 characters are hashed.
    """
    candidate = f"c{campaign.pk}-{salt}-{key}"
    if len(candidate) <= CLIENT_MSG_ID_MAX_LENGTH:
        return candidate
    return f"c{campaign.pk}-{salt}-h{hashlib.sha256(key.encode('utf-8')).hexdigest()[:40]}"


# Rows per INSERT statement (4 parameters each).
_ROWS_PER_INSERT = 1000
# Columns that differ between the recipients of a campaign; every other column is the same for all of them.
_PER_RECIPIENT_FIELDS = ("touser", "follower", "client_msg_id", "status")
# Columns that follow from the status: a recipient known to have left fails at once, with the reason.
_STATUS_DERIVED_FIELDS = ("errmsg", "finished_at")


class _CampaignRows:
    """Raw inserts of a campaign's messages: the ORM's per-object work would dominate at 100,000 rows.

    The values shared by every recipient are bound once per statement and only four values travel per
    recipient, which keeps both Python and the driver's query building cheap.  Every concrete column but
    the id is spelled out, so a new Message field without a value here fails loudly instead of silently
    missing its default.
    """

    def __init__(self, campaign: Campaign, now: datetime) -> None:
        self.campaign = campaign
        self.salt = secrets.token_hex(CAMPAIGN_SALT_LENGTH // 2)
        self.now = connection.ops.adapt_datetimefield_value(now)
        self.shared: dict[str, Any] = {
            "account": campaign.account_id,
            "template": campaign.template_id,
            "template_id_sent": campaign.template.template_id,
            "data": None,
            "url": "",
            "miniprogram": None,
            "request_fingerprint": "",
            "errcode": None,
            "msgid": None,
            "attempts": 0,
            "next_attempt_at": None,
            "attempted_at": None,
            "outcome_unknown_since": None,
            "lease_expires_at": None,
            "claim_token": "",
            "campaign": campaign.pk,
            "created_by": campaign.created_by_id,
            "trace_id": campaign.trace_id,
            "created_at": self.now,
            "updated_at": self.now,
            "sent_at": None,
        }
        names = (*self.shared, *_PER_RECIPIENT_FIELDS, *_STATUS_DERIVED_FIELDS)
        fields = {field.name: field for field in Message._meta.concrete_fields if not field.primary_key}
        missing = set(fields) - set(names)
        if missing:
            raise RuntimeError(f"campaign expansion does not fill Message fields {sorted(missing)}")
        quote = connection.ops.quote_name
        self.table = quote(Message._meta.db_table)
        self.columns = ", ".join(quote(fields[name].column) for name in names)

    def _select(self, touser: str, follower: str, client_msg_id: str, status: str) -> tuple[str, list[Any]]:
        """The SELECT list over a source of recipients (SQL expressions for the per-recipient columns)."""
        failed = Message.Status.FAILED.value
        expressions = [
            *["%s"] * len(self.shared),
            touser,
            follower,
            client_msg_id,
            status,
            f"CASE WHEN {status} = %s THEN %s ELSE %s END",
            f"CASE WHEN {status} = %s THEN %s ELSE NULL END",
        ]
        params = [*self.shared.values(), failed, UNSUBSCRIBED_REASON, "", failed, self.now]
        return ", ".join(expressions), params

    def row(self, openid: str, follower_id: int | None, key: str, subscribed: bool) -> tuple[Any, ...]:
        """One recipient: queued, or failed at once if the follower is known to have left."""
        status = Message.Status.QUEUED if subscribed else Message.Status.FAILED
        return (openid, follower_id, _campaign_client_msg_id(self.campaign, self.salt, key), status.value)

    def insert(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert recipients, a thousand per statement; one listed twice has the same client_msg_id: inserted once."""
        select, select_params = self._select("v.column1", "CAST(v.column2 AS BIGINT)", "v.column3", "v.column4")
        with connection.cursor() as cursor:
            for start in range(0, len(rows), _ROWS_PER_INSERT):
                statement_rows = rows[start : start + _ROWS_PER_INSERT]
                values = ", ".join(["(%s, %s, %s, %s)"] * len(statement_rows))
                # "WHERE 1 = 1" lets SQLite tell the upsert clause from a join constraint.
                cursor.execute(
                    f"INSERT INTO {self.table} ({self.columns}) SELECT {select} "  # noqa: S608 -- values bound
                    f"FROM (VALUES {values}) AS v WHERE 1 = 1 ON CONFLICT DO NOTHING",
                    [*select_params, *(value for row in statement_rows for value in row)],
                )

    def insert_all_subscribed(self) -> None:
        """One INSERT … SELECT from the followers table: no row travels through Python."""
        quote = connection.ops.quote_name
        follower = Follower._meta
        pk = quote(follower.pk.column)
        # Every subscribed follower is queued: the status is a literal of our own, not a value from a request.
        select, select_params = self._select(
            f"f.{quote(follower.get_field('openid').column)}",
            f"f.{pk}",
            f"%s || CAST(f.{pk} AS TEXT)",
            f"'{Message.Status.QUEUED.value}'",
        )
        # The client_msg_id prefix sits between the shared values and the CASE values: bind in that order.
        shared_count = len(self.shared)
        params = [
            *select_params[:shared_count],
            f"c{self.campaign.pk}-{self.salt}-f",
            *select_params[shared_count:],
            self.campaign.account_id,
            True,
        ]
        sql = (
            f"INSERT INTO {self.table} ({self.columns}) "  # noqa: S608 -- names quoted, values bound
            f"SELECT {select} FROM {quote(follower.db_table)} f "
            f"WHERE f.{quote(follower.get_field('account').column)} = %s "
            f"AND f.{quote(follower.get_field('subscribed').column)} = %s "
            f"ORDER BY f.{pk}"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


def _expand_openids(campaign: Campaign, openids: Iterable[str], errors: dict[str, Any], now: datetime) -> None:
    rows = _CampaignRows(campaign, now)
    invalid: list[str] = []
    invalid_count = 0
    for chunk in _chunked(openids, EXPANSION_CHUNK_SIZE):
        known = {
            openid: (pk, subscribed)
            for pk, openid, subscribed in Follower.objects.filter(
                account_id=campaign.account_id, openid__in=chunk
            ).values_list("pk", "openid", "subscribed")
        }
        values = []
        for openid in chunk:
            if not isinstance(openid, str) or not _OPENID_RE.match(openid):
                invalid_count += 1
                if len(invalid) < _QUOTED_NAMES:
                    invalid.append(str(openid)[:70])
                continue
            follower_id, subscribed = known.get(openid, (None, True))
            values.append(rows.row(openid, follower_id, openid, subscribed))
        if not invalid_count:
            rows.insert(values)
    if invalid_count:
        errors["recipients"] = [_("These are not openids: %(names)s.") % {"names": _quote(invalid, invalid_count)}]


def _expand_usernames(campaign: Campaign, usernames: Iterable[str], errors: dict[str, Any], now: datetime) -> None:
    rows = _CampaignRows(campaign, now)
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
        values = []
        for username in chunk:
            if username not in chosen:
                unbound_count += 1
                if len(unbound) < _QUOTED_NAMES:
                    unbound.append(str(username)[:150])
                continue
            follower_id, openid, subscribed = chosen[username]
            values.append(rows.row(openid, follower_id, f"f{follower_id}", subscribed))
        if not unbound_count:
            rows.insert(values)
    if unbound_count:
        errors["recipients"] = [
            _("These users have not bound their WeChat to this account: %(names)s.")
            % {"names": _quote(unbound, unbound_count)}
        ]


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
    trace_id = trace_id or get_trace_id()
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
    try:
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
                _CampaignRows(campaign, now).insert_all_subscribed()
            count = Message.objects.filter(campaign=campaign).count()
            if not count and not errors:
                errors["recipients"] = [_("The campaign has no recipients.")]
            if errors:
                transaction.set_rollback(True)
                raise MessageRejected(errors)
            campaign.recipient_count = count
            campaign.state = Campaign.State.RUNNING
            campaign.save(update_fields=["recipient_count", "state"])
            transaction.on_commit(partial(dispatch.enqueue_campaign, campaign.pk, trace_id))
    except IntegrityError:
        raise _vanished_reference() from None
    with traced(trace_id):
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


@dataclass(frozen=True)
class RetryResult:
    """What :func:`retry_failed` did: messages queued again, and failed ones left alone because they may have been
    delivered (their outcome is unknown; retry them only with ``include_unknown``)."""

    retried: int
    left_unknown: int


def retry_failed(campaign: Campaign, *, include_unknown: bool = False) -> RetryResult:
    """Queue a campaign's failed messages again (same client_msg_id).

    A cancelled campaign stays cancelled: its failed messages are not retried.  Messages whose outcome is unknown
    (errcode -9001: WeChat may have delivered them, and its de-duplication of their client_msg_id has lapsed) are
    left alone unless ``include_unknown``: retrying them may reach the user twice.
    """
    failed = Message.objects.filter(campaign=campaign, status=Message.Status.FAILED)
    unknown = failed.filter(errcode=OUTCOME_UNKNOWN_ERRCODE)
    if campaign.state == Campaign.State.CANCELLED:
        return RetryResult(retried=0, left_unknown=0)
    if not include_unknown:
        failed = failed.exclude(errcode=OUTCOME_UNKNOWN_ERRCODE)
    now = timezone.now()
    with transaction.atomic():
        retried = failed.update(
            status=Message.Status.QUEUED,
            attempts=0,
            errcode=None,
            errmsg="",
            next_attempt_at=None,
            outcome_unknown_since=None,
            finished_at=None,
            updated_at=now,
        )
        left_unknown = 0 if include_unknown else unknown.count()
        if retried:
            Campaign.objects.filter(pk=campaign.pk).update(state=Campaign.State.RUNNING, finished_at=None)
            campaign.state, campaign.finished_at = Campaign.State.RUNNING, None
            transaction.on_commit(partial(dispatch.enqueue_campaign, campaign.pk, campaign.trace_id))
    return RetryResult(retried=retried, left_unknown=left_unknown)


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
    """Apply receipts that arrived before their messages' msgids were stored; returns how many.

    Receipts already given up as unmatched are included: a msgid that lands very late (a worker stalled
    beyond the match window) still finds its receipt, so no report from WeChat is ever lost.
    """
    if not msgids:
        return 0
    waiting = (DeliveryReceipt.State.PENDING, DeliveryReceipt.State.UNMATCHED)
    receipts = list(DeliveryReceipt.objects.filter(account_id=account_id, msgid__in=list(msgids), state__in=waiting))
    applied = 0
    for receipt in receipts:
        message = _find_sent_message(account_id, receipt.msgid, receipt.openid)
        if message is None:
            continue
        _apply_receipt(message.pk, receipt.wechat_status, receipt.event_time)
        applied += DeliveryReceipt.objects.filter(pk=receipt.pk, state__in=waiting).update(
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
