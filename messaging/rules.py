"""The rules of operating campaigns, in one place: who may operate them, and when one may be cancelled, retried,
approved or rejected.

The REST API, the staff console and the admin all ask here (and the services enforce the same rules), so a button
is offered exactly when the action would be accepted.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.utils.translation import gettext as _

from accounts.selectors import is_account_admin
from messaging.models import Campaign, Message

# Whoever may start campaigns may also stop them and retry their failures.
OPERATE_PERMISSION = "messaging.add_campaign"
# A campaign waiting for approval can be withdrawn (by whoever may operate campaigns) as well as rejected.
CANCELLABLE_STATES = (
    Campaign.State.PENDING_APPROVAL,
    Campaign.State.EXPANDING,
    Campaign.State.SCHEDULED,
    Campaign.State.RUNNING,
)
# A campaign's send time can be moved until it starts (while it is still adding recipients or waiting for approval).
RESCHEDULABLE_STATES = (Campaign.State.PENDING_APPROVAL, Campaign.State.EXPANDING, Campaign.State.SCHEDULED)
# Failed messages are queued again only in a campaign that is sending or has sent: never one stopped for good
# (cancelled, rejected), one still waiting for approval, which a retry would otherwise start, nor a scheduled one,
# which sends nothing before its time.
RETRIABLE_STATES = (Campaign.State.EXPANDING, Campaign.State.RUNNING, Campaign.State.DONE)


def may_operate_campaigns(user: AbstractBaseUser | AnonymousUser) -> bool:
    """Whether the user may start, cancel and retry campaigns (of the accounts they may use)."""
    return user.has_perm(OPERATE_PERMISSION)


def can_cancel(campaign: Campaign) -> bool:
    """A campaign can be cancelled while it waits for approval or its send time, adds recipients or runs; a done
    (or rejected) one has nothing left to stop."""
    return campaign.state in CANCELLABLE_STATES


def can_reschedule(campaign: Campaign) -> bool:
    """A scheduled campaign can be given another send time until it starts."""
    return campaign.state in RESCHEDULABLE_STATES and campaign.send_at is not None


def can_cancel_message(message: Message) -> bool:
    """A single message can be cancelled (or rescheduled) while it waits for its send time or quiet hours;
    campaign messages are cancelled with their campaign."""
    return message.status == Message.Status.SCHEDULED and message.campaign_id is None


def can_retry(campaign: Campaign, failed: int) -> bool:
    """A campaign's failed messages can be queued again while it sends or once it is done, when there are any."""
    return campaign.state in RETRIABLE_STATES and failed > 0


def may_approve_campaigns(user: AbstractBaseUser | AnonymousUser) -> bool:
    """Whether the user approves campaigns at all: the wxnotify admins (and superusers, who hold every right).

    The issue asks for "a member of wxnotify admins"; superusers are included because everywhere else in wxnotify
    they are what an admin is (``accounts.selectors.is_account_admin``), and a superuser who is not in the group
    could otherwise only add themselves to it.
    """
    return is_account_admin(user)


def approval_refusal(user: AbstractBaseUser | AnonymousUser, campaign: Campaign) -> str | None:
    """Why ``user`` may not approve or reject ``campaign``, or None when they may (its state aside: see
    :func:`awaits_approval`).  Four eyes: the campaign's creator never decides on it, even as an admin."""
    if not may_approve_campaigns(user):
        return _("Only a member of wxnotify admins can approve or reject a campaign.")
    if campaign.created_by_id is not None and campaign.created_by_id == user.pk:
        return _("A campaign is approved or rejected by an admin other than the one who created it.")
    return None


def awaits_approval(campaign: Campaign) -> bool:
    return campaign.state == Campaign.State.PENDING_APPROVAL


def can_decide(user: AbstractBaseUser | AnonymousUser, campaign: Campaign) -> bool:
    """Whether approve and reject buttons are offered to ``user`` for ``campaign``."""
    return awaits_approval(campaign) and approval_refusal(user, campaign) is None
