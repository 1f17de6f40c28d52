"""Expanding a campaign's recipients into queued messages: raw bulk inserts, in chunks, so memory stays flat.

Lists of openids or usernames are expanded while the campaign is accepted; every subscribed follower is added after
acceptance by a task, a chunk per transaction (:func:`expand_all_subscribed`).  Recipients who already got the same
content within the account's duplicate window are failed as duplicates as they are added (:func:`fail_duplicates`).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import islice
from typing import Any

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import Follower
from accounts.selectors import followers_by_username
from messaging import dispatch, events, scheduling
from messaging.models import Campaign, Channel, Message
from messaging.reasons import UNSUBSCRIBED_REASON
from messaging.services import duplicates
from messaging.services.checks import CLIENT_MSG_ID_MAX_LENGTH, OPENID_RE

# Rows per INSERT and per follower lookup while expanding a campaign: big enough to be fast, small
# enough that memory stays flat however many recipients there are.
EXPANSION_CHUNK_SIZE = 2000
# Followers added per transaction to an "all subscribed" campaign: small enough that a chunk commits within a
# second or two and delivery starts on the first one, big enough that the per-chunk work does not count.
ALL_SUBSCRIBED_CHUNK_SIZE = 20_000
# An expansion task hands over to a fresh one after this long (django-q2 kills a task after 120 s).
EXPANSION_TASK_SECONDS = 60.0
# How many offending names an error about a recipient list quotes.
QUOTED_NAMES = 10
CAMPAIGN_SALT_LENGTH = 8

logger = logging.getLogger("wxnotify.messaging")


def _chunked(values: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(values)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _quote(names: list[str], total: int) -> str:
    shown = ", ".join(names[:QUOTED_NAMES])
    if total > QUOTED_NAMES:
        shown += _(" (and %(count)d more)") % {"count": total - QUOTED_NAMES}
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


def campaign_content_hash(campaign: Campaign) -> str:
    """What every message of the campaign says, for the duplicate window (messaging.services.duplicates)."""
    template_id = campaign.template.template_id
    return duplicates.content_hash(
        template_id=template_id, data=campaign.data, url=campaign.url, miniprogram=campaign.miniprogram
    )


def fail_duplicates(campaign: Campaign, messages: QuerySet[Message], now: datetime, *, record: bool = True) -> int:
    """Fail the campaign's just-added ``messages`` that repeat, for their recipient, a message of the same content in
    the account's duplicate window; returns how many.  Their ``message.failed`` events are written unless ``record``
    is False (the caller writes them with others in its transaction)."""
    found = duplicates.campaign_duplicates(
        messages, account=campaign.account, content=campaign_content_hash(campaign), now=now
    )
    if found is None:
        return 0
    changes = duplicates.duplicate_changes(now)
    return events.update_recording(found, events.MESSAGE_FAILED, **changes) if record else found.update(**changes)


# Rows per INSERT statement (4 parameters each).
_ROWS_PER_INSERT = 1000
# Columns that differ between the recipients of a campaign; every other column is the same for all of them.
_PER_RECIPIENT_FIELDS = ("touser", "follower", "client_msg_id", "status")
# Columns that follow from the status: a recipient known to have left fails at once, with the reason.
_STATUS_DERIVED_FIELDS = ("errmsg", "finished_at")


class CampaignRows:
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
        # A scheduled campaign's messages wait as scheduled for its send time (messaging.scheduling).
        send_at = connection.ops.adapt_datetimefield_value(campaign.send_at) if campaign.send_at else None
        self.waiting_status = Message.Status.SCHEDULED if send_at else Message.Status.QUEUED
        self.shared: dict[str, Any] = {
            "account": campaign.account_id,
            "channel": Channel.TEMPLATE.value,
            "template": campaign.template_id,
            "subscription_template": None,
            "template_id_sent": campaign.template.template_id,
            "data": None,
            "url": "",
            "miniprogram": None,
            "request_fingerprint": "",
            "content_hash": campaign_content_hash(campaign),
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
        """One recipient: queued (scheduled), or failed at once if the follower is known to have left."""
        status = self.waiting_status if subscribed else Message.Status.FAILED
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

    def insert_subscribed(self, *, after: int | None, through: int | None) -> int:
        """The account's subscribed followers with ``after < id <= through`` (an open bound when None), in one
        INSERT … SELECT from the followers table: no row travels through Python.  Returns how many it added."""
        quote = connection.ops.quote_name
        follower = Follower._meta
        pk = quote(follower.pk.column)
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
            f"c{self.campaign.pk}-{self.salt}-f",
            *select_params[shared_count:],
            self.campaign.account_id,
            True,
        ]
        bounds = ""
        for operator, bound in ((">", after), ("<=", through)):
            if bound is not None:
                bounds += f" AND f.{pk} {operator} %s"
                params.append(bound)
        sql = (
            f"INSERT INTO {self.table} ({self.columns}) "  # noqa: S608 -- names quoted, values bound
            f"SELECT {select} FROM {quote(follower.db_table)} f "
            f"WHERE f.{quote(follower.get_field('account').column)} = %s "
            f"AND f.{quote(follower.get_field('subscribed').column)} = %s{bounds} "
            f"ORDER BY f.{pk}"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.rowcount


def expand_openids(campaign: Campaign, openids: Iterable[str], errors: dict[str, Any], now: datetime) -> None:
    rows = CampaignRows(campaign, now)
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
            if not isinstance(openid, str) or not OPENID_RE.match(openid):
                invalid_count += 1
                if len(invalid) < QUOTED_NAMES:
                    invalid.append(str(openid)[:70])
                continue
            follower_id, subscribed = known.get(openid, (None, True))
            values.append(rows.row(openid, follower_id, openid, subscribed))
        if not invalid_count:
            rows.insert(values)
    if invalid_count:
        errors["recipients"] = [_("These are not openids: %(names)s.") % {"names": _quote(invalid, invalid_count)}]


def expand_usernames(campaign: Campaign, usernames: Iterable[str], errors: dict[str, Any], now: datetime) -> None:
    rows = CampaignRows(campaign, now)
    unbound: list[str] = []
    unbound_count = 0
    for chunk in _chunked(usernames, EXPANSION_CHUNK_SIZE):
        chosen = followers_by_username(campaign.account_id, chunk)
        values = []
        for username in chunk:
            if username not in chosen:
                unbound_count += 1
                if len(unbound) < QUOTED_NAMES:
                    unbound.append(str(username)[:150])
                continue
            follower = chosen[username]
            values.append(rows.row(follower.openid, follower.pk, f"f{follower.pk}", follower.subscribed))
        if not unbound_count:
            rows.insert(values)
    if unbound_count:
        errors["recipients"] = [
            _("These users have not bound their WeChat to this account: %(names)s.")
            % {"names": _quote(unbound, unbound_count)}
        ]


def subscribed_followers(account_id: int) -> int:
    """How many followers an "all subscribed" campaign of the account goes to, as of now."""
    return Follower.objects.filter(account_id=account_id, subscribed=True).count()


def _expand_chunk(campaign_id: int) -> tuple[bool, int]:
    """Add the next chunk of an expanding campaign's followers, in a transaction of its own.

    Returns (whether more chunks follow, messages added).  The campaign row is locked and says where the last
    chunk stopped, so two tasks expanding the same campaign take turns and add nobody twice, and a cancelled
    campaign (no longer expanding) gets nothing more.  The last chunk sets the recipient count to what was
    added and lets the campaign run.
    """
    with transaction.atomic():
        campaign = (
            Campaign.objects.select_for_update()
            .select_related("template")
            .filter(pk=campaign_id, state=Campaign.State.EXPANDING)
            .first()
        )
        if campaign is None:
            return False, 0
        after = campaign.expanded_through
        remaining = Follower.objects.filter(account_id=campaign.account_id, subscribed=True)
        if after is not None:
            remaining = remaining.filter(pk__gt=after)
        last = ALL_SUBSCRIBED_CHUNK_SIZE
        bound = list(remaining.order_by("pk").values_list("pk", flat=True)[last - 1 : last])
        through = bound[0] if bound else None
        now = timezone.now()
        added = CampaignRows(campaign, now).insert_subscribed(after=after, through=through)
        chunk = Message.objects.filter(campaign_id=campaign_id, follower_id__gt=after or 0)
        if through is not None:
            chunk = chunk.filter(follower_id__lte=through)
        fail_duplicates(campaign, chunk, now)
        if through is not None:
            Campaign.objects.filter(pk=campaign_id).update(expanded_through=through)
            return True, added
        scheduled = campaign.send_at is not None
        Campaign.objects.filter(pk=campaign_id).update(
            state=Campaign.State.SCHEDULED if scheduled else Campaign.State.RUNNING,
            recipient_count=Message.objects.filter(campaign_id=campaign_id).count(),
        )
        if scheduled:
            send_at = campaign.send_at
            transaction.on_commit(lambda: scheduling.wake_before(send_at, timezone.now()))
        else:
            transaction.on_commit(lambda: dispatch.enqueue_campaign(campaign_id, campaign.trace_id))
        return False, added


def expand_all_subscribed(campaign_id: int, *, trace_id: str = "") -> int:
    """Add a queued message for every subscribed follower to an expanding campaign, chunk by chunk; return how
    many this call added.

    ``create_campaign`` accepts such a campaign without writing its messages: one INSERT … SELECT of 1,000,000
    rows into the message table and its indexes took minutes (bench/RESULTS.md), all inside the request.  Here
    followers are taken in id order, ``ALL_SUBSCRIBED_CHUNK_SIZE`` per transaction (see ``_expand_chunk``), and
    delivery starts as soon as the first chunk has committed: a chunk after which no task works through the
    campaign (its engine key is down) starts them, so messages never wait for the whole expansion.  After
    ``EXPANSION_TASK_SECONDS`` the rest is handed to a fresh task; the sweeper restarts an expansion whose task
    was lost.
    """
    deadline = time.monotonic() + EXPANSION_TASK_SECONDS
    # A scheduled campaign's messages wait for its send time: no delivery task starts while it expands.
    scheduled = Campaign.objects.filter(pk=campaign_id, send_at__isnull=False).exists()
    total = 0
    more = True
    while more:
        cache.set(dispatch.campaign_expansion_key(campaign_id), 1, timeout=dispatch.EXPANSION_KEY_SECONDS)
        more, added = _expand_chunk(campaign_id)
        total += added
        engine_key = dispatch.campaign_engine_key(campaign_id)
        if more and not scheduled and cache.add(engine_key, 1, timeout=dispatch.CAMPAIGN_ENGINE_KEY_SECONDS):
            dispatch.enqueue_campaign(campaign_id, trace_id)
        if more and time.monotonic() > deadline:
            dispatch.enqueue_expansion(campaign_id, trace_id)
            break
    cache.delete(dispatch.campaign_expansion_key(campaign_id))
    logger.info("Campaign #%s: %d recipient(s) added%s", campaign_id, total, "; more to come" if more else "")
    return total
