"""The one place that turns an :class:`OfficialAccount` into a WeChat API client."""

from __future__ import annotations

from accounts.models import OfficialAccount
from wxnotify.wechat.client import WeChatClient
from wxnotify.wechat.tokens import default_token_manager


def wechat_client_for(account: OfficialAccount) -> WeChatClient:
    """A client for ``account`` sharing the process-wide token manager, so its token memo is reused."""
    return WeChatClient(account.credentials(), token_manager=default_token_manager())
