"""Words for a WeChat error, shared by the sync command and the admin so operators read the same thing."""

from __future__ import annotations

from wxnotify.wechat.errors import WeChatError, describe_errcode


def describe_wechat_error(exc: WeChatError) -> str:
    """e.g. "WeChat error 40125: invalid appsecret — Invalid AppSecret." (errmsg is already redacted by WeChatError)."""
    if exc.errcode is None:
        return str(exc)
    return f"{exc} — {describe_errcode(exc.errcode)}"
