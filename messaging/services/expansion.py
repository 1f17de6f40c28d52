"""Expanding a campaign's recipients into queued messages: raw bulk inserts, in chunks, so memory stays flat.

Lists of openids or usernames, and everyone holding a subscription, are expanded while the campaign is accepted;
every subscribed follower is added after acceptance by a task, a chunk per transaction (:func:`expand_all_subscribed`),
and only a bounded number of messages ahead of delivery (see ``EXPANSION_AHEAD``).
Recipients who already got the same content within the account's duplicate window are failed as duplicates as they
are added (:func:`messaging.services.campaign_rows.fail_duplicates`).

How a row is written lives in :mod:`messaging.services.campaign_rows`: campaigns of channel ``subscribe`` or
``auto`` choose each recipient's channel in the INSERT itself, joined to the consent ledger; template campaigns keep
their plain insert, with no join and no per-row choice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import islice
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import Follower
from accounts.selectors import followers_by_username
from messaging import dispatch, events, scheduling
from messaging.models import Campaign, Channel, Message
from messaging.services.campaign_rows import CampaignRows, fail_duplicates
from messaging.services.checks import OPENID_RE

# Rows per INSERT and per follower lookup while expanding a campaign: big enough to be fast, small
# enough that memory stays flat however many recipients there are.
EXPANSION_CHUNK_SIZE = 2000
# Followers added per transaction to an "all subscribed" campaign: small enough that a chunk commits within a
# second or two and delivery starts on the first one, big enough that the per-chunk work does not count.
ALL_SUBSCRIBED_CHUNK_SIZE = 20_000
# An expansion task hands over to a fresh one after this long (django-q2 kills a task after 120 s).
EXPANSION_TASK_SECONDS = 60.0
# How many of a running campaign's messages the expansion keeps queued ahead of its delivery: it stops once that
# many wait, and delivery restarts it when its claims reach the message that many before the newest.  Writing all
# 1,000,000 rows while the first messages went out took most of PostgreSQL's CPU from the sends
# (bench/RESULTS.md, "The million: paced expansion"); two chunks ahead are a minute or more of sends at 500/s.
EXPANSION_AHEAD = 2 * ALL_SUBSCRIBED_CHUNK_SIZE
# How long the point where delivery restarts a paused expansion is kept (the sweeper restarts it in any case).
EXPANSION_RESUME_KEY_SECONDS = 3600
# How many offending names an error about a recipient list quotes.
QUOTED_NAMES = 10

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


def expand_credit_holders(campaign: Campaign, now: datetime) -> None:
    """Add everyone holding the campaign's subscription now (a credit or a long-term grant), follower or not."""
    CampaignRows(campaign, now).insert_credit_holders()


def subscribed_followers(account_id: int) -> int:
    """How many followers an "all subscribed" campaign of the account goes to, as of now."""
    return Follower.objects.filter(account_id=account_id, subscribed=True).count()


def latest_follower_id() -> int | None:
    """The highest follower id now, of any account (the primary key's last entry): a follower who arrives later gets
    a higher one, so it bounds the recipients of an "all subscribed" campaign accepted now."""
    return Follower.objects.order_by("-pk").values_list("pk", flat=True).first()


def _recipients(campaign: Campaign) -> QuerySet[Follower]:
    """The followers an "all subscribed" campaign goes to: subscribed now, and already subscribed at acceptance
    (with an id up to ``recipients_through``, and not followed again since), so a paced expansion adds the
    followers of the moment of acceptance, not of the moment each chunk is written."""
    followers = Follower.objects.filter(account_id=campaign.account_id, subscribed=True)
    if campaign.recipients_through is not None:
        followers = followers.filter(pk__lte=campaign.recipients_through).exclude(subscribed_at__gt=campaign.created_at)
    return followers


def _ahead_of_delivery(campaign_id: int) -> int | None:
    """With ``EXPANSION_AHEAD`` or more of the campaign's messages queued, the id of the one that many before the
    newest (read backwards on the partial index of queued campaign messages); None while fewer wait."""
    resume_at = list(
        Message.objects.filter(campaign_id=campaign_id, status=Message.Status.QUEUED)
        .order_by("-pk")
        .values_list("pk", flat=True)[EXPANSION_AHEAD - 1 : EXPANSION_AHEAD]
    )
    return resume_at[0] if resume_at else None


