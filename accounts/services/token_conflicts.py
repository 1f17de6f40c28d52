"""Recording the access_token conflicts the token manager detects (``wxnotify.wechat.tokens.token_conflict``).

A conflict is another system replacing a token we still held as fresh, the cause of most 40001s: it is recorded
per account so that a run of them raises an alarm on the dashboard, the account's admin page and ``/metrics``.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import DatabaseError

from accounts.models import OfficialAccount, TokenConflict

logger = logging.getLogger("wxnotify.accounts")


def record_token_conflict(sender: Any, *, appid: str, errcode: int, **kwargs: Any) -> None:
    """Receiver of ``token_conflict``: one row per conflict.  It runs on the send path, inside the token lock, so a
    database failure is logged and swallowed: the send goes on with a fresh token either way."""
    try:
        account_id = OfficialAccount.objects.filter(appid=appid).values_list("pk", flat=True).first()
        if account_id is not None:
            TokenConflict.objects.create(account_id=account_id, errcode=errcode)
    except DatabaseError:
        logger.warning("Could not record the access_token conflict of %s", appid, exc_info=True)
