"""Moving or stopping what waits for its send time: a scheduled single message, or a scheduled campaign."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from messaging import events, rules, scheduling
from messaging.models import Campaign, Message
from messaging.services.checks import CampaignActionRefused, MessageActionRefused, MessageRejected, check_send_at

logger = logging.getLogger("wxnotify.messaging")

MESSAGE_CANCELLED_REASON = "Cancelled before its send time."


def _new_send_at(account: Any, send_at: datetime | None, now: datetime) -> datetime:
    errors: dict[str, Any] = {}
    if send_at is None:
        errors["send_at"] = [_("Give the new send time.")]
    checked = check_send_at(account, send_at, errors, now)
    if errors:
        raise MessageRejected(errors)
    return checked


def cancel_message(message: Message) -> Message:
    """Stop a scheduled single message: it fails with a reason saying so (a ``message.failed`` event is written).

    Raises :class:`MessageActionRefused` once it no longer waits (queued, being sent or done) or when it belongs to
    a campaign (cancel the campaign).
    """
    if not rules.can_cancel_message(message):
        raise MessageActionRefused(_("Only a single message waiting as scheduled can be cancelled."))
    now = timezone.now()
    with transaction.atomic():
        changed = Message.objects.filter(pk=message.pk, status=Message.Status.SCHEDULED, campaign__isnull=True).update(
            status=Message.Status.FAILED,
            errcode=None,
            errmsg=MESSAGE_CANCELLED_REASON,
            next_attempt_at=None,
            wait_reason="",
            finished_at=now,
            updated_at=now,
        )
        if not changed:
            raise MessageActionRefused(_("The message is no longer waiting; it was not cancelled."))
        if events.wanted(events.MESSAGE_FAILED):
            events.record_messages(events.MESSAGE_FAILED, Message.objects.filter(pk=message.pk))
    message.refresh_from_db()
    logger.info("Cancelled scheduled message #%s", message.pk)
    return message


def reschedule_message(message: Message, send_at: datetime | None) -> Message:
    """Give a scheduled single message another send time (refused like a new one when past or too far ahead).

    A message waiting for quiet hours gets the new time as its sender's; when that falls inside the quiet hours
    and the message respects them, it waits for their end again at that time.
    """
    if not rules.can_cancel_message(message):
        raise MessageActionRefused(_("Only a single message waiting as scheduled can be rescheduled."))
    now = timezone.now()
    when = _new_send_at(message.account, send_at, now)
    changed = Message.objects.filter(pk=message.pk, status=Message.Status.SCHEDULED, campaign__isnull=True).update(
        send_at=when, next_attempt_at=when, wait_reason=Message.WaitReason.SEND_AT, updated_at=now
    )
    if not changed:
        raise MessageActionRefused(_("The message is no longer waiting; it was not rescheduled."))
    transaction.on_commit(lambda: scheduling.wake_before(when, timezone.now()))
    message.refresh_from_db()
    return message


def reschedule_campaign(campaign: Campaign, send_at: datetime | None) -> Campaign:
    """Move a scheduled campaign (and its messages waiting for the old time) to another send time."""
    if not rules.can_reschedule(campaign):
        raise CampaignActionRefused(_("Only a scheduled campaign that has not started can be rescheduled."))
    now = timezone.now()
    when = _new_send_at(campaign.account, send_at, now)
    with transaction.atomic():
        # The row lock orders this after an expansion chunk in progress, which writes the send time it read.
        locked = Campaign.objects.select_for_update().filter(pk=campaign.pk, state__in=rules.RESCHEDULABLE_STATES)
        if not locked.exists():
            raise CampaignActionRefused(_("The campaign has started or was cancelled; it was not rescheduled."))
        Campaign.objects.filter(pk=campaign.pk).update(send_at=when)
        Message.objects.scheduled().filter(campaign=campaign, wait_reason=Message.WaitReason.SEND_AT).update(
            send_at=when, next_attempt_at=when, updated_at=now
        )
        transaction.on_commit(lambda: scheduling.wake_before(when, timezone.now()))
    campaign.refresh_from_db()
    logger.info("Campaign #%s rescheduled to %s", campaign.pk, when.isoformat())
    return campaign