def _expand_chunk(campaign_id: int) -> tuple[bool, int]:
    """Add the next chunk of an expanding campaign's followers, in a transaction of its own.

    Returns (whether more chunks follow, messages added).  The campaign row is locked and says where the last
    chunk stopped, so two tasks expanding the same campaign take turns and add nobody twice, and a cancelled
    campaign (no longer expanding) gets nothing more.  The last chunk sets the recipient count to what was
    added and lets the campaign run.
    """
    with transaction.atomic():
        campaign = (
            # Only the campaign's row: its templates are nullable, the outer joins' side cannot be locked on PostgreSQL.
            Campaign.objects.select_for_update(of=("self",))
            .select_related("template", "subscription_template")
            .filter(pk=campaign_id, state=Campaign.State.EXPANDING)
            .first()
        )
        if campaign is None:
            return False, 0
        after = campaign.expanded_through
        remaining = _recipients(campaign)
        if after is not None:
            remaining = remaining.filter(pk__gt=after)
        last = ALL_SUBSCRIBED_CHUNK_SIZE
        bound = list(remaining.order_by("pk").values_list("pk", flat=True)[last - 1 : last])
        through = bound[0] if bound else campaign.recipients_through
        now = timezone.now()
        added = CampaignRows(campaign, now).insert_subscribed(
            after=after, through=through, accepted_at=campaign.created_at if campaign.recipients_through else None
        )
        chunk = Message.objects.filter(campaign_id=campaign_id, follower_id__gt=after or 0)
        if through is not None:
            chunk = chunk.filter(follower_id__lte=through)
        if campaign.channel != Channel.TEMPLATE and events.wanted(events.MESSAGE_FAILED):
            # Recipients without consent (or without a channel) were inserted failed.
            events.record_messages(events.MESSAGE_FAILED, chunk.filter(status=Message.Status.FAILED))
        fail_duplicates(campaign, chunk, now)
        if bound:
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
    """Add a queued message for every subscribed follower to an expanding campaign, chunk by chunk, keeping
    ``EXPANSION_AHEAD`` of them ahead of delivery; return how many this call added.

    ``create_campaign`` accepts such a campaign without writing its messages: one INSERT … SELECT of 1,000,000
    rows into the message table and its indexes took minutes (bench/RESULTS.md), all inside the request.  Here
    followers are taken in id order, ``ALL_SUBSCRIBED_CHUNK_SIZE`` per transaction (see ``_expand_chunk``), and
    delivery starts as soon as the first chunk has committed: a chunk after which no task works through the
    campaign (its engine key is down) starts them, so messages never wait for the whole expansion.

    Once ``EXPANSION_AHEAD`` messages wait, the task stops and leaves, in the cache, the id of the message whose
    claim should bring it back (``dispatch.campaign_expansion_resume_key``): the delivery task that claims it
    enqueues the next expansion (``messaging.work.CampaignWork``), so the rows are written as they are needed,
    over the whole campaign.  Who the recipients are was fixed at acceptance (``_recipients``), so this pace does
    not change them.  A scheduled campaign is expanded whole (its messages wait for their time).  After
    ``EXPANSION_TASK_SECONDS`` the rest is handed to a fresh task; the sweeper restarts an expansion whose task
    was lost and one whose restart was (a restart while enough messages wait only leaves the resume point again).
    """
    deadline = time.monotonic() + EXPANSION_TASK_SECONDS
    found = Campaign.objects.filter(pk=campaign_id).values_list("state", "send_at").first()
    if found is None or found[0] != Campaign.State.EXPANDING:
        return 0
    # A scheduled campaign's messages wait for its send time: no delivery task starts while it expands.
    scheduled = found[1] is not None
    total = 0
    more = True
    paused = False
    while more:
        resume_at = None if scheduled else _ahead_of_delivery(campaign_id)
        if resume_at is not None:
            cache.set(
                dispatch.campaign_expansion_resume_key(campaign_id), resume_at, timeout=EXPANSION_RESUME_KEY_SECONDS
            )
            paused = True
            break
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
    if not more:
        # Done (or cancelled): a resume point left by an earlier pause would only start a task with nothing to do.
        cache.delete(dispatch.campaign_expansion_resume_key(campaign_id))
    if paused:
        logger.info("Campaign #%s: %d recipient(s) added; more once delivery has caught up", campaign_id, total)
    else:
        logger.info("Campaign #%s: %d recipient(s) added%s", campaign_id, total, "; more to come" if more else "")
    return total
