"""Delivery receipts: apply WeChat's TEMPLATESENDJOBFINISH reports to their messages, exactly once, whichever
arrives first (the receipt or the sending worker's write-back of the msgid)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import OfficialAccount
from messaging import events
from messaging.models import DeliveryReceipt, Message


def _normalise_status(wechat_status: str) -> str:
    return " ".join((wechat_status or "").split())


def _receipt_outcome(status: str) -> tuple[str, str]:
    """(message status, reason) for a TEMPLATESENDJOBFINISH status (``success``, ``failed:user block``, …)."""
    if status.lower() == "success":
        return Message.Status.DELIVERED, ""
    return Message.Status.FAILED, _("WeChat could not deliver it: %(status)s") % {"status": status}


def _apply_receipt(message_id: int, status: str, event_time: datetime | None) -> bool:
    """Move a sent message to delivered/failed; False if it was not waiting for a receipt (e.g. a duplicate).

    Its ``message.delivered`` or ``message.failed`` event is written in the same transaction (messaging.events).
    """
    new_status, reason = _receipt_outcome(status)
    kind = events.MESSAGE_DELIVERED if new_status == Message.Status.DELIVERED else events.MESSAGE_FAILED
    return bool(
        events.update_recording(
            Message.objects.filter(pk=message_id, status=Message.Status.SENT),
            kind,
            status=new_status,
            errmsg=reason[:512],
            finished_at=event_time or timezone.now(),
            updated_at=timezone.now(),
        )
    )


def _find_sent_message(account_id: int, msgid: int, openid: str) -> Message | None:
    candidates = Message.objects.filter(account_id=account_id, msgid=msgid)
    if openid:
        return candidates.filter(touser=openid).first() or candidates.first()
    return candidates.first()


def record_delivery_receipt(
    *,
    account: OfficialAccount,
    msgid: int,
    wechat_status: str,
    openid: str = "",
    event_time: datetime | None = None,
) -> DeliveryReceipt | Message:
    """Apply WeChat's ``TEMPLATESENDJOBFINISH`` report: the message becomes delivered, or failed with WeChat's status.

    The receipt can beat the sending worker, which stores ``msgid`` only after WeChat answered: then it
    is kept as a pending :class:`DeliveryReceipt` and applied when the msgid lands (or by the sweeper).
    MsgID 0 (reported when client_msg_id de-duplicated a send) can never match and is kept as unmatched.
    Returns the message when applied at once, else the stored receipt.
    """
    status = _normalise_status(wechat_status)[:64]
    msgid = int(msgid)
    if msgid:
        message = _find_sent_message(account.pk, msgid, openid)
        if message is not None:
            if _apply_receipt(message.pk, status, event_time):
                message.refresh_from_db()
            return message
    receipt = DeliveryReceipt.objects.create(
        account=account,
        msgid=msgid,
        openid=openid[:64],
        wechat_status=status,
        event_time=event_time,
        state=DeliveryReceipt.State.PENDING if msgid else DeliveryReceipt.State.UNMATCHED,
        resolved_at=None if msgid else timezone.now(),
    )
    if msgid:
        # The worker may have stored the msgid between our lookup and the insert: look once more.
        apply_pending_receipts(account.pk, [msgid])
        receipt.refresh_from_db()
    return receipt


def apply_pending_receipts(account_id: int, msgids: Sequence[int]) -> int:
    """Apply receipts that arrived before their messages' msgids were stored; returns how many.

    Receipts already given up as unmatched are included: a msgid that lands very late (a worker stalled
    beyond the match window) still finds its receipt, so no report from WeChat is ever lost.
    """
    if not msgids:
        return 0
    waiting = (DeliveryReceipt.State.PENDING, DeliveryReceipt.State.UNMATCHED)
    receipts = list(DeliveryReceipt.objects.filter(account_id=account_id, msgid__in=list(msgids), state__in=waiting))
    applied = 0
    for receipt in receipts:
        message = _find_sent_message(account_id, receipt.msgid, receipt.openid)
        if message is None:
            continue
        _apply_receipt(message.pk, receipt.wechat_status, receipt.event_time)
        applied += DeliveryReceipt.objects.filter(pk=receipt.pk, state__in=waiting).update(
            state=DeliveryReceipt.State.APPLIED, message=message, resolved_at=timezone.now()
        )
    return applied


def resolve_stale_receipts(older_than: datetime) -> tuple[int, int]:
    """Apply pending receipts received before ``older_than`` whose message now has its msgid, mark the rest unmatched.

    Returns (applied, unmatched).
    """
    applied = unmatched = 0
    stale = DeliveryReceipt.objects.filter(state=DeliveryReceipt.State.PENDING, received_at__lt=older_than)
    for account_id, msgid in stale.values_list("account_id", "msgid").distinct().iterator():
        applied += apply_pending_receipts(account_id, [msgid])
    unmatched = stale.update(state=DeliveryReceipt.State.UNMATCHED, resolved_at=timezone.now())
    return applied, unmatched
