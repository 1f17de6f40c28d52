"""Read-only queries of the message log, limited to what a user may see."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, F, Q, QuerySet

from accounts.selectors import ADMINS_GROUP, accounts_for_user, in_user_accounts
from messaging import rules
from messaging.models import MESSAGE_CHANNELS, Campaign, DeliveryReceipt, Message, SendingCap

FINAL_STATUSES = (Message.Status.DELIVERED, Message.Status.FAILED)
# "Sent" is final for progress too: WeChat accepted it and a receipt may never come.
DONE_STATUSES = (Message.Status.SENT, *FINAL_STATUSES)


def messages_for_user(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Message]:
    return Message.objects.filter(in_user_accounts(user))


def campaigns_for_user(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Campaign]:
    return Campaign.objects.filter(account__in=accounts_for_user(user))


def campaigns_awaiting_decision_by(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Campaign]:
    """The campaigns waiting for approval that ``user`` may approve or reject: none unless they may approve at all,
    and never their own (messaging.rules.approval_refusal)."""
    if not rules.may_approve_campaigns(user):
        return Campaign.objects.none()
    return campaigns_for_user(user).filter(state=Campaign.State.PENDING_APPROVAL).exclude(created_by=user.pk)


def approvers_of(campaign: Campaign) -> QuerySet:
    """The active users who may approve or reject ``campaign``: wxnotify admins and superusers but its creator,
    the names its page shows while it waits."""
    users = get_user_model().objects.filter(Q(is_superuser=True) | Q(groups__name=ADMINS_GROUP), is_active=True)
    if campaign.created_by_id is not None:
        users = users.exclude(pk=campaign.created_by_id)
    return users.distinct().order_by("username")


def receipts_for_user(user: AbstractBaseUser | AnonymousUser) -> QuerySet[DeliveryReceipt]:
    return DeliveryReceipt.objects.filter(account__in=accounts_for_user(user))


def caps_for_user(user: AbstractBaseUser | AnonymousUser) -> QuerySet[SendingCap]:
    return SendingCap.objects.filter(account__in=accounts_for_user(user))


def account_caps(account_id: int) -> list[SendingCap]:
    """An account's sending caps as shown to the people who send (console): all templates first."""
    return list(
        SendingCap.objects.filter(account_id=account_id)
        .select_related("template")
        .order_by(F("template_id").asc(nulls_first=True), "template__title")
    )


def _empty_counts() -> dict[str, int]:
    return dict.fromkeys(Message.Status.values, 0)


def status_counts_by_campaign(campaign_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """Live message counts by status for several campaigns in one GROUP BY on the (campaign, status) index.

    ``COUNT(*)``, not ``COUNT(id)``: the index holds no id, and counting ids would read every row of the table
    (0.3 s for a campaign of 400,000 messages on PostgreSQL, against 0.06 s from the index alone)."""
    ids = list(campaign_ids)
    counts = {campaign_id: _empty_counts() for campaign_id in ids}
    rows = (
        Message.objects.filter(campaign_id__in=ids)
        .order_by()
        .values_list("campaign_id", "status")
        .annotate(count=Count("*"))
    )
    for campaign_id, status, count in rows:
        counts[campaign_id][status] = count
    return counts


def campaign_status_counts(campaign: Campaign) -> dict[str, int]:
    """Live message counts of one campaign by status (every status present, zeros included)."""
    return status_counts_by_campaign([campaign.pk])[campaign.pk]


def status_counts_by_channel(campaign: Campaign) -> list[tuple[str, str, dict[str, int]]]:
    """An ``auto`` campaign's message counts by status per channel, as (channel, label, counts).

    Reads the campaign's rows (the channel is in no index): shown on one campaign's page, never in lists.
    """
    counts = {channel: _empty_counts() for channel, _label in MESSAGE_CHANNELS}
    rows = (
        Message.objects.filter(campaign=campaign).order_by().values_list("channel", "status").annotate(count=Count("*"))
    )
    for channel, status, count in rows:
        counts[channel][status] = count
    return [(channel, str(label), counts[channel]) for channel, label in MESSAGE_CHANNELS]


@dataclass(frozen=True)
class CampaignProgress:
    total: int
    counts: dict[str, int]

    @property
    def done(self) -> int:
        """Messages with nothing left to do on our side (sent, delivered or failed)."""
        return sum(self.counts[status] for status in DONE_STATUSES)

    @property
    def percent(self) -> float:
        return round(100.0 * self.done / self.total, 1) if self.total else 100.0


def campaign_progress(campaign: Campaign, counts: dict[str, int] | None = None) -> CampaignProgress:
    """Counts and percentage done; pass ``counts`` from :func:`status_counts_by_campaign` to avoid a query.

    While an "all subscribed" campaign is still expanding (its rows are written as delivery needs them, see
    messaging.services.expansion), the recipients counted at acceptance whose message is not written yet are
    counted as waiting (queued, or scheduled for a scheduled campaign), so the total and the percentage are the
    campaign's from the start rather than those of the rows written so far.
    """
    counts = counts if counts is not None else campaign_status_counts(campaign)
    unwritten = campaign.recipient_count - sum(counts.values())
    if campaign.state == Campaign.State.EXPANDING and unwritten > 0:
        waiting = Message.Status.SCHEDULED if campaign.send_at else Message.Status.QUEUED
        counts = {**counts, waiting: counts[waiting] + unwritten}
    return CampaignProgress(total=sum(counts.values()), counts=counts)
