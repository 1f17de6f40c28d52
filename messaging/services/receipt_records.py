"""Storing WeChat's delivery reports as they arrive: one row per report, the row its own de-duplication record.

A callback only stores: a ``TEMPLATESENDJOBFINISH`` (:func:`record_delivery_receipts`, one INSERT for the receipts
a web process's requests hand in together) or the items of a ``subscribe_msg_sent_event``
(:func:`record_subscription_receipts`).  Applying them to their messages is :mod:`messaging.services.receipts`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import connections, router
from django.utils import timezone

from accounts.models import OfficialAccount
from messaging.models import Channel, DeliveryReceipt
from wxnotify.outages import write_checking_the_connection_itself

logger = logging.getLogger("wxnotify.messaging")

MAX_MSGID = 2**63 - 1
# An ErrorCode we can keep in an integer column: anything else is stored as unknown (None), and fails the message.
ERROR_CODE_RE = re.compile(r"-?[0-9]{1,9}")


def _normalise_status(wechat_status: str) -> str:
    return " ".join((wechat_status or "").split())


@dataclass(frozen=True)
class ReceivedReceipt:
    """A ``TEMPLATESENDJOBFINISH`` report as a callback hands it over, before it is stored."""

    account_id: int
    msgid: int
    wechat_status: str
    openid: str = ""
    event_time: datetime | None = None


def record_delivery_receipt(
    *,
    account: OfficialAccount,
    msgid: int,
    wechat_status: str,
    openid: str = "",
    event_time: datetime | None = None,
) -> bool:
    """Keep one ``TEMPLATESENDJOBFINISH`` report as *received*; False when it was stored before (a retry).

    See :func:`record_delivery_receipts`, which this calls with one receipt.
    """
    receipt = ReceivedReceipt(account.pk, int(msgid), wechat_status, openid, event_time)
    return record_delivery_receipts([receipt]) == 1


def record_delivery_receipts(receipts: Sequence[ReceivedReceipt]) -> int:
    """Keep WeChat's ``TEMPLATESENDJOBFINISH`` reports as *received*; returns how many were new (not retries).

    One ``INSERT … ON CONFLICT DO NOTHING`` for all of them: the row is the receipt's de-duplication record too
    (unique per account and msgid, see :class:`~messaging.models.DeliveryReceipt`), so a callback in autocommit
    answers after this one durable write, and a retry of a receipt already stored (or already applied, within the
    replay window, or twice in one call) writes nothing.  The callbacks of one web process hand their receipts in
    together (``callbacks.services.store_receipt``).  Written as SQL rather than through the ORM because a burst of
    receipts runs it hundreds of times a second and the ORM's model and statement building were a large part of its
    cost; PostgreSQL and SQLite both speak this dialect.  Being safe to repeat, the INSERT is its own connection
    check (:func:`wxnotify.outages.write_checking_the_connection_itself`): one round trip, not two.
    :func:`apply_received_receipts` applies the receipts a moment later in batches (run by the task that
    :func:`messaging.dispatch.request_receipt_application` starts, and by the sweeper); call that after commit.
    """
    if not receipts:
        return 0
    connection = connections[router.db_for_write(DeliveryReceipt)]
    table = connection.ops.quote_name(DeliveryReceipt._meta.db_table)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    received = DeliveryReceipt.State.RECEIVED.value
    values = []
    for receipt in receipts:
        values += [
            receipt.account_id,
            int(receipt.msgid),
            receipt.openid[:64],
            _normalise_status(receipt.wechat_status)[:64],
            connection.ops.adapt_datetimefield_value(receipt.event_time),
            received,
            now,
        ]
    placeholders = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(receipts))
    sql = (
        f"INSERT INTO {table} (account_id, msgid, openid, wechat_status, event_time, state, received_at) "  # noqa: S608 -- name quoted, values bound
        f"VALUES {placeholders} ON CONFLICT DO NOTHING"
    )

    def insert() -> int:
        with connection.cursor() as cursor:
            cursor.execute(sql, values)
            return cursor.rowcount

    return write_checking_the_connection_itself(insert, connection.alias)


def record_subscription_receipts(
    *, account: OfficialAccount, openid: str, items: Iterable[Mapping[str, str]], event_time: datetime | None = None
) -> int:
    """Keep the items of a ``subscribe_msg_sent_event`` as *received* receipts; returns how many items it kept.

    One row per ``List`` item (``TemplateId``, ``MsgID``, ``ErrorCode``, ``ErrorStatus``); an item without a template
    id is skipped (logged), a missing or odd MsgID is kept as 0 (the item is then matched by recipient and template
    alone).  The callback calls this inside its exactly-once transaction (``callbacks.services.dispatch_once``), and
    a MsgID seen before inserts nothing, like a repeated TEMPLATESENDJOBFINISH.  :func:`apply_received_receipts`
    applies them; call :func:`messaging.dispatch.request_receipt_application` after commit.
    """
    rows = []
    for item in items:
        pri_tmpl_id = str(item.get("TemplateId", "")).strip()
        if not pri_tmpl_id or len(pri_tmpl_id) > DeliveryReceipt._meta.get_field("template_id").max_length:
            logger.warning("subscribe_msg_sent_event item without a usable TemplateId skipped")
            continue
        msgid = str(item.get("MsgID", "")).strip()
        error_code = str(item.get("ErrorCode", "")).strip()
        rows.append(
            DeliveryReceipt(
                account=account,
                channel=Channel.SUBSCRIBE,
                msgid=int(msgid) if msgid.isdigit() and int(msgid) <= MAX_MSGID else 0,
                openid=openid[:64],
                template_id=pri_tmpl_id,
                error_code=int(error_code) if ERROR_CODE_RE.fullmatch(error_code) else None,
                wechat_status=_normalise_status(str(item.get("ErrorStatus", "")))[:64],
                event_time=event_time,
                state=DeliveryReceipt.State.RECEIVED,
            )
        )
    if rows:
        DeliveryReceipt.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)
