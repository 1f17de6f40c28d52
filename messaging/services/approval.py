"""Approval of campaigns: which ones wait for it, and approving or rejecting one.

An account's :class:`~messaging.models.ApprovalPolicy` decides at acceptance whether a campaign waits
(:func:`needs_approval`).  A waiting campaign is in state *pending approval*: a list's messages are written and
counted like any other's but no delivery task is started, and the claiming query never takes a message of such a
campaign (``MessageQuerySet.claimable``), so nothing can reach WeChat before the decision, whatever task runs.  An
"all subscribed" campaign is only counted: its expansion starts when it is approved, so it never sends before.

:func:`approve_campaign` and :func:`reject_campaign` are the only ways out of that state besides a cancel; each is
one transaction, guarded by the state in its UPDATE, so two admins deciding at once cannot both win.  Who may
decide is :func:`messaging.rules.approval_refusal`: a wxnotify admin who did not create the campaign.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from audit.models import AuditEvent
from audit.services import record
from messaging import dispatch, events, rules, scheduling
from messaging.models import WAITING_STATUSES, ApprovalPolicy, Campaign, Message
from messaging.reasons import REJECTED_REASON
from messaging.services.checks import ApprovalRefused, CampaignActionRefused, MessageRejected

logger = logging.getLogger("wxnotify.messaging")

# The longest decision note kept (a note is for people; the admin's and console's forms have the same cap).
NOTE_MAX_LENGTH = 2000


def needs_approval(account_id: int, template_pk: int | None, recipient_count: int) -> bool:
    """Whether the account's approval policy holds back a campaign of the template to that many recipients."""
    policy = ApprovalPolicy.objects.filter(account_id=account_id).first()
    return policy is not None and policy.requires_approval(template_pk, recipient_count)


def _check_decision(campaign: Campaign, user: Any, note: str) -> str:
    note = (note or "").strip()
    if len(note) > NOTE_MAX_LENGTH:
        raise MessageRejected({"note": [_("At most %(count)d characters.") % {"count": NOTE_MAX_LENGTH}]})
    if not rules.awaits_approval(campaign):
        raise CampaignActionRefused(_("Only a campaign waiting for approval can be approved or rejected."))
    refusal = rules.approval_refusal(user, campaign)
    if refusal is not None:
        raise ApprovalRefused(refusal)
    return note


def _decide(campaign: Campaign, state: str, user: Any, note: str) -> None:
    """Move the campaign out of *pending approval* with the decision recorded, or refuse if it already left it."""
    now = timezone.now()
    changed = Campaign.objects.filter(pk=campaign.pk, state=Campaign.State.PENDING_APPROVAL).update(
        state=state, decided_by=user, decided_at=now, decision_note=note
    )
    if not changed:
        raise CampaignActionRefused(_("Only a campaign waiting for approval can be approved or rejected."))
    campaign.state, campaign.decided_by, campaign.decided_at, campaign.decision_note = state, user, now, note


def approve_campaign(campaign: Campaign, *, by: Any, note: str = "") -> Campaign:
    """Let a campaign waiting for approval send: a list's campaign runs, an "all subscribed" one starts adding its
    recipients (and sends as they are added, as without approval).  The note is optional.

    Raises :class:`ApprovalRefused` when ``by`` may not decide (not an admin, or the creator),
    :class:`CampaignActionRefused` when the campaign is not waiting, :class:`MessageRejected` for an over-long note.
    """
    note = _check_decision(campaign, by, note)
    expand = campaign.recipient_kind == Campaign.RecipientKind.ALL_SUBSCRIBED
    send_at = campaign.send_at
    with transaction.atomic():
        if expand:
            # The expansion itself leaves the campaign scheduled when it has a send time (messaging.services.expansion).
            _decide(campaign, Campaign.State.EXPANDING, by, note)
            transaction.on_commit(partial(dispatch.enqueue_expansion, campaign.pk, campaign.trace_id))
        elif send_at is not None and send_at > timezone.now():
            # Approved before its send time: it waits for it, its messages scheduled since acceptance.
            _decide(campaign, Campaign.State.SCHEDULED, by, note)
            transaction.on_commit(lambda: scheduling.wake_before(send_at, timezone.now()))
        else:
            # A send time that passed while the campaign waited: its scheduled messages are released at once.
            _decide(campaign, Campaign.State.RUNNING, by, note)
            transaction.on_commit(partial(dispatch.enqueue_campaign, campaign.pk, campaign.trace_id))
        record(AuditEvent.CAMPAIGN_APPROVED, target=campaign, actor=by, details={"note": note})
    logger.info("Campaign #%s approved by %s", campaign.pk, by.get_username())
    return campaign


def reject_campaign(campaign: Campaign, *, by: Any, note: str) -> int:
    """Refuse a campaign waiting for approval: it ends *rejected* and each of its queued messages fails with
    ``REJECTED_REASON`` (the note, which is required, is on the campaign for its creator); returns how many failed.

    Raises like :func:`approve_campaign`, and :class:`MessageRejected` when the note is empty.
    """
    note = _check_decision(campaign, by, note)
    if not note:
        raise MessageRejected({"note": [_("Say why the campaign is rejected.")]})
    now = timezone.now()
    with transaction.atomic():
        _decide(campaign, Campaign.State.REJECTED, by, note)
        record(AuditEvent.CAMPAIGN_REJECTED, target=campaign, actor=by, details={"note": note})
        failed = Message.objects.filter(campaign=campaign, status__in=WAITING_STATUSES).update(
            status=Message.Status.FAILED, errcode=None, errmsg=REJECTED_REASON, finished_at=now, updated_at=now
        )
        if failed and events.wanted(events.MESSAGE_FAILED):
            events.record_messages(
                events.MESSAGE_FAILED,
                Message.objects.filter(
                    campaign=campaign, status=Message.Status.FAILED, errmsg=REJECTED_REASON, updated_at=now
                ),
            )
        if events.wanted(events.CAMPAIGN_FINISHED):
            events.record_campaigns(events.CAMPAIGN_FINISHED, Campaign.objects.filter(pk=campaign.pk))
    logger.info("Campaign #%s rejected by %s: %d message(s) failed", campaign.pk, by.get_username(), failed)
    return failed
