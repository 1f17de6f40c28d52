"""Campaigns: accept a bulk send of one template (or subscription template) to many recipients, cancel it, retry its
failures, finish it."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import OfficialAccount
from audit.models import AuditEvent
from audit.services import record
from messaging import dispatch, events, rules, scheduling
from messaging.models import WAITING_STATUSES, Campaign, Channel, Message
from messaging.reasons import CANCELLED_REASON
from messaging.services.approval import needs_approval
from messaging.services.campaign_rows import fail_duplicates
from messaging.services.checks import (
    CampaignActionRefused,
    MessageRejected,
    check_account,
    check_data,
    check_link,
    check_send_at,
    check_subscription_template,
    check_template,
    vanished_reference,
)
from messaging.services.expansion import (
    expand_credit_holders,
    expand_openids,
    expand_usernames,
    latest_follower_id,
    subscribed_followers,
)
from messaging.services.routing import check_channel_fields
from subscriptions.selectors import count_subscribed_followers_with_credit
from subscriptions.selectors import count_with_credit as consent_count_with_credit
from templates_app.keywords import validate_template_data
from templates_app.models import MessageTemplate, SubscriptionTemplate
from wxnotify.tracing import get_trace_id, traced
from wxnotify.wechat.errors import OUTCOME_UNKNOWN_ERRCODE

logger = logging.getLogger("wxnotify.messaging")


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

    @classmethod
    def all_with_credit(cls) -> RecipientSpec:
        return cls(Campaign.RecipientKind.ALL_WITH_CREDIT)


@dataclass(frozen=True)
class CampaignContent:
    """What a campaign sends on its channel(s), checked: the templates, the data stored and the links."""

    template: MessageTemplate | None
    subscription_template: SubscriptionTemplate | None
    data: dict[str, Any]
    subscription_data: dict[str, Any] | None
    miniprogram: dict[str, str] | None


def check_content(
    account: OfficialAccount,
    errors: dict[str, Any],
    *,
    channel: str,
    template_id: str,
    subscription_template_id: str,
    data: Any,
    subscription_data: Any,
    url: str,
    page: str,
    miniprogram: Any,
) -> CampaignContent:
    """Check a campaign's channel, templates, data and links, adding field errors (the contract's field names).

    ``template`` needs ``template_id`` and ``url``; ``subscribe`` needs ``subscription_template_id`` and ``page``;
    ``auto`` needs both templates and takes both links.  Fields of a channel not used are refused rather than
    ignored.  An ``auto`` campaign is accepted when its data fits one of its templates (the recipients of the other
    channel then fail with NO_CHANNEL_REASON); its ``subscription_data``, when given, must fit the subscription
    template.
    """
    check_channel_fields(
        channel,
        errors,
        template_id=template_id,
        subscription_template_id=subscription_template_id,
        subscription_data=subscription_data,
        url=url,
        page=page,
    )
    if channel not in Channel.values:
        return CampaignContent(None, None, {}, None, None)
    uses_template = channel in (Channel.TEMPLATE, Channel.AUTO)
    uses_subscription = channel in (Channel.SUBSCRIBE, Channel.AUTO)
    template = check_template(account, template_id, errors) if uses_template and template_id else None
    subscription = (
        check_subscription_template(account, subscription_template_id, errors)
        if uses_subscription and subscription_template_id
        else None
    )
    mini = check_link(url if uses_template else "", miniprogram, errors)
    if uses_subscription:
        check_link(page, None, errors, url_field="page")
    if channel != Channel.AUTO:
        normalized = check_data(template or subscription, data, errors)
        return CampaignContent(template, subscription, normalized, None, mini)
    if template is None or subscription is None:
        return CampaignContent(template, subscription, {}, None, mini)
    as_template = validate_template_data(template, data)
    as_subscription = validate_template_data(subscription, data if subscription_data is None else subscription_data)
    if as_subscription.errors and (subscription_data is not None or as_template.errors):
        errors["subscription_data"] = as_subscription.errors
    if as_template.errors and as_subscription.errors:
        errors["data"] = as_template.errors
    stored = as_template.data if as_template.is_valid else as_subscription.data
    own = as_subscription.data if as_subscription.is_valid and as_subscription.data != stored else None
    return CampaignContent(template, subscription, stored, own, mini)


def count_with_credit(campaign: Campaign) -> int | None:
    """How many of an accepted campaign's recipients hold a credit or a grant of its subscription template now;
    None for a template campaign.  A list's recipients are its messages (``subscriptions.selectors.count_with_credit``
    over their openids); all subscribed followers are counted in SQL (their messages are not written yet)."""
    if campaign.subscription_template_id is None:
        return None
    pri_tmpl_id = campaign.subscription_template.pri_tmpl_id
    if campaign.recipient_kind == Campaign.RecipientKind.ALL_SUBSCRIBED:
        return count_subscribed_followers_with_credit(campaign.account_id, pri_tmpl_id)
    if campaign.recipient_kind == Campaign.RecipientKind.ALL_WITH_CREDIT:
        # Every recipient was taken from the holders.
        return Message.objects.filter(campaign=campaign).count()
    openids = Message.objects.filter(campaign=campaign).values_list("touser", flat=True)
    return consent_count_with_credit(campaign.account, pri_tmpl_id, openids.iterator())


def create_campaign(
    *,
    account: OfficialAccount,
    data: Any,
    recipients: RecipientSpec,
    template_id: str = "",
    channel: str = Channel.TEMPLATE,
    subscription_template_id: str = "",
    subscription_data: Any = None,
    page: str = "",
    url: str = "",
    miniprogram: Mapping[str, str] | None = None,
    name: str = "",
    send_at: datetime | None = None,
    created_by: Any = None,
    trace_id: str = "",
) -> Campaign:
    """Accept a bulk send: validate once, expand the recipients into queued messages, start delivery.

    A list of openids or usernames is expanded here, in chunks with bulk inserts, so memory stays flat for
    100,000 recipients; everything happens in one transaction: a rejected campaign leaves nothing behind, and
    delivery starts only after the commit.  A campaign to every subscribed follower is accepted with the
    followers counted but no message written yet (state "expanding"): a task adds them after the commit, a
    chunk per transaction, and delivery starts with the first chunk (``expand_all_subscribed``; a million
    rows in one INSERT kept the request busy for minutes).  Its ``recipient_count`` becomes the number of
    messages added once the expansion is done.  Campaign messages keep ``data`` empty and send the campaign's
    data.

    With ``send_at`` (see ``check_send_at``) the recipients are expanded the same way, but the campaign waits as
    *scheduled* and its messages as ``scheduled`` until that time (messaging.scheduling); it can be cancelled or
    rescheduled until then.
    ``channel`` subscribe sends the subscription template ``subscription_template_id`` (with ``data`` and ``page``)
    to each recipient the consent ledger allows, follower or not, and fails the others at once; auto sends the
    template to subscribed followers and the subscription to the others who hold it (see :func:`check_content` and
    ``campaign_rows.CampaignRows``).  Either also counts who holds a credit (``recipients_with_credit``); everyone
    holding the subscription (``RecipientSpec.all_with_credit``) is a recipient kind of these channels only.
    A campaign the account's approval policy holds back (``needs_approval``, on the recipients counted here) is
    accepted the same way in state "pending approval", and nothing is started: neither delivery nor, for all
    subscribed followers, the expansion (messaging.services.approval).
    """
    trace_id = trace_id or get_trace_id()
    errors: dict[str, Any] = {}
    check_account(account, errors)
    content = check_content(
        account,
        errors,
        channel=channel,
        template_id=template_id,
        subscription_template_id=subscription_template_id,
        data=data,
        subscription_data=subscription_data,
        url=url or "",
        page=page or "",
        miniprogram=miniprogram,
    )
    template = content.template
    if recipients.kind not in Campaign.RecipientKind.values:
        errors["recipients"] = [_("Give openids, usernames, or all subscribed followers.")]
    elif recipients.kind == Campaign.RecipientKind.ALL_WITH_CREDIT and channel == Channel.TEMPLATE:
        errors["recipients"] = [_("Everyone holding the subscription is a recipient of subscribe and auto campaigns.")]
    now = timezone.now()
    send_at = check_send_at(account, send_at, errors, now)
    if errors:
        raise MessageRejected(errors)

    expand_later = recipients.kind == Campaign.RecipientKind.ALL_SUBSCRIBED
    try:
        with transaction.atomic():
            campaign = Campaign.objects.create(
                account=account,
                channel=channel,
                template=template,
                subscription_template=content.subscription_template,
                name=name,
                data=content.data,
                subscription_data=content.subscription_data,
                url=url or "",
                page=page or "",
                miniprogram=content.miniprogram,
                recipient_kind=recipients.kind,
                state=Campaign.State.EXPANDING,
                recipients_through=latest_follower_id() if expand_later else None,
                send_at=send_at,
                created_by=created_by if getattr(created_by, "pk", None) else None,
                trace_id=trace_id,
            )
            if recipients.kind == Campaign.RecipientKind.OPENIDS:
                expand_openids(campaign, recipients.values, errors, now)
            elif recipients.kind == Campaign.RecipientKind.USERNAMES:
                expand_usernames(campaign, recipients.values, errors, now)
            elif recipients.kind == Campaign.RecipientKind.ALL_WITH_CREDIT:
                expand_credit_holders(campaign, now)
            if expand_later:
                count = subscribed_followers(account.pk)
            else:
                count = Message.objects.filter(campaign=campaign).count()
            if not count and not errors:
                errors["recipients"] = [
                    _("Nobody holds this subscription now.")
                    if recipients.kind == Campaign.RecipientKind.ALL_WITH_CREDIT
                    else _("The campaign has no recipients.")
                ]
            if errors:
                transaction.set_rollback(True)
                raise MessageRejected(errors)
            if not expand_later:
                fail_duplicates(campaign, Message.objects.filter(campaign=campaign), now, record=False)
            if events.wanted(events.MESSAGE_FAILED):
                # Recipients known to have unfollowed were inserted failed, and duplicates failed just now.
                events.record_messages(
                    events.MESSAGE_FAILED, Message.objects.filter(campaign=campaign, status=Message.Status.FAILED)
                )
            campaign.recipient_count = count
            campaign.recipients_with_credit = count_with_credit(campaign)
            details = {
                "account": account.appid,
                "template": template.template_id if template else "",
                "recipients": recipients.kind,
                "recipient_count": count,
            }
            if channel != Channel.TEMPLATE:
                details |= {
                    "channel": channel,
                    "subscription_template": content.subscription_template.pri_tmpl_id,
                    "recipients_with_credit": campaign.recipients_with_credit,
                }
            record(AuditEvent.CAMPAIGN_CREATED, target=campaign, details=details)
            if needs_approval(account.pk, template.pk if template else None, count):
                # Nothing starts: approve_campaign starts the delivery (or the expansion) of a waiting campaign.
                campaign.state = Campaign.State.PENDING_APPROVAL
                campaign.save(update_fields=["recipient_count", "recipients_with_credit", "state"])
            elif expand_later:
                campaign.save(update_fields=["recipient_count", "recipients_with_credit"])
                transaction.on_commit(partial(dispatch.enqueue_expansion, campaign.pk, trace_id))
            elif send_at is not None:
                campaign.state = Campaign.State.SCHEDULED
                campaign.save(update_fields=["recipient_count", "recipients_with_credit", "state"])
                transaction.on_commit(lambda: scheduling.wake_before(send_at, timezone.now()))
            else:
                campaign.state = Campaign.State.RUNNING
                campaign.save(update_fields=["recipient_count", "recipients_with_credit", "state"])
                transaction.on_commit(partial(dispatch.enqueue_campaign, campaign.pk, trace_id))
    except IntegrityError:
        raise vanished_reference() from None
    with traced(trace_id):
        logger.info("Accepted campaign #%s with %d recipient(s)", campaign.pk, count)
    return campaign


def finish_campaigns(campaign_ids: Iterable[int] | None = None) -> int:
    """Mark running campaigns with no scheduled, queued or sending message left as done; returns how many.

    Their ``campaign.finished`` events are written in the same transaction (messaging.events).
    """
    unfinished = Message.objects.filter(campaign=OuterRef("pk"), status__in=[*WAITING_STATUSES, Message.Status.SENDING])
    campaigns = Campaign.objects.filter(state=Campaign.State.RUNNING).exclude(Exists(unfinished))
    if campaign_ids is not None:
        campaigns = campaigns.filter(pk__in=list(campaign_ids))
    now = timezone.now()
    with events.recording(events.CAMPAIGN_FINISHED) as record:
        if not record:
            return campaigns.update(state=Campaign.State.DONE, finished_at=now)
        ids = list(campaigns.select_for_update(of=("self",)).values_list("pk", flat=True))
        if not ids:
            return 0
        finished = Campaign.objects.filter(pk__in=ids, state=Campaign.State.RUNNING).update(
            state=Campaign.State.DONE, finished_at=now
        )
        events.record_campaigns(events.CAMPAIGN_FINISHED, Campaign.objects.filter(pk__in=ids, finished_at=now))
    return finished


def cancel_campaign(campaign: Campaign) -> int:
    """Stop a campaign for good: its queued and scheduled messages fail as cancelled, and a message already claimed
    is stopped right before its WeChat call (messaging.delivery); returns how many waiting messages were cancelled.

    Raises :class:`CampaignActionRefused` when the campaign cannot be cancelled (messaging.rules.can_cancel).
    """
    now = timezone.now()
    with transaction.atomic():
        changed = Campaign.objects.filter(pk=campaign.pk, state__in=rules.CANCELLABLE_STATES).update(
            state=Campaign.State.CANCELLED, cancelled_at=now
        )
        if not changed:
            raise CampaignActionRefused(
                _(
                    "Only a campaign that is waiting for approval, adding recipients, scheduled or running can be "
                    "cancelled."
                )
            )
        cancelled = Message.objects.filter(campaign=campaign, status__in=WAITING_STATUSES).update(
            status=Message.Status.FAILED, errcode=None, errmsg=CANCELLED_REASON, finished_at=now, updated_at=now
        )
        if cancelled and events.wanted(events.MESSAGE_FAILED):
            events.record_messages(
                events.MESSAGE_FAILED,
                Message.objects.filter(
                    campaign=campaign, status=Message.Status.FAILED, errmsg=CANCELLED_REASON, updated_at=now
                ),
            )
        if events.wanted(events.CAMPAIGN_FINISHED):
            events.record_campaigns(events.CAMPAIGN_FINISHED, Campaign.objects.filter(pk=campaign.pk))
        record(AuditEvent.CAMPAIGN_CANCELLED, target=campaign, details={"cancelled_messages": cancelled})
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

    A cancel is final: a cancelled campaign raises :class:`CampaignActionRefused`, and so do a rejected one and one
    still waiting for approval (queuing its failures would start it; see messaging.rules.RETRIABLE_STATES).
    Messages whose outcome is unknown (errcode -9001: WeChat may have delivered them, and its de-duplication of
    their client_msg_id has lapsed) are left alone unless ``include_unknown``: retrying them may reach the user
    twice.
    """
    failed = Message.objects.filter(campaign=campaign, status=Message.Status.FAILED)
    unknown = failed.filter(errcode=OUTCOME_UNKNOWN_ERRCODE)
    if campaign.state == Campaign.State.CANCELLED:
        raise CampaignActionRefused(_("A cancelled campaign is not retried."))
    if campaign.state == Campaign.State.SCHEDULED:
        raise CampaignActionRefused(_("A scheduled campaign sends nothing before its time; retry after it started."))
    if campaign.state == Campaign.State.REJECTED:
        raise CampaignActionRefused(_("A rejected campaign is not retried."))
    if campaign.state == Campaign.State.PENDING_APPROVAL:
        raise CampaignActionRefused(_("A campaign waiting for approval is not retried: it has not been sent yet."))
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
        record(
            AuditEvent.CAMPAIGN_RETRIED,
            target=campaign,
            details={"retried": retried, "left_unknown": left_unknown, "include_unknown": include_unknown},
        )
    return RetryResult(retried=retried, left_unknown=left_unknown)
