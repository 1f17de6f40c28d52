"""Delivery receipts: apply WeChat's TEMPLATESENDJOBFINISH and subscribe_msg_sent_event reports to their messages,
exactly once, whichever arrives first (the receipt or the sending worker's write-back of the msgid).

A callback only stores its receipt (:mod:`messaging.services.receipt_records`); :func:`apply_received_receipts`
applies the stored ones in batches, the send pipeline's write-back applies those that were waiting for their
message (:func:`apply_pending_receipts`, :func:`apply_pending_subscription_receipts`), and the sweeper gives up on
those that wait too long (:func:`resolve_stale_receipts`).

Subscription notifications differ in two ways.  ``bizsend``'s answer to an official account may carry no msgid
(the client returns None), while the receipt always names its ``MsgID``: a subscription receipt that finds no
message by msgid is matched by recipient and template to the oldest such message still without a msgid, which then
takes the receipt's msgid.  And a subscription notification whose attempt went unanswered is failed with errcode
-9001 rather than resent (``bizsend`` takes no client_msg_id, see :mod:`messaging.outcomes`): its receipt is the
only word on what happened, so it may turn that message delivered (or failed with WeChat's ErrorCode) — see
:func:`_subscription_candidates`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime

from django.db import connections, router, transaction
from django.db.models import BigIntegerField, Case, F, Q, Value, When
from django.utils import timezone
from django.utils.translation import gettext as _

from messaging import events
from messaging.models import Channel, DeliveryReceipt, Message
from subscriptions.services import consume_credits
from wxnotify.wechat.errors import OUTCOME_UNKNOWN_ERRCODE

logger = logging.getLogger("wxnotify.messaging")

# Receipts applied in one transaction: a burst's receipts in a few hundred statements rather than a few per receipt.
RECEIPT_BATCH_SIZE = 500
# Applied receipts deleted per statement by prune_applied_receipts.
PRUNE_BATCH_SIZE = 5000
# The states of a receipt still looking for its message (an unmatched one is found by a msgid that lands late).
WAITING_STATES = (DeliveryReceipt.State.PENDING, DeliveryReceipt.State.UNMATCHED)


def _receipt_outcome(status: str) -> tuple[str, str]:
    """(message status, reason) for a TEMPLATESENDJOBFINISH status (``success``, ``failed:user block``, …)."""
    if status.lower() == "success":
        return Message.Status.DELIVERED, ""
    return Message.Status.FAILED, _("WeChat could not deliver it: %(status)s") % {"status": status}


def _subscription_outcome(error_code: int | None, error_status: str) -> tuple[str, int | None, str]:
    """(message status, errcode, reason) for a ``subscribe_msg_sent_event`` item: ``ErrorCode`` 0 is delivered."""
    if error_code == 0:
        return Message.Status.DELIVERED, None, ""
    reason = _("WeChat could not deliver it: ErrorStatus %(status)s, ErrorCode %(code)s") % {
        "status": error_status or "-",
        "code": "-" if error_code is None else error_code,
    }
    return Message.Status.FAILED, error_code, reason


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


def _awaiting_subscription_receipt() -> Q:
    """Subscription notifications a receipt may still settle: sent, or failed because their outcome was unknown."""
    return Q(status=Message.Status.SENT) | Q(status=Message.Status.FAILED, errcode=OUTCOME_UNKNOWN_ERRCODE)


def _find_sent_message(account_id: int, msgid: int, openid: str) -> Message | None:
    candidates = Message.objects.filter(account_id=account_id, msgid=msgid)
    if openid:
        return candidates.filter(touser=openid).first() or candidates.first()
    return candidates.first()


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
    for message in Message.objects.filter(wanted).only(
        "id", "account_id", "msgid", "touser", "status", "channel", "errcode"
    ):
        candidates[(message.account_id, message.msgid)].append(message)
    return candidates


def _matching(candidates: list[Message], openid: str) -> Message | None:
    """The message a receipt reports on, chosen as :func:`_find_sent_message` chooses it."""
    if openid:
        for message in candidates:
            if message.touser == openid:
                return message
    return candidates[0] if candidates else None


def _subscription_candidates(receipts: Sequence[DeliveryReceipt]) -> dict[tuple[int, str, str], list[Message]]:
    """Subscription notifications without a msgid that the receipts may report on, in one query, oldest first by
    (account, openid, priTmplId); call it inside a transaction.

    Sent ones (bizsend answered without a msgid), and failed ones whose outcome was unknown (errcode -9001: no
    answer, or their worker died; they were not resent because bizsend cannot be de-duplicated).  WeChat reports
    each send it accepted, so a receipt for a message we could not hear about proves it reached WeChat, and its
    ErrorCode is the message's real outcome: the receipt turns it delivered (or failed with that ErrorCode).  With
    several candidates the oldest is taken: WeChat reports in the order it sends, and when a receipt of a later send
    settles an earlier unknown one, the count of delivered messages per user and template is still right.
    """
    keys = {(r.account_id, r.openid, r.template_id) for r in receipts}
    if not keys:
        return {}
    wanted = Q()
    for account_id, openid, pri_tmpl_id in keys:
        wanted |= Q(account_id=account_id, touser=openid, template_id_sent=pri_tmpl_id)
    found: dict[tuple[int, str, str], list[Message]] = defaultdict(list)
    # Locked, skipping those another applier holds: two receipts applied side by side (a batch, and a write-back
    # looking for its early receipts) must not both settle one message and leave the other waiting for ever.
    messages = (
        Message.objects.filter(wanted, _awaiting_subscription_receipt(), channel=Channel.SUBSCRIBE, msgid__isnull=True)
        .only("id", "account_id", "touser", "template_id_sent", "status", "errcode")
        .order_by("pk")
        .select_for_update(skip_locked=True, of=("self",))
    )
    for message in messages:
        found[(message.account_id, message.touser, message.template_id_sent)].append(message)
    return found


def _settle_subscriptions(
    receipts: Sequence[DeliveryReceipt], candidates_by_msgid: dict[tuple[int, int], list[Message]], now: datetime
) -> dict[int, int]:
    """Apply subscription receipts: each to the subscription notification of its msgid (among
    ``candidates_by_msgid``, :func:`_candidates_by_msgid`'s answer) or else to the oldest candidate of
    :func:`_subscription_candidates`; one UPDATE per outcome.  Returns receipt id → message id of those that found
    their message; the others are left to wait.

    A message failed with -9001 that a receipt settles spent a credit at WeChat that our write-back never counted:
    it is spent here.
    """
    done: dict[int, int] = {}
    by_msgid: dict[int, Message] = {}
    for receipt in receipts:
        numbered = [
            message
            for message in candidates_by_msgid.get((receipt.account_id, receipt.msgid), [])
            if message.channel == Channel.SUBSCRIBE
        ]
        if found := _matching(numbered, receipt.openid):
            by_msgid[receipt.pk] = found
    unnumbered = [receipt for receipt in receipts if receipt.pk not in by_msgid]
    candidates = _subscription_candidates(unnumbered)
    outcomes: dict[tuple[str, int | None, str, datetime], dict[int, int | None]] = defaultdict(dict)
    spent: dict[tuple[int, str, str], int] = defaultdict(int)
    for receipt in receipts:
        message = by_msgid.get(receipt.pk)
        new_msgid = None
        if message is None:
            waiting = candidates.get((receipt.account_id, receipt.openid, receipt.template_id))
            if not waiting:
                continue
            message = waiting.pop(0)
            new_msgid = receipt.msgid or None
        done[receipt.pk] = message.pk
        unknown = message.status == Message.Status.FAILED and message.errcode == OUTCOME_UNKNOWN_ERRCODE
        if message.status != Message.Status.SENT and not unknown:
            continue  # settled before, by another report of it
        message.status = Message.Status.DELIVERED  # taken: a second receipt in the batch leaves it alone
        message.errcode = None
        outcome = _subscription_outcome(receipt.error_code, receipt.wechat_status)
        outcomes[(*outcome, receipt.event_time or now)][message.pk] = new_msgid
        if unknown:
            spent[(receipt.account_id, receipt.template_id, receipt.openid)] += 1
    for (status, errcode, reason, finished_at), messages in outcomes.items():
        kind = events.MESSAGE_DELIVERED if status == Message.Status.DELIVERED else events.MESSAGE_FAILED
        numbered = [When(pk=pk, then=Value(msgid)) for pk, msgid in messages.items() if msgid]
        events.update_recording(
            Message.objects.filter(_awaiting_subscription_receipt(), pk__in=list(messages), channel=Channel.SUBSCRIBE),
            kind,
            status=status,
            errcode=errcode,
            errmsg=reason[:512],
            finished_at=finished_at,
            updated_at=now,
            msgid=Case(*numbered, default=F("msgid"), output_field=BigIntegerField()) if numbered else F("msgid"),
        )
    for (account_id, pri_tmpl_id, openid), count in spent.items():
        consume_credits(account_id, pri_tmpl_id, [openid], count)
    return done


def _mark_applied(done: dict[int, int], now: datetime, *, only_waiting: bool = False) -> int:
    """Mark receipts applied with their message, in one UPDATE; ``only_waiting``: only those still waiting.

    Written as SQL (``CASE id WHEN … THEN …``): the ORM's ``Case(When(...))`` of a full batch spent most of a batch's
    CPU building and copying its 500 expressions, more than everything else the batch does.
    """
    if not done:
        return 0
    connection = connections[router.db_for_write(DeliveryReceipt)]
    meta = DeliveryReceipt._meta
    table, column = connection.ops.quote_name(meta.db_table), connection.ops.quote_name
    pk, message = column(meta.pk.column), column(meta.get_field("message").column)
    state, resolved_at = column(meta.get_field("state").column), column(meta.get_field("resolved_at").column)
    cases = " ".join(["WHEN %s THEN %s"] * len(done))
    ids = ", ".join(["%s"] * len(done))
    sql = (
        f"UPDATE {table} SET {state} = %s, {resolved_at} = %s, {message} = CASE {pk} {cases} END "  # noqa: S608 -- names quoted, values bound
        f"WHERE {pk} IN ({ids})"
    )
    params: list[object] = [DeliveryReceipt.State.APPLIED.value, connection.ops.adapt_datetimefield_value(now)]
    params += [value for pair in done.items() for value in pair]
    params += list(done)
    if only_waiting:
        sql += f" AND {state} IN ({', '.join(['%s'] * len(WAITING_STATES))})"
        params += [waiting.value for waiting in WAITING_STATES]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def apply_received_receipts(*, batch_size: int = RECEIPT_BATCH_SIZE) -> int:
    """Apply one batch of received receipts to their messages; returns how many receipts it took (0: none left).

    One transaction: the batch is locked (a concurrent applier skips it on PostgreSQL; SQLite has one writer), the
    messages are found with one query and moved with one UPDATE per outcome, and every receipt of the batch leaves
    the received state, so each is applied exactly once whatever fails.  A receipt that found its message becomes
    applied (the message holds the outcome; a message no longer ``sent`` is left as it is); the row stays as the
    receipt's de-duplication record until :func:`prune_applied_receipts`.  One whose message has no msgid yet
    becomes pending (:func:`apply_pending_receipts`), MsgID 0 unmatched at once.  Subscription receipts take the
    same path and, only when the batch holds some, one more query (:func:`_settle_subscriptions`); one that finds
    no message waits as pending too, for its msgid or its message's write-back.
    """
    now = timezone.now()
    waiting: dict[int, list[int]] = defaultdict(list)
    waiting_subscriptions: set[tuple[int, str, str]] = set()
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
        subscriptions: list[DeliveryReceipt] = []
        for receipt in receipts:
            if receipt.channel == Channel.SUBSCRIBE:
                subscriptions.append(receipt)
                continue
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
        if subscriptions:
            settled = _settle_subscriptions(subscriptions, candidates, now)
            done.update(settled)
            for receipt in subscriptions:
                if receipt.pk not in settled:
                    pending.append(receipt.pk)
                    waiting_subscriptions.add((receipt.account_id, receipt.openid, receipt.template_id))
                    if receipt.msgid:
                        waiting[receipt.account_id].append(receipt.msgid)
        _mark_applied(done, now)
        DeliveryReceipt.objects.filter(pk__in=pending).update(state=DeliveryReceipt.State.PENDING)
        DeliveryReceipt.objects.filter(pk__in=unmatched).update(state=DeliveryReceipt.State.UNMATCHED, resolved_at=now)
    for account_id, msgids in waiting.items():
        # The worker may have stored a msgid after our look-up and looked for pending receipts before our commit.
        apply_pending_receipts(account_id, msgids)
    if waiting_subscriptions:
        apply_pending_subscription_receipts(waiting_subscriptions)
    return len(receipts)


def apply_pending_receipts(account_id: int, msgids: Sequence[int]) -> int:
    """Apply receipts that arrived before their messages' msgids were stored; returns how many.

    Receipts already given up as unmatched are included: a msgid that lands very late (a worker stalled
    beyond the match window) still finds its receipt, so no report from WeChat is ever lost.
    """
    if not msgids:
        return 0
    receipts = list(
        DeliveryReceipt.objects.filter(
            account_id=account_id, msgid__gt=0, msgid__in=list(msgids), state__in=WAITING_STATES
        )
    )
    applied = 0
    for receipt in receipts:
        if receipt.channel == Channel.SUBSCRIBE:
            applied += _apply_pending_subscriptions([receipt])
            continue
        message = _find_sent_message(account_id, receipt.msgid, receipt.openid)
        if message is None:
            continue
        _apply_receipt(message.pk, receipt.wechat_status, receipt.event_time)
        applied += DeliveryReceipt.objects.filter(pk=receipt.pk, state__in=WAITING_STATES).update(
            state=DeliveryReceipt.State.APPLIED, message=message, resolved_at=timezone.now()
        )
    return applied


def apply_pending_subscription_receipts(keys: Iterable[tuple[int, str, str]]) -> int:
    """Apply the waiting subscription receipts of these (account id, openid, priTmplId): the write-back of messages
    bizsend accepted without a msgid calls it, as receipts may have arrived first.  Returns how many it applied."""
    wanted = Q()
    for account_id, openid, pri_tmpl_id in set(keys):
        wanted |= Q(account_id=account_id, openid=openid, template_id=pri_tmpl_id)
    if not wanted:
        return 0
    receipts = DeliveryReceipt.objects.filter(wanted, channel=Channel.SUBSCRIBE, state__in=WAITING_STATES)
    return _apply_pending_subscriptions(list(receipts.order_by("pk")))


def _apply_pending_subscriptions(receipts: list[DeliveryReceipt]) -> int:
    """Settle waiting subscription receipts in one transaction, locked so that two appliers (a write-back and the
    receipt task) never apply one twice; returns how many were applied."""
    if not receipts:
        return 0
    now = timezone.now()
    with transaction.atomic():
        locked = list(
            DeliveryReceipt.objects.filter(pk__in=[r.pk for r in receipts], state__in=WAITING_STATES)
            .order_by("pk")
            .select_for_update(skip_locked=True)
        )
        settled = _settle_subscriptions(locked, _candidates_by_msgid(locked), now)
        return _mark_applied(settled, now, only_waiting=True)


def resolve_stale_receipts(older_than: datetime) -> tuple[int, int]:
    """Apply pending receipts received before ``older_than`` whose message now has its msgid, mark the rest unmatched.

    Returns (applied, unmatched).
    """
    applied = unmatched = 0
    stale = DeliveryReceipt.objects.filter(state=DeliveryReceipt.State.PENDING, received_at__lt=older_than)
    for account_id, msgid in stale.filter(msgid__gt=0).values_list("account_id", "msgid").distinct().iterator():
        applied += apply_pending_receipts(account_id, [msgid])
    # Subscription receipts also match messages without a msgid, e.g. one failed meanwhile as outcome unknown.
    keys = set(stale.filter(channel=Channel.SUBSCRIBE).values_list("account_id", "openid", "template_id"))
    if keys:
        applied += apply_pending_subscription_receipts(keys)
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
