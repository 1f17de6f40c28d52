"""What WeChat itself knows about our sends: its record of a failed call, the messages it intercepted, and how many
sends its daily quota still allows (docs/wechat-api.md, "WeChat's ledger").

* ``wechat_record``: WeChat keeps a record of every failed call under the ``rid`` it appended to the errmsg, for
  7 days (``/cgi-bin/openapi/rid/get``).  Delivery keeps the rid of a message's last failed call
  (``Message.wechat_rid``); the record shows what WeChat received and answered, masked before anyone sees it.
* ``poll_intercepted``: WeChat may accept a template message and then intercept it (marketing content, a reported
  template); ``/wxa/sec/queryblocktmplmsg`` lists those per template.  A listed message of ours is failed with
  errcode -9005, "intercepted by WeChat".
* ``quota_warnings``: a campaign larger than what WeChat still allows today is accepted, with a warning.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.clients import wechat_client_for
from accounts.models import OfficialAccount
from accounts.selectors import quota_readings, remaining_today
from messaging import events, ratelimit
from messaging.models import InterceptedMessage, Message
from templates_app.models import MessageTemplate
from wxnotify.wechat.errors import INTERCEPTED_ERRCODE, WeChatError, describe_wechat_error
from wxnotify.wechat.records import mask_record

logger = logging.getLogger("wxnotify.messaging")

# WeChat answers rid look-ups for 7 days after the call (76001 later).
RID_RETENTION = timedelta(days=7)
# queryblocktmplmsg pages hold at most 100 records.
BLOCKED_PAGE_SIZE = 100
# An intercepted record matches a message of ours sent this close to the time WeChat gives.
INTERCEPT_MATCH_WINDOW = timedelta(minutes=10)
INTERCEPTED_REASON = "intercepted by WeChat"


@dataclass(frozen=True)
class WeChatRecord:
    """The outcome of a rid look-up: ``state`` is ``found`` (``record`` holds WeChat's masked record), ``none``
    (no failed call with a rid), ``expired`` (past WeChat's 7 days, or WeChat no longer knows it) or ``error``."""

    state: str
    rid: str
    detail: str
    recorded_at: datetime | None = None
    record: dict[str, Any] = field(default_factory=dict)


def wechat_record(message: Message, *, now: datetime | None = None) -> WeChatRecord:
    """Ask WeChat what it recorded of the message's last failed call; after 7 days say so without asking."""
    now = now or timezone.now()
    rid, at = message.wechat_rid, message.wechat_rid_at
    if not rid:
        return WeChatRecord("none", "", _("No failed call of this message carried a WeChat rid."))
    if at is not None and now - at > RID_RETENTION:
        return WeChatRecord("expired", rid, _("WeChat keeps request records for 7 days; this one is older."), at)
    try:
        record = wechat_client_for(message.account).get_rid_info(rid)
    except WeChatError as error:
        if error.errcode == 76001:
            return WeChatRecord("expired", rid, _("WeChat no longer knows this rid (it keeps them 7 days)."), at)
        return WeChatRecord("error", rid, describe_wechat_error(error), at)
    return WeChatRecord("found", rid, _("What WeChat recorded of the call (secrets masked)."), at, mask_record(record))


@dataclass
class InterceptPoll:
    found: int = 0
    matched: int = 0


def poll_intercepted(account: OfficialAccount) -> InterceptPoll:
    """Fetch the account's newly intercepted template messages, template by template, and fail the ones of ours.

    Each template's poll starts after the largest WeChat record id kept for it, so a record is handled once.
    """
    result = InterceptPoll()
    client = wechat_client_for(account)
    template_ids = MessageTemplate.objects.filter(account=account).values_list("template_id", flat=True)
    largest = dict(
        InterceptedMessage.objects.filter(account=account)
        .values_list("template_id")
        .annotate(largest=Max("record_id"))
        .order_by()
    )
    for template_id in template_ids:
        largest_id = largest.get(template_id, 0)
        while True:
            page = client.query_blocked_template_messages(
                template_id=template_id, largest_id=largest_id, limit=BLOCKED_PAGE_SIZE
            )
            for item in page:
                record_id = int(item.get("id") or 0)
                largest_id = max(largest_id, record_id)
                if _record_intercepted(account, template_id, record_id, item, result):
                    result.found += 1
            if len(page) < BLOCKED_PAGE_SIZE:
                break
    return result


def _record_intercepted(
    account: OfficialAccount, template_id: str, record_id: int, item: dict[str, Any], result: InterceptPoll
) -> bool:
    """Keep one intercepted record and fail the message it matches; False when it was kept before."""
    openid = str(item.get("openid") or "")
    stamp = item.get("send_timestamp")
    send_time = dt.datetime.fromtimestamp(int(stamp), tz=dt.UTC) if stamp else None
    title = str(item.get("title") or "")[:200]
    try:
        with transaction.atomic():
            record = InterceptedMessage.objects.create(
                account=account,
                template_id=template_id,
                record_id=record_id,
                openid=openid,
                title=title,
                send_time=send_time,
            )
            message = _matching_message(account, template_id, openid, send_time)
            if message is not None:
                reason = f"{INTERCEPTED_REASON}: {title}" if title else INTERCEPTED_REASON
                now = timezone.now()
                Message.objects.filter(pk=message.pk).update(
                    status=Message.Status.FAILED,
                    errcode=INTERCEPTED_ERRCODE,
                    errmsg=reason[:512],
                    finished_at=now,
                    updated_at=now,
                )
                events.record_messages(events.MESSAGE_FAILED, Message.objects.filter(pk=message.pk))
                record.message = message
                record.save(update_fields=["message"])
                result.matched += 1
    except IntegrityError:
        return False
    return True


def _matching_message(
    account: OfficialAccount, template_id: str, openid: str, send_time: datetime | None
) -> Message | None:
    """The message of ours WeChat intercepted: same account, template and recipient, accepted by WeChat (sent or
    delivered) closest to ``send_time``.  Found through the recipient's index (``message_touser_created``)."""
    candidates = Message.objects.filter(
        account=account,
        touser=openid,
        template_id_sent=template_id,
        status__in=(Message.Status.SENT, Message.Status.DELIVERED),
    )
    if send_time is None:
        return candidates.order_by("-created_at").first()
    window = INTERCEPT_MATCH_WINDOW
    nearby = candidates.filter(
        created_at__lte=send_time + window,
        created_at__gte=send_time - timedelta(days=1),
        sent_at__gte=send_time - window,
        sent_at__lte=send_time + window,
    )
    return min(nearby[:20], key=lambda message: abs(message.sent_at - send_time), default=None)


def poll_all_intercepted() -> int:
    """The schedule: poll every active account; returns how many messages were found intercepted."""
    found = 0
    for account in OfficialAccount.objects.filter(is_active=True).order_by("pk"):
        try:
            found += poll_intercepted(account).found
        except WeChatError as error:
            logger.warning("Could not read the intercepted messages of %s: %s", account.appid, error)
        except Exception:
            logger.exception("Unexpected error reading the intercepted messages of %s", account.appid)
    return found


def quota_warnings(account: OfficialAccount, *, recipients: int, now: datetime | None = None) -> list[str]:
    """Why a campaign of ``recipients`` may not all go out today: WeChat's daily quota left (its latest reading)
    is smaller, or the account is on a 45009 hold.  The campaign is accepted either way; the rest goes tomorrow."""
    now = now or timezone.now()
    warnings = []
    remaining = remaining_today(quota_readings([account.pk]).get(account.pk), now)
    if remaining is not None and recipients > remaining:
        warnings.append(
            _(
                "%(recipients)d recipients, but WeChat allows only %(remaining)d more template messages today for "
                "this account; the rest wait for the quota to reset at midnight Beijing time."
            )
            % {"recipients": recipients, "remaining": remaining}
        )
    until = ratelimit.held_until(account.pk)
    if until is not None:
        warnings.append(
            _("Sending for this account is on hold until %(until)s (see the account's last WeChat error).")
            % {"until": hold_end_text(until)}
        )
    return warnings


def hold_end_text(until: float) -> str:
    """When a hold ends, in the site's time zone."""
    return timezone.localtime(dt.datetime.fromtimestamp(until, tz=dt.UTC)).strftime("%Y-%m-%d %H:%M %Z")


def resume_after_quota_clear(sender: Any, *, account_id: int, **kwargs: Any) -> int:
    """Receiver of ``accounts.services.quota_cleared``: lift the account's hold and make its held messages due now
    (a 45009 hold put them off to midnight Beijing time); the sweeper starts their delivery within a minute."""
    ratelimit.release_hold(account_id)
    now = timezone.now()
    return Message.objects.filter(account_id=account_id, status=Message.Status.QUEUED, next_attempt_at__gt=now).update(
        next_attempt_at=now, updated_at=now
    )
