"""Delivery receipts: apply WeChat's TEMPLATESENDJOBFINISH reports to their messages, exactly once, whichever
arrives first (the receipt or the sending worker's write-back of the msgid).

A callback only stores its receipt (:func:`record_delivery_receipt`); :func:`apply_received_receipts` applies the
stored ones in batches, the send pipeline's write-back applies those that were waiting for their msgid
(:func:`apply_pending_receipts`), and the sweeper gives up on those that wait too long
(:func:`resolve_stale_receipts`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from django.db import connections, router, transaction
from django.db.models import BigIntegerField, Case, Q, Value, When
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import OfficialAccount
from messaging import events
from messaging.models import DeliveryReceipt, Message

# Receipts applied in one transaction: a burst's receipts in a few hundred statements rather than a few per receipt.
RECEIPT_BATCH_SIZE = 500
# Applied receipts deleted per statement by prune_applied_receipts.
PRUNE_BATCH_SIZE = 5000


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
) -> bool:
    """Keep WeChat's ``TEMPLATESENDJOBFINISH`` report as *received*; False when it was stored before (a retry).

    One ``INSERT … ON CONFLICT DO NOTHING``: the row is the receipt's de-duplication record too (unique per account
    and msgid, see :class:`~messaging.models.DeliveryReceipt`), so a callback in autocommit answers after this one
    durable write, and a retry of a receipt already stored (or already applied, within the replay window) writes
    nothing.  Written as SQL rather than through the ORM because a burst of receipts runs it hundreds of times a
    second and the ORM's model and statement building were a large part of its cost; PostgreSQL and SQLite both
    speak this dialect.  :func:`apply_received_receipts` applies the receipt a moment later with the others of its
    batch (run by the task that :func:`messaging.dispatch.request_receipt_application` starts, and by the sweeper);
    call that after commit.
    """
    connection = connections[router.db_for_write(DeliveryReceipt)]
    table = connection.ops.quote_name(DeliveryReceipt._meta.db_table)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (account_id, msgid, openid, wechat_status, event_time, state, received_at) "  # noqa: S608 -- name quoted, values bound
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [
                account.pk,
                int(msgid),
                openid[:64],
                _normalise_status(wechat_status)[:64],
                connection.ops.adapt_datetimefield_value(event_time),
                DeliveryReceipt.State.RECEIVED.value,
                now,
            ],
        )
        return cursor.rowcount == 1


def _candidates_by_msgid(receipts: Sequence[DeliveryReceipt]) -> dict[tuple[int, int], list[Message]]:
    """The messages of the receipts' msgids, in one query, by (account, msgid), each list in the model's order."""
    by_account: dict[int, set[int]] = defaultdict(set)
    for receipt in receipts:
        if receipt.msgid:
            by_account[receipt.account_id].add(receipt.msgid)
    if not by_account:
        return {}
    wanted = Q()
    for account_id, msgids in by_account.items():
        wanted |= Q(account_id=account_id, msgid__in=sorted(msgids))
    candidates: dict[tuple[int, int], list[Message]] = defaultdict(list)
    for message in Message.objects.filter(wanted).only("id", "account_id", "msgid", "touser", "status"):
        candidates[(message.account_id, message.msgid)].append(message)
    return candidates


def _matching(candidates: list[Message], openid: str) -> Message | None:
    """The message a receipt reports on, chosen as :func:`_find_sent_message` chooses it."""
    if openid:
        for message in candidates:
            if message.touser == openid:
                return message
    return candidates[0] if candidates else None


def apply_received_receipts(*, batch_size: int = RECEIPT_BATCH_SIZE) -> int:
    """Apply one batch of received receipts to their messages; returns how many receipts it took (0: none left).

    One transaction: the batch is locked (a concurrent applier skips it on PostgreSQL; SQLite has one writer), the
    messages are found with one query and moved with one UPDATE per outcome, and every receipt of the batch leaves
    the received state, so each is applied exactly once whatever fails.  A receipt that found its message becomes
    applied (the message holds the outcome; a message no longer ``sent`` is left as it is); the row stays as the
    receipt's de-duplication record until :func:`prune_applied_receipts`.  One whose message has no msgid yet
    becomes pending (:func:`apply_pending_receipts`), MsgID 0 unmatched at once.
    """
    now = timezone.now()
    waiting: dict[int, list[int]] = defaultdict(list)
    with transaction.atomic():
        receipts = list(
            DeliveryReceipt.objects.filter(state=DeliveryReceipt.State.RECEIVED)
            .order_by("pk")
            .select_for_update(skip_locked=True)[:batch_size]
        )
        if not receipts:
            return 0
        candidates = _candidates_by_msgid(receipts)
        outcomes: dict[tuple[str, str, datetime], list[int]] = defaultdict(list)
        done: dict[int, int] = {}
        pending, unmatched, moved = [], [], set()
        for receipt in receipts:
            message = _matching(candidates.get((receipt.account_id, receipt.msgid), []), receipt.openid)
            if message is None and receipt.msgid:
                pending.append(receipt.pk)
                waiting[receipt.account_id].append(receipt.msgid)
                continue
            if message is None:
                unmatched.append(receipt.pk)
                continue
            done[receipt.pk] = message.pk
            if message.status == Message.Status.SENT and message.pk not in moved:
                moved.add(message.pk)
                outcomes[(*_receipt_outcome(receipt.wechat_status), receipt.event_time or now)].append(message.pk)
        for (status, reason, finished_at), message_ids in outcomes.items():
            kind = events.MESSAGE_DELIVERED if status == Message.Status.DELIVERED else events.MESSAGE_FAILED
            events.update_recording(
                Message.objects.filter(pk__in=message_ids, status=Message.Status.SENT),
                kind,
                status=status,
                errmsg=reason[:512],
                finished_at=finished_at,
                updated_at=now,
            )
        if done:
            DeliveryReceipt.objects.filter(pk__in=list(done)).update(
                state=DeliveryReceipt.State.APPLIED,
                resolved_at=now,
                message_id=Case(
                    *(When(pk=pk, then=Value(message_id)) for pk, message_id in done.items()),
                    output_field=BigIntegerField(),
                ),
            )
        DeliveryReceipt.objects.filter(pk__in=pending).update(state=DeliveryReceipt.State.PENDING)
        DeliveryReceipt.objects.filter(pk__in=unmatched).update(state=DeliveryReceipt.State.UNMATCHED, resolved_at=now)
    for account_id, msgids in waiting.items():
        # The worker may have stored a msgid after our look-up and looked for pending receipts before our commit.
        apply_pending_receipts(account_id, msgids)
    return len(receipts)


def apply_pending_receipts(account_id: int, msgids: Sequence[int]) -> int:
    """Apply receipts that arrived before their messages' msgids were stored; returns how many.

    Receipts already given up as unmatched are included: a msgid that lands very late (a worker stalled
    beyond the match window) still finds its receipt, so no report from WeChat is ever lost.
    """
    if not msgids:
        return 0
    waiting = (DeliveryReceipt.State.PENDING, DeliveryReceipt.State.UNMATCHED)
    receipts = list(
        DeliveryReceipt.objects.filter(account_id=account_id, msgid__gt=0, msgid__in=list(msgids), state__in=waiting)
    )
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


def prune_applied_receipts(older_than: datetime) -> int:
    """Delete applied receipts received before ``older_than``; returns how many.

    Their messages hold the outcome, and a receipt is only kept this long so that a retry or a replay of it inserts
    nothing (the caller passes the callbacks' replay window).  Deleted in short batches, as each is a write
    transaction that callbacks on SQLite wait behind.
    """
    deleted = 0
    applied = DeliveryReceipt.objects.filter(state=DeliveryReceipt.State.APPLIED, received_at__lt=older_than)
    while batch := list(applied.values_list("pk", flat=True)[:PRUNE_BATCH_SIZE]):
        deleted += DeliveryReceipt.objects.filter(pk__in=batch).delete()[0]
    return deleted
