"""The sandbox's record of the WeChat API requests it received, as they arrived on the wire.

A test asserts what its client sent (the exact body bytes, the query string, the Content-Type, the address it came
from) from here, against a real HTTP exchange.  The log lives in memory only and is never served over HTTP: it holds
the AppSecrets and access_tokens the clients sent.  What is served (in ``GET /sandbox/state``) is how many requests
each source address made to each API, counted since the last reset without a cap: with several hosts calling
(bench/cluster.py), it tells each host's share of the sends and which host fetched the token.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
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
    source: str = ""

    def json(self) -> Any:
        """The body decoded as JSON (raises ``ValueError`` when it is not)."""
        return json.loads(self.body)


class RequestLogMixin(StateBase):
    request_log: deque[ReceivedRequest]
    # (source address, path) → requests; behind its own lock, apart from the state's, so counting never waits
    # for a send in progress.
    _requests_by_source: Counter[tuple[str, str]]

    def _reset_request_log(self) -> None:
        self.request_log = deque(maxlen=REQUEST_LOG_CAPACITY)
        self._requests_by_source = Counter()
        self._source_lock = threading.Lock()

    def record_request(
        self, method: str, path: str, query: dict[str, str], body: bytes, content_type: str, source: str = ""
    ) -> None:
        """Log one API request (``deque.append`` is thread-safe) and count it for its source address."""
        self.request_log.append(ReceivedRequest(time.time(), method, path, query, body, content_type, source))
        with self._source_lock:
            self._requests_by_source[(source, path)] += 1

    def requests_by_source(self) -> dict[str, dict[str, int]]:
        """API requests since the last reset: source address → path → count."""
        with self._source_lock:
            counted = list(self._requests_by_source.items())
        found: dict[str, dict[str, int]] = {}
        for (source, path), count in sorted(counted):
            found.setdefault(source, {})[path] = count
        return found

    def received_requests(self, path: str | None = None) -> list[ReceivedRequest]:
        """The API requests received since the last reset, oldest first, only those to ``path`` when given."""
        with self.lock:
            logged = list(self.request_log)
        return [request for request in logged if path is None or request.path == path]
