"""The health of an account's credentials: proving they work, remembering WeChat's latest error for the admin,
and flagging an AppSecret that no configured key opens."""

from __future__ import annotations

from django.utils import timezone

from accounts.clients import wechat_client_for
from accounts.models import OfficialAccount
from wxnotify.wechat.errors import (
    SECRET_UNREADABLE_ERRCODE,
    WeChatError,
    describe_errcode,
    describe_wechat_error,
)


def record_wechat_error(account: OfficialAccount, error: WeChatError) -> None:
    """Remember the latest WeChat error of an account so the admin shows it next to the account."""
    now = timezone.now()
    message = describe_wechat_error(error)[:500]
    OfficialAccount.objects.filter(pk=account.pk).update(
        last_error_code=error.errcode, last_error_message=message, last_error_at=now
    )
    account.last_error_code, account.last_error_message, account.last_error_at = error.errcode, message, now


def flag_unreadable_secret(account_id: int) -> None:
    """Say on the account that its AppSecret cannot be decrypted with the configured keys (sending is held).

    Written without loading the account: loading is what fails.
    """
    OfficialAccount.objects.filter(pk=account_id).update(
        last_error_code=SECRET_UNREADABLE_ERRCODE,
        last_error_message=describe_errcode(SECRET_UNREADABLE_ERRCODE)[:500],
        last_error_at=timezone.now(),
    )


def check_connection(account: OfficialAccount) -> None:
    """Prove the credentials work without invalidating a token anyone else uses; raise ``WeChatError`` if not.

    A stable_token fetch in normal mode returns the token already in force, so it is harmless.  A classic
    ``/cgi-bin/token`` fetch would invalidate the token every other system holds, so for those accounts the
    token manager's cached token is used for a cheap read call instead (it fetches only when none is cached).
    """
    client = wechat_client_for(account)
    if account.token_endpoint == OfficialAccount.TokenEndpoint.STABLE:
        client.fetch_access_token()
    else:
        client.get_all_private_templates()
