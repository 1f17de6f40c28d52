"""Faults of one API: the next calls to a given WeChat API answered with an errcode, an HTTP error status, a body
that is not JSON, no answer at all, or late.

``Faults`` are rates and delays over every send; an ``ApiFault`` is exact ("the next call to
/cgi-bin/stable_token answers 40001"), which is how a test provokes one reaction of the client under test.  A
fault that answers is answered before the state sees the call: it changes nothing and counts in no counter
(the request log still records the call).  A fault with only ``delay_ms`` lets the call be handled as usual and
holds the answer back that long, like a slow WeChat.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sandbox.state.base import StateBase
from sandbox.state.faults import DROP_CLOSE, DROP_HANG

# The WeChat APIs the sandbox serves; an API fault names one of them.
WECHAT_APIS = (
    "/cgi-bin/token",
    "/cgi-bin/stable_token",
    "/cgi-bin/message/template/send",
    "/cgi-bin/template/get_all_private_template",
    "/cgi-bin/user/get",
    "/cgi-bin/user/info",
    "/cgi-bin/user/info/batchget",
    "/cgi-bin/qrcode/create",
    "/cgi-bin/showqrcode",
    "/cgi-bin/openapi/quota/get",
    "/cgi-bin/clear_quota",
    "/cgi-bin/openapi/rid/get",
    "/wxa/sec/queryblocktmplmsg",
    "/wxaapi/newtmpl/getcategory",
    "/wxaapi/newtmpl/getpubtemplatetitles",
    "/wxaapi/newtmpl/getpubtemplatekeywords",
    "/wxaapi/newtmpl/addtemplate",
    "/wxaapi/newtmpl/gettemplate",
    "/wxaapi/newtmpl/deltemplate",
    "/cgi-bin/message/subscribe/bizsend",
)
API_FAULT_DROPS = (DROP_CLOSE, DROP_HANG)


@dataclass
class ApiFault:
    """How the next ``times`` calls to ``api`` are answered (``times`` None: every call until the next reset).

    At most one answer: ``errcode`` (HTTP 200 with WeChat's error shape), ``status`` and/or ``body`` (that HTTP
    status with that text, e.g. 502 or a proxy's HTML page), or ``drop`` (``close`` the connection without a
    byte, or ``hang`` until the client gives up).  ``delay_ms`` waits before answering, or alone slows the call.
    """

    api: str
    errcode: int | None = None
    status: int | None = None
    body: str | None = None
    drop: str | None = None
    delay_ms: int = 0
    times: int | None = 1

    def __post_init__(self) -> None:
        if self.api not in WECHAT_APIS:
            raise ValueError(f"api must be one of {', '.join(WECHAT_APIS)}")
        raw = self.status is not None or self.body is not None
        answers = [self.errcode is not None, raw, self.drop is not None]
        if sum(answers) > 1:
            raise ValueError("an API fault answers with one of errcode, status/body or drop")
        if self.errcode is not None and (isinstance(self.errcode, bool) or not isinstance(self.errcode, int)):
            raise ValueError("errcode must be an integer")
        if self.errcode == 0:
            raise ValueError("errcode 0 is a success, not a fault")
        if self.status is not None and (not isinstance(self.status, int) or not 200 <= self.status <= 599):
            raise ValueError("status must be an HTTP status from 200 to 599")
        if self.body is not None and not isinstance(self.body, str):
            raise ValueError("body must be text")
        if self.drop is not None and self.drop not in API_FAULT_DROPS:
            raise ValueError(f"drop must be one of {', '.join(API_FAULT_DROPS)}")
        if not isinstance(self.delay_ms, int) or self.delay_ms < 0:
            raise ValueError("delay_ms must be a whole number of milliseconds, not negative")
        if not any(answers) and not self.delay_ms:
            raise ValueError("an API fault needs an errcode, status, body, drop or delay_ms")
        if self.times is not None and (not isinstance(self.times, int) or self.times < 1):
            raise ValueError("times must be at least 1 (or None: every call)")

    @property
    def answers(self) -> bool:
        """Whether the fault answers the call itself (False: the call is only delayed)."""
        return self.errcode is not None or self.status is not None or self.body is not None or self.drop is not None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ApiFaultsMixin(StateBase):
    # Pending faults, oldest first: a call takes the first one for its API.
    api_faults: list[ApiFault]

    def _reset_api_faults(self) -> None:
        self.api_faults = []

    def add_api_fault(self, api: str, **spec: Any) -> ApiFault:
        """Queue a fault for ``api`` (see :class:`ApiFault`); faults for the same API apply in the order added."""
        fault = ApiFault(api, **spec)
        with self.lock:
            self.api_faults.append(fault)
        return fault

    def take_api_fault(self, path: str) -> ApiFault | None:
        """The fault that applies to this call of ``path``, counted as used; None when there is none."""
        if not self.api_faults:  # the hot path: no fault queued, no lock taken
            return None
        with self.lock:
            for index, fault in enumerate(self.api_faults):
                if fault.api != path:
                    continue
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times == 0:
                        del self.api_faults[index]
                return fault
        return None
