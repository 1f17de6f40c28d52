"""The rules of operating campaigns, in one place: who may operate them, and when one may be cancelled or retried.

The REST API, the staff console and the admin all ask here (and the services enforce the same rules), so a button
is offered exactly when the action would be accepted.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from messaging.models import Campaign, Message

# Whoever may start campaigns may also stop them and retry their failures.
OPERATE_PERMISSION = "messaging.add_campaign"
CANCELLABLE_STATES = (Campaign.State.EXPANDING, Campaign.State.SCHEDULED, Campaign.State.RUNNING)
# A campaign's send time can be moved until it starts (while it is still adding recipients, too).
RESCHEDULABLE_STATES = (Campaign.State.EXPANDING, Campaign.State.SCHEDULED)


def may_operate_campaigns(user: AbstractBaseUser | AnonymousUser) -> bool:
    """Whether the user may start, cancel and retry campaigns (of the accounts they may use)."""
    return user.has_perm(OPERATE_PERMISSION)


def can_cancel(campaign: Campaign) -> bool:
    """A campaign can be cancelled while it is adding recipients, scheduled or running; a done one has nothing left
    to stop."""
    return campaign.state in CANCELLABLE_STATES


def can_reschedule(campaign: Campaign) -> bool:
    """A scheduled campaign can be given another send time until it starts."""
    return campaign.state in RESCHEDULABLE_STATES and campaign.send_at is not None


def can_cancel_message(message: Message) -> bool:
    """A single message can be cancelled (or rescheduled) while it waits for its send time or quiet hours;
    campaign messages are cancelled with their campaign."""
    return message.status == Message.Status.SCHEDULED and message.campaign_id is None


def can_retry(campaign: Campaign, failed: int) -> bool:
    """A campaign's failed messages can be queued again unless it was cancelled (a cancel is final) or has not
    started yet (a scheduled campaign sends nothing before its time)."""
    return campaign.state not in (Campaign.State.CANCELLED, Campaign.State.SCHEDULED) and failed > 0
