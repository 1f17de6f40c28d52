"""The run-time fault knobs of the sandbox (latency, errors, token lifetime, receipts, lost replies, de-duplication)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

DEDUPE_WINDOW_S = 600.0
# How a dropped reply goes missing: the connection is closed at once, or held unanswered until the client gives
# up (its read timeout), or either one at random.
DROP_CLOSE = "close"
DROP_HANG = "hang"
DROP_MIXED = "mixed"
DROP_REPLY_MODES = (DROP_CLOSE, DROP_HANG, DROP_MIXED)


@dataclass
class Faults:
    """Run-time knobs; ``error_rate`` of sends answer ``error_code`` instead of delivering.

    ``latency_ms`` delays each send, ``user_latency_ms`` each ``user/get``, ``user/info`` and batchget call:
    WeChat's round trip, which is what decides how long a follower sync of a big account takes.

    ``drop_reply_rate`` of the sends that succeed (delivered, or de-duplicated) lose their reply *after* the
    sandbox recorded them, the case a client cannot tell from a send that never arrived: ``drop_reply_mode``
    ``close`` closes the connection without an answer, ``hang`` answers nothing until the client closes the
    connection (its read timeout) or ``drop_reply_hang_ms`` pass, ``mixed`` picks one of the two per reply.
    ``dedupe_window_s`` is how long a ``client_msg_id`` is remembered per recipient (WeChat: about 10 minutes);
    a resend after it is delivered again, so a test can catch a blind resend without waiting ten minutes.

    ``bizsend_msgid`` off makes ``/cgi-bin/message/subscribe/bizsend`` answer without a msgid (the official-account
    page documents only errcode/errmsg); its ``subscribe_msg_sent_event`` still names the MsgID.
    ``sent_event_error_code`` is the ``ErrorCode`` those events report (0: ``success``; anything else reports the
    delivery failed, ``ErrorStatus`` ``failed``).
    """

    latency_ms: int = 0
    user_latency_ms: int = 0
    error_rate: float = 0.0
    error_code: int = -1
    token_ttl: int = 7200
    receipts: bool = True
    receipt_delay_ms: int = 300
    drop_reply_rate: float = 0.0
    drop_reply_mode: str = DROP_CLOSE
    drop_reply_hang_ms: int = 30_000
    dedupe_window_s: float = DEDUPE_WINDOW_S
    bizsend_msgid: bool = True
    sent_event_error_code: int = 0

    def update(self, **changes: Any) -> None:
        """Apply ``changes``; all of them are checked before any is applied, so a refused update changes nothing."""
        known = {f.name: f.type for f in fields(self)}
        converted: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault setting {name!r}")
            converted[name] = {"int": int, "float": float, "bool": bool, "str": str}[known[name]](value)
        for name, value in converted.items():
            if name in ("error_rate", "drop_reply_rate") and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
            if name in ("latency_ms", "user_latency_ms", "receipt_delay_ms", "drop_reply_hang_ms") and value < 0:
                raise ValueError(f"{name} must not be negative")
            if name == "token_ttl" and value < 1:
                raise ValueError("token_ttl must be at least 1 second")
            if name == "dedupe_window_s" and value <= 0:
                raise ValueError("dedupe_window_s must be positive")
            if name == "drop_reply_mode" and value not in DROP_REPLY_MODES:
                raise ValueError(f"drop_reply_mode must be one of {', '.join(DROP_REPLY_MODES)}")
        for name, value in converted.items():
            setattr(self, name, value)
