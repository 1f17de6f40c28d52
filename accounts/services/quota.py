"""WeChat's count of an account's template sends today, and the monthly "clear quota".

WeChat counts every send of the account, ours and any other system's, and refuses sends past the daily limit with
45009 until midnight Beijing time.  ``poll_quotas`` (a schedule) asks WeChat for that count
(``/cgi-bin/openapi/quota/get``, docs/wechat-api.md "Quotas") and keeps the latest reading per account.
``clear_quota`` resets the count at WeChat (``/cgi-bin/clear_quota``): WeChat allows 10 a month, counting the
clears made in its own console too, so ours are recorded and an 11th in a month is refused before WeChat is asked.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from accounts.clients import wechat_client_for
from accounts.models import OfficialAccount, QuotaClear, QuotaReading
from accounts.selectors import CLEAR_QUOTA_MONTHLY_LIMIT, quota_clears_this_month
from wxnotify.wechat.errors import WeChatError, describe_wechat_error

logger = logging.getLogger("wxnotify.accounts")

TEMPLATE_SEND_PATH = "/cgi-bin/message/template/send"

# Sent after WeChat cleared an account's quota (kwargs: account_id), so the send pipeline lifts its 45009 hold;
# a signal because this app does not import the pipeline.
quota_cleared = Signal()


class QuotaClearRefused(Exception):
    """This month's clears are used up (wxnotify's own count); WeChat was not asked."""


def poll_quota(account: OfficialAccount) -> QuotaReading:
    """Read the account's template-send quota from WeChat and keep it; raises :class:`WeChatError`."""
    quota = wechat_client_for(account).get_api_quota(TEMPLATE_SEND_PATH)
    reading, _created = QuotaReading.objects.update_or_create(
        account=account, defaults={**quota, "read_at": timezone.now()}
    )
    return reading


def poll_quotas() -> int:
    """The schedule: read the quota of every active account; returns how many were read.  One account failing
    (no permission, WeChat down) leaves its last reading in place and the others are still read."""
    read = 0
    for account in OfficialAccount.objects.filter(is_active=True).order_by("pk"):
        try:
            poll_quota(account)
        except WeChatError as error:
            logger.warning("Could not read the quota of %s: %s", account.appid, error)
        except Exception:
            logger.exception("Unexpected error reading the quota of %s", account.appid)
        else:
            read += 1
    return read


def clear_quota(account: OfficialAccount, *, cleared_by: Any) -> QuotaReading | None:
    """Ask WeChat to reset the account's API quotas, record it, lift the send hold and read the quota again.

    Refused (:class:`QuotaClearRefused`) once this month's successful clears reach WeChat's 10.  A WeChat error
    (48006: WeChat's own count is used up, which includes clears made in its console) is recorded and raised.
    Returns the new reading, or None when reading it failed.
    """
    user = cleared_by if getattr(cleared_by, "pk", None) else None
    failure: WeChatError | None = None
    with transaction.atomic():
        # Two admins clicking at once must not both pass the count: the account row serialises them.
        OfficialAccount.objects.select_for_update().filter(pk=account.pk).first()
        if quota_clears_this_month(account.pk, timezone.now()) >= CLEAR_QUOTA_MONTHLY_LIMIT:
            raise QuotaClearRefused
        try:
            wechat_client_for(account).clear_quota()
        except WeChatError as error:
            failure = error
        QuotaClear.objects.create(
            account=account,
            cleared_by=user,
            succeeded=failure is None,
            error=describe_wechat_error(failure)[:500] if failure is not None else "",
        )
    if failure is not None:
        raise failure
    logger.info("Quota of %s cleared at WeChat", account.appid)
    quota_cleared.send(sender=OfficialAccount, account_id=account.pk)
    try:
        return poll_quota(account)
    except WeChatError as error:
        logger.warning("Could not read the quota of %s after clearing it: %s", account.appid, error)
        return None
