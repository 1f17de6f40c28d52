"""django-q2 task entry points of the accounts app; their dotted paths are stored in Schedule and task rows."""

from __future__ import annotations

import logging

from django.conf import settings

from accounts.clients import wechat_client_for
from accounts.models import FollowerSync, OfficialAccount
from accounts.services import poll_quotas, update_follower_profile
from accounts.services import run_follower_sync as run_sync
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


def run_follower_sync(sync_id: int) -> None:
    """Queued by the admin's "Sync followers": run the recorded sync, whose row tells the outcome."""
    sync = FollowerSync.objects.select_related("account").filter(pk=sync_id).first()
    if sync is not None:
        run_sync(sync)


def fetch_follower_profile(follower_id: int) -> None:
    """Queued by the callbacks for a follower they just met: fill its unionid and subscribe scene from WeChat."""
    update_follower_profile(follower_id)


def prune_processed_callbacks() -> int:
    """The old path of ``callbacks.tasks.prune_processed_callbacks``, for task rows queued before the move.

    The "Prune processed WeChat callbacks" schedule named this path until the callback endpoint became the
    ``callbacks`` app; migration ``callbacks.0002`` points the schedule at the new path, but a task the scheduler
    queued just before the upgrade still names this one, and a queued row cannot be rewritten.  Remove this
    function (and its ``ignore_imports`` entry in pyproject.toml) once no deployment can hold such a row.
    """
    from callbacks.tasks import prune_processed_callbacks as prune

    return prune()


def poll_api_quotas() -> int:
    """The scheduled read of every active account's template-send quota at WeChat (see accounts.services.quota)."""
    return poll_quotas()
