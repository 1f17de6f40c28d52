"""Queries behind the console's recipient picker: follower search and "how many will this reach" (and how many of
them hold the subscription)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from django.db.models import Q, QuerySet

from accounts.models import Follower, OfficialAccount
from accounts.selectors import BoundFollower, followers_by_username
from messaging.models import Campaign
from subscriptions.selectors import (
    count_subscribed_followers_with_credit,
    count_with_credit,
    holding_credit,
    openids_with_credit,
)
from templates_app.models import SubscriptionTemplate

SEARCH_LIMIT = 20
# Up to this many listed recipients, the count says of each whether they hold the subscription.
CREDITS_LISTED = 20
# Entries per follower lookup: SQLite caps the parameters of one statement.
LOOKUP_CHUNK_SIZE = 2000
# How many problem entries a count answer quotes; the count itself covers every entry.
QUOTED_PROBLEMS = 10
# People paste lists from spreadsheets and chats: any whitespace, comma or semicolon (also the full-width ones).
_LIST_SEPARATORS = re.compile(r"[\s,;，；、]+")


def parse_recipient_list(text: str) -> list[str]:
    """The entries of a pasted list, in order, each once."""
    return list(dict.fromkeys(entry for entry in _LIST_SEPARATORS.split(text or "") if entry))


def search_followers(account: OfficialAccount, query: str) -> QuerySet[Follower]:
    """Followers of ``account`` whose openid, remark or bound username contains ``query``; subscribed first."""
    followers = Follower.objects.filter(account=account).select_related("user")
    query = query.strip()
    if query:
        followers = followers.filter(
            Q(openid__icontains=query) | Q(remark__icontains=query) | Q(user__username__icontains=query)
        )
    return followers.order_by("-subscribed", "openid")[:SEARCH_LIMIT]


@dataclass
class RecipientCount:
    """What a campaign with these recipients would create: ``count`` messages, ``unsubscribed`` of them failing
    at once (the follower left), and the entries that would make the send refused or are worth a second look.

    With a subscription template, ``with_credit`` of them hold a credit or a grant, and for a short list
    ``holders`` says it of each openid."""

    count: int = 0
    unsubscribed: int = 0
    unbound: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    with_credit: int | None = None
    holders: dict[str, bool] = field(default_factory=dict)
    # Openids the credits are counted over (a list's), None for all followers and everyone holding.
    openids: list[str] | None = None


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), LOOKUP_CHUNK_SIZE):
        yield values[start : start + LOOKUP_CHUNK_SIZE]


def _count_openids(account: OfficialAccount, openids: list[str]) -> RecipientCount:
    known: dict[str, bool] = {}
    for chunk in _chunks(openids):
        known.update(Follower.objects.filter(account=account, openid__in=chunk).values_list("openid", "subscribed"))
    return RecipientCount(
        count=len(openids),
        unsubscribed=sum(1 for subscribed in known.values() if not subscribed),
        unknown=[openid for openid in openids if openid not in known],
        openids=openids,
    )


def _count_usernames(account: OfficialAccount, usernames: list[str]) -> RecipientCount:
    """Mirrors the campaign expansion: each username goes to one follower (accounts.selectors.followers_by_username)."""
    chosen: dict[str, BoundFollower] = {}
    for chunk in _chunks(usernames):
        chosen.update(followers_by_username(account.pk, chunk))
    followers = {follower.pk: follower.subscribed for follower in chosen.values()}
    return RecipientCount(
        count=len(followers),
        unsubscribed=sum(1 for subscribed in followers.values() if not subscribed),
        unbound=[username for username in usernames if username not in chosen],
        openids=list(dict.fromkeys(follower.openid for follower in chosen.values())),
    )


def count_recipients(
    account: OfficialAccount,
    kind: str,
    entries: Iterable[str] = (),
    subscription_template: SubscriptionTemplate | None = None,
) -> RecipientCount:
    """How many messages a campaign of ``account`` to these recipients would hold, before anyone presses Send; with
    a subscription template, how many of them hold it (see :class:`RecipientCount`)."""
    pri_tmpl_id = subscription_template.pri_tmpl_id if subscription_template is not None else None
    if kind == Campaign.RecipientKind.ALL_WITH_CREDIT:
        holders = holding_credit(account.pk, pri_tmpl_id).count() if pri_tmpl_id else 0
        return RecipientCount(count=holders, with_credit=holders)
    if kind == Campaign.RecipientKind.ALL_SUBSCRIBED:
        result = RecipientCount(count=Follower.objects.filter(account=account, subscribed=True).count())
        if pri_tmpl_id:
            result.with_credit = count_subscribed_followers_with_credit(account.pk, pri_tmpl_id)
        return result
    values = list(dict.fromkeys(entries))
    if kind == Campaign.RecipientKind.USERNAMES:
        result = _count_usernames(account, values)
    else:
        result = _count_openids(account, values)
    if pri_tmpl_id and result.openids is not None:
        result.with_credit = count_with_credit(account, pri_tmpl_id, result.openids)
        if len(result.openids) <= CREDITS_LISTED:
            holding = openids_with_credit(account, pri_tmpl_id, result.openids)
            result.holders = {openid: openid in holding for openid in result.openids}
    return result
