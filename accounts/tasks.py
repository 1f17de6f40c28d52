"""Scheduled work for official accounts."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from accounts.callbacks import dedup_seconds
from accounts.clients import wechat_client_for
from accounts.models import OfficialAccount
from accounts.services import prune_processed_callbacks as prune_older_than
from wxnotify.wechat.errors import WeChatError
from wxnotify.wechat.tokens import default_token_manager

logger = logging.getLogger("wxnotify.accounts")


def refresh_access_tokens() -> int:
    """Renew every active account's token before it expires, so sends never wait for a fetch.

    Returns how many tokens were fetched. Safe to run twice at once (several SQLite clusters can fire the same
    schedule): the token manager re-checks the shared token under its lock, so the second run fetches nothing.
    """
    manager = default_token_manager()
    window = settings.WECHAT_TOKEN_PREFETCH_WINDOW
    refreshed = 0
    for account in OfficialAccount.objects.filter(is_active=True).order_by("pk"):
        try:
            if manager.refresh_if_expiring(wechat_client_for(account), window):
                refreshed += 1
        except WeChatError as exc:
            logger.warning("Could not refresh the access_token of %s: %s", account.appid, exc)
        except Exception:
            # One broken account (or a bug it triggers) must not keep every other account's token from renewing.
            logger.exception("Unexpected error refreshing the access_token of %s", account.appid)
    return refreshed


def prune_processed_callbacks() -> int:
    """Forget processed callbacks once no retry or fresh replay of them can arrive (see ``dedup_seconds``)."""
    return prune_older_than(timezone.now() - timedelta(seconds=dedup_seconds()))
