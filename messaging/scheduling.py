"""Messages that wait: for the send time their sender chose, or for the end of their account's quiet hours.

A waiting message is stored ``scheduled`` with ``next_attempt_at`` set to when it may go and ``wait_reason`` saying
why.  No timer of our own and no django-q2 schedule wakes it (those fire only about every 30 s): it rides on the
retry machinery of :mod:`messaging.delivery`.  A message due within ``WXNOTIFY_RETRY_WAIT_HORIZON_SECONDS`` keeps
one delivery task alive (the *retry waiter*, :func:`messaging.sweeper.work_ahead` counts scheduled messages too;
the sweeper starts it every minute when missing), and every delivery task calls :func:`release_scheduled` every
``RELEASE_SECONDS``: what is due becomes ``queued``, due since its time (like a retry whose backoff ended), for the
urgent claims every task serves first; the tasks of a campaign whose messages it released are started too.  A
scheduled campaign (state ``scheduled``) starts running the same way.

Quiet hours are checked when a message is about to be claimed (:mod:`messaging.claims`), whether it is new or a
retry whose delay ended inside the window: a campaign message (or a single message sent with
``respect_quiet_hours``) is put back as ``scheduled`` until the window ends.  When an account's quiet hours change,
:func:`replan_quiet_hours` moves the messages that wait for them, and only those.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import OfficialAccount
from messaging import dispatch
from messaging.models import Campaign, Message

logger = logging.getLogger("wxnotify.messaging")

# How often a running delivery task queues the scheduled messages whose time came: the lateness a scheduled
# message may get on top of a claim (bench/RESULTS.md, "Scheduled sends").
RELEASE_SECONDS = 0.2


def wake_before(when: datetime, now: datetime) -> None:
    """Make sure a task will be waiting when ``when`` comes if it is within the waiter's horizon (call it after the
    commit); later times are the sweeper's: it starts the waiter once they come within the horizon."""
    if when - now <= timedelta(seconds=settings.WXNOTIFY_RETRY_WAIT_HORIZON_SECONDS):
        dispatch.request_retry_waiter()


def defer_for_quiet_hours(messages: QuerySet[Message], until: datetime, now: datetime) -> int:
    """Put messages back as scheduled until their account's quiet hours end; returns how many."""
    return messages.update(
        status=Message.Status.SCHEDULED,
        next_attempt_at=until,
        wait_reason=Message.WaitReason.QUIET_HOURS,
        lease_expires_at=None,
        updated_at=now,
    )


def release_scheduled(now: datetime) -> dict[str, int]:
    """Queue the scheduled messages whose time came and start scheduled campaigns whose send time came.

    Cheap when nothing is due (an index range on ``status, next_attempt_at`` that finds no row), so every delivery
    task runs it every ``RELEASE_SECONDS``.  Idempotent: two tasks releasing at once queue each message once (the
    UPDATE re-checks the status) and at worst start a campaign's tasks twice, which only adds tasks that stop when
    they find nothing left.
    """
    starting = list(
        Campaign.objects.filter(state=Campaign.State.SCHEDULED, send_at__lte=now).values_list("pk", flat=True)
    )
    started = (
        Campaign.objects.filter(pk__in=starting, state=Campaign.State.SCHEDULED).update(state=Campaign.State.RUNNING)
        if starting
        else 0
    )
    due = Message.objects.scheduled_due(now)
    campaign_ids = set(due.order_by().values_list("campaign_id", flat=True).distinct())
    released = 0
    if campaign_ids:
        # next_attempt_at stays: the claims serve due messages oldest first, and the queue lag counts from it.
        released = due.update(status=Message.Status.QUEUED, wait_reason="", updated_at=now)
    if not released:
        campaign_ids.clear()  # another task released them first and started their work
    singles = None in campaign_ids
    campaign_ids.discard(None)
    campaign_ids.update(starting)
    # Started whether or not the campaign's engine key is up: a campaign whose messages all waited for quiet hours
    # keeps the key of its last task for a while after that task found nothing left and stopped.
    for campaign_id in campaign_ids:
        dispatch.enqueue_campaign(campaign_id)
    if singles:
        dispatch.request_singles_delivery()
    if released or started:
        logger.info("Released %d scheduled message(s); %d scheduled campaign(s) started", released, started)
    return {"released": released, "campaigns_started": started}


def replan_quiet_hours(account: OfficialAccount, now: datetime) -> int:
    """Move the messages waiting for the account's quiet hours to the end of its current window, or to now when
    ``now`` is outside it (or it has none any more); returns how many.  Messages waiting for a send time chosen by
    their sender are left alone."""
    waiting = Message.objects.scheduled().filter(account=account, wait_reason=Message.WaitReason.QUIET_HOURS)
    until = account.quiet_hours_end(now) or now
    moved = waiting.update(next_attempt_at=until, updated_at=now)
    if moved:
        wake_before(until, now)
        logger.info("Account %s: quiet hours changed, %d waiting message(s) re-planned to %s", account.pk, moved, until)
    return moved


def replan_after_quiet_hours_change(sender: Any, *, account_id: int, **kwargs: Any) -> int:
    """Receiver of ``accounts.services.quiet_hours_changed``."""
    account = OfficialAccount.objects.filter(pk=account_id).first()
    return 0 if account is None else replan_quiet_hours(account, timezone.now())


def local_time_text(when: datetime, zone: Any, *, with_date: bool) -> str:
    """A time as the account's audience reads it, with the zone's name (e.g. ``08:00 Asia/Shanghai``)."""
    local = when.astimezone(zone)
    shown = local.strftime("%Y-%m-%d %H:%M") if with_date else local.strftime("%H:%M")
    return f"{shown} {zone.key}"


def wait_text(reason: str, until: datetime | None, account: OfficialAccount) -> str:
    """Why a scheduled message (or campaign) waits and until when, in the reader's language."""
    if until is None:
        return ""
    if reason == Message.WaitReason.QUIET_HOURS:
        return _("Quiet hours until %(time)s") % {"time": local_time_text(until, account.zone, with_date=False)}
    return _("Scheduled for %(time)s") % {"time": local_time_text(until, account.zone, with_date=True)}


def message_wait_text(message: Message) -> str:
    """The reason a scheduled message waits (empty for any other status)."""
    if message.status != Message.Status.SCHEDULED:
        return ""
    return wait_text(message.wait_reason, message.next_attempt_at, message.account)


def campaign_wait_text(campaign: Campaign) -> str:
    """The reason a scheduled campaign waits (empty for any other state)."""
    if campaign.state != Campaign.State.SCHEDULED:
        return ""
    return wait_text(Message.WaitReason.SEND_AT, campaign.send_at, campaign.account)
