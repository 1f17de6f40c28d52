"""The rules of operating campaigns, in one place: who may operate them, and when one may be cancelled or retried.

The REST API, the staff console and the admin all ask here (and the services enforce the same rules), so a button
is offered exactly when the action would be accepted.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from messaging.models import Campaign

# Whoever may start campaigns may also stop them and retry their failures.
OPERATE_PERMISSION = "messaging.add_campaign"
CANCELLABLE_STATES = (Campaign.State.EXPANDING, Campaign.State.RUNNING)


def may_operate_campaigns(user: AbstractBaseUser | AnonymousUser) -> bool:
    """Whether the user may start, cancel and retry campaigns (of the accounts they may use)."""
    return user.has_perm(OPERATE_PERMISSION)


def can_cancel(campaign: Campaign) -> bool:
    """A campaign can be cancelled while it is adding recipients or running; a done one has nothing left to stop."""
    return campaign.state in CANCELLABLE_STATES


def can_retry(campaign: Campaign, failed: int) -> bool:
    """A campaign's failed messages can be queued again unless it was cancelled (a cancel is final)."""
    return campaign.state != Campaign.State.CANCELLED and failed > 0
