"""The raw rows of a campaign's messages: one INSERT … SELECT per thousand recipients, or one over the followers or
the consent ledger, with each recipient's channel, template, status and reason decided in SQL.

Kept apart from :mod:`messaging.services.expansion`, which decides what to insert when (lists in chunks, every
subscribed follower in transactions of its own, hand-over between tasks); this module only knows how a row is
written, so a new Message field is added here and nowhere else.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import QuerySet

from accounts.models import Follower
from messaging import events
from messaging.models import Campaign, Channel, Message
from messaging.reasons import (
    CONSENT_NO_CREDIT_REASON,
    CONSENT_REJECTED_REASON,
    NO_CHANNEL_REASON,
    UNSUBSCRIBED_REASON,
)
from messaging.services import duplicates
from messaging.services.checks import CLIENT_MSG_ID_MAX_LENGTH
from subscriptions.models import SubscriptionConsent
from templates_app.keywords import validate_template_data

CAMPAIGN_SALT_LENGTH = 8


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


def message_channels(campaign: Campaign) -> list[str]:
    """The channels the campaign's messages may have: its own, or both for ``auto``."""
    if campaign.channel == Channel.AUTO:
        return [Channel.TEMPLATE.value, Channel.SUBSCRIBE.value]
    return [campaign.channel]


def sent_template_id(campaign: Campaign, channel: str) -> str:
    """The template's id as its messages on ``channel`` send it: a ``template_id`` or a ``priTmplId``."""
    if channel == Channel.SUBSCRIBE:
        return campaign.subscription_template.pri_tmpl_id
    return campaign.template.template_id


def campaign_content_hash(campaign: Campaign, channel: str = Channel.TEMPLATE) -> str:
    """What the campaign's messages on ``channel`` say, for the duplicate window (messaging.services.duplicates).

    The same hash as a single message with the same content on that channel, so the window catches one after the
    other; a template campaign's hash is the one it always had: template, data, url, mini-program.
    """
    data, link = campaign.content_for(channel)
    return duplicates.content_hash(
        template_id=sent_template_id(campaign, channel),
        data=data,
        url=link,
        miniprogram=campaign.miniprogram,
        channel=channel,
    )


def channel_fits(campaign: Campaign, channel: str) -> bool:
    """Whether the campaign's content for ``channel`` passes that template's rules.

    An ``auto`` campaign is accepted when its data fits one of its two templates: the other channel then takes no
    recipient.  Judged again from what the campaign stores, so acceptance and a later expansion agree.
    """
    template = campaign.subscription_template if channel == Channel.SUBSCRIBE else campaign.template
    return template is not None and validate_template_data(template, campaign.content_for(channel)[0]).is_valid


def fail_duplicates(campaign: Campaign, messages: QuerySet[Message], now: datetime, *, record: bool = True) -> int:
    """Fail the campaign's just-added ``messages`` that repeat, for their recipient, a message of the same content in
    the account's duplicate window; returns how many.  Their ``message.failed`` events are written unless ``record``
    is False (the caller writes them with others in its transaction).  An ``auto`` campaign's two channels say two
    things: each is compared with its own content."""
    failed = 0
    for channel in message_channels(campaign):
        scoped = messages.filter(channel=channel) if campaign.channel == Channel.AUTO else messages
        found = duplicates.campaign_duplicates(
            scoped, account=campaign.account, content=campaign_content_hash(campaign, channel), now=now
        )
        if found is None:
            return 0
        changes = duplicates.duplicate_changes(now)
        failed += (
            events.update_recording(found, events.MESSAGE_FAILED, **changes) if record else found.update(**changes)
        )
    return failed


# Rows per INSERT statement (4 parameters each).
_ROWS_PER_INSERT = 1000
# Columns that differ between the recipients of a campaign; every other column is the same for all of them.
_PER_RECIPIENT_FIELDS = ("touser", "follower", "client_msg_id", "status")
# Columns that follow from the status: a recipient known to have left fails at once, with the reason.
_STATUS_DERIVED_FIELDS = ("errmsg", "finished_at")
# Subscribe and auto campaigns: the columns that follow from each recipient's route (its channel, or why it fails).
_CHANNEL_FIELDS = ("channel", "template", "subscription_template", "template_id_sent", "content_hash")
_ROUTED_FIELDS = (*_CHANNEL_FIELDS, "status", "errmsg", "finished_at")
# A recipient's route, as SQL literals of our own (never from a request): a channel, or why the message fails.
_ROUTE_TEMPLATE = "template"
_ROUTE_SUBSCRIBE = "subscribe"
_ROUTE_REASONS = {
    "rejected": CONSENT_REJECTED_REASON,
    "no_credit": CONSENT_NO_CREDIT_REASON,
    "no_channel": NO_CHANNEL_REASON,
}


