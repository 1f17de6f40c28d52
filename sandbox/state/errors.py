"""How the fake WeChat API fails: WeChat's errcodes and messages, and the lost reply of the drop_reply_* faults."""

from __future__ import annotations

import secrets
from typing import Any

ERRMSG = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40013: "invalid appid",
    40032: "invalid openid list size",
    40033: "invalid charset. please check your request, if include \\uxxxx will create fail!",
    40037: "invalid template_id",
    40097: "invalid args",
    40125: "invalid appsecret",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    42001: "access_token expired",
    43004: "require subscribe",
    43101: "user refuse to accept the msg",
    43117: "Sending messages to this openid too frequently,please try later",
    45009: "reach max api daily quota limit",
    45011: "api minute-quota reach limit, must slower, retry next minute",
    47001: "data format error",
    47003: "argument invalid!",
    48001: "api unauthorized",
    48006: "forbid to clear quota because of reaching the limit",
    # The subscription template APIs (docs/wechat-api.md §4.3; WxJava's WxOpenErrorMsgEnum words them so).
    200011: "account has been banned",
    200012: "private template count reach limit",
    200013: "template has been banned",
    200014: "invalid tid",
    200016: "invalid start",
    200017: "invalid limit",
    200018: "missing ids",
    200019: "invalid ids",
    200020: "invalid kidList",
    200021: "invalid sceneDesc",
}


class ReplyDropped(Exception):
    """A send was handled (delivered or de-duplicated) but its reply is lost: the HTTP layer answers nothing.

    ``mode`` is ``close`` or ``hang`` (a ``mixed`` setting is resolved to one of them per reply).
    """

    def __init__(self, mode: str, hang_ms: int) -> None:
        self.mode = mode
        self.hang_ms = hang_ms
        super().__init__(f"reply dropped ({mode})")


class SandboxError(Exception):
    """An API failure answered as ``{"errcode": …, "errmsg": …}`` (HTTP 200, like WeChat)."""

    def __init__(self, errcode: int, detail: str | None = None) -> None:
        self.errcode = errcode
        self.detail = detail or ERRMSG.get(errcode, "sandbox error")
        super().__init__(f"{errcode} {self.detail}")

    def as_reply(self) -> dict[str, Any]:
        # WeChat appends a request id to every error message; clients must not match errmsg exactly.
        return {"errcode": self.errcode, "errmsg": f"{self.detail} rid: {secrets.token_hex(4)}-{secrets.token_hex(4)}"}
