"""The sandbox's record of the WeChat API requests it received, as they arrived on the wire.

A test asserts what its client sent (the exact body bytes, the query string, the Content-Type) from here,
against a real HTTP exchange.  The log lives in memory only and is never served over HTTP: it holds the
AppSecrets and access_tokens the clients sent.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from sandbox.state.base import StateBase

REQUEST_LOG_CAPACITY = 10_000


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    time: float
    method: str
    path: str
    query: dict[str, str]
    body: bytes
    content_type: str

    def json(self) -> Any:
        """The body decoded as JSON (raises ``ValueError`` when it is not)."""
        return json.loads(self.body)


class RequestLogMixin(StateBase):
    request_log: deque[ReceivedRequest]

    def _reset_request_log(self) -> None:
        self.request_log = deque(maxlen=REQUEST_LOG_CAPACITY)

    def record_request(self, method: str, path: str, query: dict[str, str], body: bytes, content_type: str) -> None:
        """Log one API request (``deque.append`` is thread-safe: no lock on the hot path)."""
        self.request_log.append(ReceivedRequest(time.time(), method, path, query, body, content_type))

    def received_requests(self, path: str | None = None) -> list[ReceivedRequest]:
        """The API requests received since the last reset, oldest first, only those to ``path`` when given."""
        with self.lock:
            logged = list(self.request_log)
        return [request for request in logged if path is None or request.path == path]