class CampaignRows:
    """Raw inserts of a campaign's messages: the ORM's per-object work would dominate at 100,000 rows.

    The values shared by every recipient are bound once per statement and only four values travel per
    recipient, which keeps both Python and the driver's query building cheap.  Every concrete column but
    the id is spelled out, so a new Message field without a value here fails loudly instead of silently
    missing its default.

    A ``subscribe`` or ``auto`` campaign ("routed") joins each recipient to its row of the consent ledger in the
    same statement and picks its route there: for ``subscribe``, the subscription when the ledger allows a send,
    else a failure with the rejection or the missing credit as reason; for ``auto``, the template for a known
    subscribed follower (when the campaign's data fits the template), else the subscription when the ledger
    allows it (and the data fits), else a failure with ``NO_CHANNEL_REASON``.  The channel's columns follow from
    the route.  A template campaign's statement has neither the join nor the choice.
    """

    def __init__(self, campaign: Campaign, now: datetime) -> None:
        self.campaign = campaign
        self.routed = campaign.channel != Channel.TEMPLATE
        self.salt = secrets.token_hex(CAMPAIGN_SALT_LENGTH // 2)
        self.now = connection.ops.adapt_datetimefield_value(now)
        # A scheduled campaign's messages wait as scheduled for its send time (messaging.scheduling).
        send_at = connection.ops.adapt_datetimefield_value(campaign.send_at) if campaign.send_at else None
        self.waiting_status = Message.Status.SCHEDULED if send_at else Message.Status.QUEUED
        self.by_channel = {
            channel: {
                "channel": channel,
                "template": campaign.template_id if channel == Channel.TEMPLATE else None,
                "subscription_template": campaign.subscription_template_id if channel == Channel.SUBSCRIBE else None,
                "template_id_sent": sent_template_id(campaign, channel),
                "content_hash": campaign_content_hash(campaign, channel),
            }
            for channel in message_channels(campaign)
        }
        # Per campaign, not per recipient: whether its content passes each channel's template (auto only).
        self.fits = (
            {channel: channel_fits(campaign, channel) for channel in message_channels(campaign)}
            if campaign.channel == Channel.AUTO
            else {}
        )
        self.shared: dict[str, Any] = {
            "account": campaign.account_id,
            **({} if self.routed else self.by_channel[Channel.TEMPLATE]),
            "data": None,
            "url": "",
            "miniprogram": None,
            "request_fingerprint": "",
            "cap_day": None,
            "errcode": None,
            "msgid": None,
            "wechat_rid": "",
            "wechat_rid_at": None,
            "attempts": 0,
            "next_attempt_at": send_at,
            "send_at": send_at,
            "wait_reason": Message.WaitReason.SEND_AT.value if send_at else "",
            "respect_quiet_hours": False,
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
        if self.routed:
            names = (*self.shared, *_PER_RECIPIENT_FIELDS[:3], *_ROUTED_FIELDS)
        else:
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
        """One recipient: queued (scheduled), or failed at once if the follower is known to have left.

        A routed campaign's fourth value says whether the recipient is a known subscribed follower instead: its
        route, and so its status, is chosen in SQL.
        """
        client_msg_id = _campaign_client_msg_id(self.campaign, self.salt, key)
        if self.routed:
            return (openid, follower_id, client_msg_id, "t" if follower_id is not None and subscribed else "f")
        status = self.waiting_status if subscribed else Message.Status.FAILED
        return (openid, follower_id, client_msg_id, status.value)

    def insert(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert recipients, a thousand per statement; one listed twice has the same client_msg_id: inserted once."""
        if self.routed:
            for start in range(0, len(rows), _ROWS_PER_INSERT):
                statement_rows = rows[start : start + _ROWS_PER_INSERT]
                values = ", ".join(["(%s, %s, %s, %s)"] * len(statement_rows))
                self._insert_routed(
                    "SELECT v.column1 AS touser, CAST(v.column2 AS BIGINT) AS follower, "  # noqa: S608 -- values bound
                    f"v.column3 AS client_msg_id, v.column4 AS follows FROM (VALUES {values}) AS v",
                    [value for row in statement_rows for value in row],
                    " ON CONFLICT DO NOTHING",
                )
            return
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

    def insert_subscribed(self, *, after: int | None, through: int | None, accepted_at: datetime | None = None) -> int:
        """The account's subscribed followers with ``after < id <= through`` (an open bound when None) and, with
        ``accepted_at``, not subscribed since then, in one INSERT … SELECT from the followers table: no row travels
        through Python.  Returns how many it added."""
        quote = connection.ops.quote_name
        follower = Follower._meta
        pk = quote(follower.pk.column)
        bounds = ""
        bound_params: list[Any] = []
        for operator, bound in ((">", after), ("<=", through)):
            if bound is not None:
                bounds += f" AND f.{pk} {operator} %s"
                bound_params.append(bound)
        if accepted_at is not None:
            subscribed_at = f"f.{quote(follower.get_field('subscribed_at').column)}"
            bounds += f" AND ({subscribed_at} IS NULL OR {subscribed_at} <= %s)"
            bound_params.append(connection.ops.adapt_datetimefield_value(accepted_at))
        prefix = f"c{self.campaign.pk}-{self.salt}-f"
        where = (
            f"WHERE f.{quote(follower.get_field('account').column)} = %s "
            f"AND f.{quote(follower.get_field('subscribed').column)} = %s{bounds}"
        )
        if self.routed:
            return self._insert_routed(
                f"SELECT f.{quote(follower.get_field('openid').column)} AS touser, f.{pk} AS follower, "  # noqa: S608
                f"%s || CAST(f.{pk} AS TEXT) AS client_msg_id, 't' AS follows "
                f"FROM {quote(follower.db_table)} f {where}",
                [prefix, self.campaign.account_id, True, *bound_params],
                " ORDER BY r.follower",
            )
        # Every subscribed follower is queued (scheduled): the status is a literal of our own, not from a request.
        select, select_params = self._select(
            f"f.{quote(follower.get_field('openid').column)}",
            f"f.{pk}",
            f"%s || CAST(f.{pk} AS TEXT)",
            f"'{self.waiting_status.value}'",
        )
        # The client_msg_id prefix sits between the shared values and the CASE values: bind in that order.
        shared_count = len(self.shared)
        params = [
            *select_params[:shared_count],
            prefix,
            *select_params[shared_count:],
            self.campaign.account_id,
            True,
            *bound_params,
        ]
        sql = (
            f"INSERT INTO {self.table} ({self.columns}) "  # noqa: S608 -- names quoted, values bound
            f"SELECT {select} FROM {quote(follower.db_table)} f {where} "
            f"ORDER BY f.{pk}"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.rowcount

    def insert_credit_holders(self) -> int:
        """Everyone whose consent row of the campaign's subscription template allows a send now, follower or not,
        in one INSERT … SELECT from the ledger (keyed by the row's id).  Returns how many it added."""
        quote = connection.ops.quote_name
        consent, follower = SubscriptionConsent._meta, Follower._meta

        def ledger(name: str) -> str:
            return f"h.{quote(consent.get_field(name).column)}"

        def followers(name: str) -> str:
            return f"f.{quote(follower.get_field(name).column)}"

        return self._insert_routed(
            f"SELECT {ledger('openid')} AS touser, f.{quote(follower.pk.column)} AS follower, "  # noqa: S608
            f"%s || CAST(h.{quote(consent.pk.column)} AS TEXT) AS client_msg_id, "
            f"CASE WHEN {followers('subscribed')} THEN 't' ELSE 'f' END AS follows "
            f"FROM {quote(consent.db_table)} h LEFT JOIN {quote(follower.db_table)} f "
            f"ON {followers('account')} = {ledger('account')} AND {followers('openid')} = {ledger('openid')} "
            f"WHERE {ledger('account')} = %s AND {ledger('pri_tmpl_id')} = %s AND {_sendable_sql('h')}",
            [
                f"c{self.campaign.pk}-{self.salt}-s",
                self.campaign.account_id,
                self.campaign.subscription_template.pri_tmpl_id,
            ],
            " ORDER BY r.touser",
        )

    def _route(self) -> str:
        """The SQL CASE naming a recipient's route, over ``s.follows`` and its consent row ``c`` (see the class)."""
        sendable = _sendable_sql("c")
        if self.campaign.channel == Channel.AUTO:
            whens = []
            if self.fits[Channel.TEMPLATE]:
                whens.append(f"WHEN s.follows = 't' THEN '{_ROUTE_TEMPLATE}'")
            if self.fits[Channel.SUBSCRIBE]:
                whens.append(f"WHEN {sendable} THEN '{_ROUTE_SUBSCRIBE}'")
            return f"CASE {' '.join(whens)} ELSE 'no_channel' END" if whens else "'no_channel'"
        rejected = f"c.{connection.ops.quote_name(SubscriptionConsent._meta.get_field('rejected').column)}"
        return f"CASE WHEN {sendable} THEN '{_ROUTE_SUBSCRIBE}' WHEN {rejected} THEN 'rejected' ELSE 'no_credit' END"

    def _routed_select(self) -> tuple[str, list[Any]]:
        """The SELECT list of a routed insert over ``r`` (touser, follower, client_msg_id, route)."""
        expressions = [*["%s"] * len(self.shared), "r.touser", "r.follower", "r.client_msg_id"]
        params = list(self.shared.values())
        subscribe = self.by_channel[Channel.SUBSCRIBE]
        template = self.by_channel.get(Channel.TEMPLATE, subscribe)
        for name in _CHANNEL_FIELDS:
            if template[name] == subscribe[name]:
                expressions.append("%s")
                params.append(subscribe[name])
            else:
                expressions.append(f"CASE WHEN r.route = '{_ROUTE_TEMPLATE}' THEN %s ELSE %s END")
                params += [template[name], subscribe[name]]
        sent = f"r.route IN ('{_ROUTE_TEMPLATE}', '{_ROUTE_SUBSCRIBE}')"
        expressions.append(f"CASE WHEN {sent} THEN %s ELSE %s END")
        params += [self.waiting_status.value, Message.Status.FAILED.value]
        reasons = " ".join(f"WHEN '{route}' THEN %s" for route in _ROUTE_REASONS)
        expressions.append(f"CASE r.route {reasons} ELSE %s END")
        params += [*_ROUTE_REASONS.values(), ""]
        expressions.append(f"CASE WHEN {sent} THEN NULL ELSE %s END")
        params.append(self.now)
        return ", ".join(expressions), params

    def _insert_routed(self, source: str, source_params: list[Any], suffix: str) -> int:
        """Insert the recipients ``source`` selects (touser, follower, client_msg_id, follows), each joined to its
        consent row and routed; returns how many were added."""
        quote = connection.ops.quote_name
        consent = SubscriptionConsent._meta

        def ledger(name: str) -> str:
            return f"c.{quote(consent.get_field(name).column)}"

        select, select_params = self._routed_select()
        # "WHERE 1 = 1" lets SQLite tell an upsert clause from a join constraint.
        sql = (
            f"INSERT INTO {self.table} ({self.columns}) SELECT {select} FROM ("  # noqa: S608 -- names quoted, values bound
            f"SELECT s.touser AS touser, s.follower AS follower, s.client_msg_id AS client_msg_id, "
            f"{self._route()} AS route FROM ({source}) s LEFT JOIN {quote(consent.db_table)} c "
            f"ON {ledger('account')} = %s AND {ledger('pri_tmpl_id')} = %s AND {ledger('openid')} = s.touser"
            f") r WHERE 1 = 1{suffix}"
        )
        params = [
            *select_params,
            *source_params,
            self.campaign.account_id,
            self.campaign.subscription_template.pri_tmpl_id,
        ]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.rowcount


def _sendable_sql(alias: str) -> str:
    """``subscriptions.selectors.sendable()`` in SQL over the consent row ``alias`` (false when there is none)."""
    quote = connection.ops.quote_name
    consent = SubscriptionConsent._meta

    def column(name: str) -> str:
        return f"{alias}.{quote(consent.get_field(name).column)}"

    return f"(NOT {column('rejected')} AND ({column('credits')} > 0 OR {column('long_term')}))"
