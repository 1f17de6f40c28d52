"""WeChat's ledger as the sandbox keeps it: the daily quota of template sends, clear_quota (10 a month), the records
of failed calls under their rids (rid/get, 7 days) and the template messages it was told to intercept
(queryblocktmplmsg).

Quota days and months are Beijing time, like WeChat's.  A template send past the account's ``daily_quota`` (100,000
unless its spec says otherwise) is refused with 45009 and not counted.  Every failed API call answered with an errcode
is kept under the rid of its errmsg, with what the client sent, so ``rid/get`` answers like WeChat: the request URL
(access_token included: clients must mask it), the body and the answer.  ``block_message`` makes a delivered message
one WeChat intercepted.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from sandbox.state.accounts import Account
from sandbox.state.base import StateBase
from sandbox.state.errors import SandboxError

WECHAT_TIMEZONE = ZoneInfo("Asia/Shanghai")
DEFAULT_DAILY_QUOTA = 100_000
CLEAR_QUOTA_MONTHLY_LIMIT = 10
RID_RETENTION_S = 7 * 86400
BLOCKED_PAGE_MAX = 100
# The APIs whose quota quota/get reports.
QUOTA_PATHS = frozenset({"/cgi-bin/message/template/send"})
RID_RE = re.compile(r"rid: ([0-9a-f]{8}-[0-9a-f]{8})")
RID_FORMAT_RE = re.compile(r"^[0-9A-Za-z-]{1,64}$")


@dataclass
class FailedCall:
    """A failed call as ``rid/get`` reports it; ``time`` is the Unix time it was answered."""

    appid: str
    time: float
    cost_in_ms: int
    request_url: str
    request_body: str
    response_body: str

    def as_request(self) -> dict[str, Any]:
        return {
            "invoke_time": int(self.time),
            "cost_in_ms": self.cost_in_ms,
            "request_url": self.request_url,
            "request_body": self.request_body,
            "response_body": self.response_body,
            "client_ip": "127.0.0.1",
        }


def _beijing(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, WECHAT_TIMEZONE)


class LedgerMixin(StateBase):
    tokens: dict[str, Any]
    messages: Any
    # (appid, Beijing date) → template sends counted against the quota.
    _quota_used: dict[tuple[str, dt.date], int]
    # appid → Unix times of its clears.
    _quota_clears: dict[str, list[float]]
    failed_calls: dict[str, FailedCall]
    # appid → intercepted template messages, ids growing.
    blocked: dict[str, list[dict[str, Any]]]

    def _reset_ledger(self) -> None:
        self._quota_used = {}
        self._quota_clears = {}
        self.failed_calls = {}
        self.blocked = {}
        self._blocked_ids = 0

    # --- quota ---------------------------------------------------------------------------------------

    def _quota_key(self, account: Account) -> tuple[str, dt.date]:
        return account.appid, _beijing(time.time()).date()

    def _spend_quota(self, account: Account) -> None:
        """Count one template send against today's quota, or refuse it with 45009 (the lock is held)."""
        key = self._quota_key(account)
        if self._quota_used.get(key, 0) >= account.daily_quota:
            raise self._fail(account, 45009)
        self._quota_used[key] = self._quota_used.get(key, 0) + 1

    def quota_get(self, access_token: str | None, payload: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            account = self.authenticate(access_token)
            if str(payload.get("cgi_path") or "") not in QUOTA_PATHS:
                raise self._fail(account, 76021, "cgi_path not found")
            used = self._quota_used.get(self._quota_key(account), 0)
            limit = account.daily_quota
            return {
                "errcode": 0,
                "errmsg": "ok",
                "quota": {"daily_limit": limit, "used": used, "remain": max(0, limit - used)},
            }

    def clear_quota(self, access_token: str | None, payload: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            account = self.authenticate(access_token)
            if str(payload.get("appid") or "") != account.appid:
                raise self._fail(account, 40013)
            now = time.time()
            month = _beijing(now).strftime("%Y-%m")
            clears = [at for at in self._quota_clears.get(account.appid, []) if _beijing(at).strftime("%Y-%m") == month]
            if len(clears) >= CLEAR_QUOTA_MONTHLY_LIMIT:
                raise self._fail(account, 48006)
            self._quota_clears[account.appid] = [*clears, now]
            self._quota_used.pop(self._quota_key(account), None)
            return {"errcode": 0, "errmsg": "ok"}

    # --- rid records ---------------------------------------------------------------------------------

    def record_failed_call(self, path: str, query: dict[str, str], body: bytes, reply: dict[str, Any]) -> None:
        """Keep a call answered with an errcode under the rid of its errmsg, for ``rid/get``."""
        match = RID_RE.search(str(reply.get("errmsg", "")))
        if match is None:
            return
        with self.lock:
            issued = self.tokens.get(query.get("access_token") or "")
            appid = issued.appid if issued is not None else str(query.get("appid") or "")
            self.failed_calls[match.group(1)] = FailedCall(
                appid=appid,
                time=time.time(),
                cost_in_ms=1,
                request_url=urlencode(query),
                request_body=body.decode("utf-8", "replace"),
                response_body=_json_text(reply),
            )

    def rid_get(self, access_token: str | None, payload: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            account = self.authenticate(access_token)
            rid = str(payload.get("rid") or "")
            if not RID_FORMAT_RE.match(rid):
                raise self._fail(account, 76002, "rid is error")
            call = self.failed_calls.get(rid)
            if call is None or time.time() - call.time > RID_RETENTION_S:
                raise self._fail(account, 76001, "rid not found")
            if call.appid != account.appid:
                raise self._fail(account, 76003, "could not query this rid,no permission")
            return {"errcode": 0, "errmsg": "ok", "request": call.as_request()}

    # --- intercepted messages ------------------------------------------------------------------------

    def block_message(self, appid: str, msgid: int) -> dict[str, Any]:
        """Make the delivered message ``msgid`` one WeChat intercepted (listed by queryblocktmplmsg)."""
        with self.lock:
            account = self.accounts.get(appid)
            if account is None:
                raise SandboxError(40013)
            delivered = next((m for m in self.messages if m["appid"] == appid and m["msgid"] == msgid), None)
            if delivered is None:
                raise ValueError(f"no delivered message {msgid} of {appid}")
            template = account.templates.get(delivered["template_id"])
            self._blocked_ids += 1
            record = {
                "id": self._blocked_ids,
                "tmpl_msg_id": delivered["template_id"],
                "title": template.title if template is not None else "",
                "content": "",
                "send_timestamp": int(delivered["time"]),
                "openid": delivered["touser"],
            }
            self.blocked.setdefault(appid, []).append(record)
            return record

    def query_blocked(self, access_token: str | None, payload: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            account = self.authenticate(access_token)
            template_id = str(payload.get("tmpl_msg_id") or "")
            largest_id, limit = payload.get("largest_id"), payload.get("limit")
            if not template_id or not isinstance(largest_id, int) or not isinstance(limit, int):
                raise self._fail(account, 40097)
            if not 1 <= limit <= BLOCKED_PAGE_MAX:
                raise self._fail(account, 40097, "invalid args: limit must be 1 to 100")
            found = [
                record
                for record in self.blocked.get(account.appid, [])
                if record["tmpl_msg_id"] == template_id and record["id"] > largest_id
            ]
            # WeChat's documentation shows msginfo as one record; the sandbox answers a page of them as a list.
            return {"errcode": 0, "errmsg": "ok", "msginfo": [dict(record) for record in found[:limit]]}


def _json_text(reply: dict[str, Any]) -> str:
    return json.dumps(reply, ensure_ascii=False, separators=(",", ":"))
