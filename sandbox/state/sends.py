"""Template messages: /cgi-bin/message/template/send checked like WeChat checks it, de-duplicated per
``client_msg_id``, recorded for inspection; and the account's template list.

De-duplication: a resend of a (recipient, ``client_msg_id``) within ``Faults.dedupe_window_s`` is answered with
the first msgid and not delivered again; one after the window is delivered again and counted as a redelivery.
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from sandbox.state.accounts import Account
from sandbox.state.errors import ReplyDropped, SandboxError
from sandbox.state.faults import DROP_CLOSE, DROP_HANG, DROP_MIXED
from sandbox.state.ledger import LedgerMixin
from sandbox.state.receipts import ReceiptsMixin
from sandbox.state.tokens import TokensMixin

# A \\uXXXX escape of a non-ASCII character, not preceded by an escaping backslash.
NON_ASCII_ESCAPE_RE = re.compile(rb"(?<!\\)\\u(?!00[0-7][0-9a-fA-F])[0-9a-fA-F]{4}")


@dataclass(frozen=True, slots=True)
class SendRecord:
    """One authenticated template send as the sandbox handled it, for ``GET /sandbox/sends``.

    ``outcome`` is ``delivered`` (first delivery), ``deduplicated`` (a resend inside the window, answered with
    the first msgid and not delivered), ``redelivered`` (a resend after the window: delivered again) or
    ``failed`` (answered ``errcode``).  ``time`` is the Unix time the sandbox handled it.
    """

    time: float
    appid: str
    touser: str
    client_msg_id: str
    outcome: str
    errcode: int
    msgid: int | None
    reply_dropped: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "appid": self.appid,
            "touser": self.touser,
            "client_msg_id": self.client_msg_id,
            "outcome": self.outcome,
            "errcode": self.errcode,
            "msgid": self.msgid,
            "reply_dropped": self.reply_dropped,
        }


class SendsMixin(ReceiptsMixin, TokensMixin, LedgerMixin):
    """Template sends and what they leave behind: delivered messages, the send log, the de-duplication memory."""

    messages: deque[dict[str, Any]]
    send_log: deque[SendRecord]
    # (appid, touser, client_msg_id) → (msgid, monotonic time of delivery), oldest first, within the window.
    _dedupe: dict[tuple[str, str, str], tuple[int, float]]
    # Every (appid, touser, client_msg_id) delivered, oldest first, to tell a redelivery from a first one.
    _delivered_keys: dict[tuple[str, str, str], None]

    def _reset_sends(self) -> None:
        self.messages = deque(maxlen=self.message_capacity)
        self.send_log = deque(maxlen=self.message_capacity)
        self._dedupe = {}
        self._delivered_keys = {}

    def send_template(self, access_token: str | None, body: bytes) -> dict[str, Any]:
        """/cgi-bin/message/template/send, validated like WeChat validates category templates.

        Every authenticated send is recorded in ``send_log``; a reply lost to the ``drop_reply_*`` faults is
        lost after the send was recorded, as when WeChat delivered but the answer never came back.
        """
        parse_error: int | None = None
        payload: Any = None
        if b"\\u" in body and NON_ASCII_ESCAPE_RE.search(body):
            parse_error = 40033
        else:
            try:
                payload = json.loads(body)
            except ValueError:
                parse_error = 47001
            if not isinstance(payload, dict) or not isinstance(payload.get("data", {}), dict):
                parse_error = 47001
        fields_given = payload if isinstance(payload, dict) else {}
        touser = str(fields_given.get("touser") or "")
        client_msg_id = str(fields_given.get("client_msg_id") or "")
        with self.lock:
            account = self.authenticate(access_token)
            account.counters.sends += 1
            try:
                msgid, outcome = self._accept_send(account, fields_given, parse_error, touser, client_msg_id)
            except SandboxError as error:
                self._log_send(account, touser, client_msg_id, "failed", error.errcode, None, dropped=False)
                raise
            dropped = self._dropped_reply_mode()
            self._log_send(account, touser, client_msg_id, outcome, 0, msgid, dropped=dropped is not None)
            if dropped is not None:
                account.counters.replies_dropped += 1
                raise ReplyDropped(dropped, self.faults.drop_reply_hang_ms)
        return {"errcode": 0, "errmsg": "ok", "msgid": msgid}

    def _accept_send(
        self, account: Account, payload: dict[str, Any], parse_error: int | None, touser: str, client_msg_id: str
    ) -> tuple[int, str]:
        """Check, de-duplicate and deliver one send (the lock is held); returns its msgid and outcome."""
        faults = self.faults
        if faults.error_rate and self._random.random() < faults.error_rate:
            raise self._fail(account, faults.error_code)
        if parse_error is not None:
            raise self._fail(account, parse_error)
        self._check_recipient(account, touser)
        template = account.templates.get(str(payload.get("template_id") or ""))
        if template is None:
            raise self._fail(account, 40037)
        data = payload.get("data") or {}
        problem = template.data_problem(data)
        if problem is not None:
            raise self._fail(account, 47003, problem)
        now = time.monotonic()
        self._prune_dedupe(now)
        dedupe_key = (account.appid, touser, client_msg_id)
        if client_msg_id and dedupe_key in self._dedupe:
            account.counters.duplicates += 1
            return self._dedupe[dedupe_key][0], "deduplicated"
        self._spend_quota(account)
        msgid = next(self._ids)
        outcome = "delivered"
        if client_msg_id:
            self._dedupe[dedupe_key] = (msgid, now)
            if dedupe_key in self._delivered_keys:
                outcome = "redelivered"
                account.counters.redelivered += 1
            else:
                self._delivered_keys[dedupe_key] = None
                if len(self._delivered_keys) > self.message_capacity:
                    del self._delivered_keys[next(iter(self._delivered_keys))]
        account.counters.delivered += 1
        self.messages.append(
            {
                "msgid": msgid,
                "appid": account.appid,
                "touser": touser,
                "template_id": template.template_id,
                "data": data,
                "url": payload.get("url"),
                "miniprogram": payload.get("miniprogram"),
                "client_msg_id": client_msg_id or None,
                "time": time.time(),
            }
        )
        self._queue_receipt(account, touser, msgid)
        return msgid, outcome

    def _dropped_reply_mode(self) -> str | None:
        """``close`` or ``hang`` when this reply is to be dropped (the drop_reply_* faults), else None."""
        faults = self.faults
        if not faults.drop_reply_rate or self._random.random() >= faults.drop_reply_rate:
            return None
        if faults.drop_reply_mode == DROP_MIXED:
            return self._random.choice((DROP_CLOSE, DROP_HANG))
        return faults.drop_reply_mode

    def _log_send(
        self,
        account: Account,
        touser: str,
        client_msg_id: str,
        outcome: str,
        errcode: int,
        msgid: int | None,
        *,
        dropped: bool,
    ) -> None:
        self.send_log.append(
            SendRecord(time.time(), account.appid, touser, client_msg_id, outcome, errcode, msgid, dropped)
        )

    def _check_recipient(self, account: Account, touser: str) -> None:
        if touser.startswith("unsub_"):
            raise self._fail(account, 43004)
        if touser.startswith("block_"):
            raise self._fail(account, 43101)
        follower = account.followers.get(touser)
        if follower is None:
            raise self._fail(account, 40003)
        if not follower.subscribe:
            raise self._fail(account, 43004)

    def _prune_dedupe(self, now: float) -> None:
        # Insertion order is time order, so expired entries are always at the front.
        while self._dedupe:
            key = next(iter(self._dedupe))
            if now - self._dedupe[key][1] < self.faults.dedupe_window_s:
                break
            del self._dedupe[key]

    def private_templates(self, access_token: str | None) -> dict[str, Any]:
        with self.lock:
            account = self.authenticate(access_token)
            return {"template_list": [template.as_api() for template in account.templates.values()]}

    def list_sends(
        self, appid: str | None = None, since: float | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Recorded sends (see :class:`SendRecord`), oldest first; ``since`` is a Unix time, ``limit`` keeps the
        most recent ones."""
        with self.lock:
            found = [
                record
                for record in self.send_log
                if (appid is None or record.appid == appid) and (since is None or record.time >= since)
            ]
        found = found[-limit:] if limit else found
        return [record.as_dict() for record in found]

    def list_messages(
        self, appid: str | None = None, touser: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Delivered messages, oldest first; ``limit`` keeps the most recent ones."""
        with self.lock:
            found = [
                message
                for message in self.messages
                if (appid is None or message["appid"] == appid) and (touser is None or message["touser"] == touser)
            ]
        return found[-limit:] if limit else found
