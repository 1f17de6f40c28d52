"""Fixtures of the webhook tests: a local receiver that records what it is sent, and settings that let a webhook
reach it (http to loopback needs DEBUG on; loopback addresses need the allow-list)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from tests.servers import LOCALHOST, QuietHandler, free_port, serving


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Where the webhook posts; ``up`` says whether something listens on ``port`` (a receiver that is down refuses
    connections); ``status`` is what it answers while up."""

    port: int
    received: list[Received] = field(default_factory=list)
    status: int = 200
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}/hooks/wxnotify"

    def events(self) -> list[dict[str, Any]]:
        return [request.json for request in self.received]


def _handler(receiver: Receiver) -> type[QuietHandler]:
    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with receiver.lock:
                if 200 <= receiver.status < 300:
                    receiver.received.append(Received(self.path, dict(self.headers.items()), body))
            self.send_response(receiver.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    return Handler


@pytest.fixture
def webhook_settings(settings: Any) -> Any:
    settings.DEBUG = True
    settings.WXNOTIFY_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.WXNOTIFY_WEBHOOK_RETRY_BASE_SECONDS = 10
    settings.WXNOTIFY_WEBHOOK_TIMEOUT_SECONDS = 2
    return settings


@pytest.fixture
def receiver(webhook_settings: Any) -> Iterator[Receiver]:
    """A receiver that is up; ``start_receiver`` brings one up on a given port later."""
    port = free_port()
    found = Receiver(port=port)
    with serving(ThreadingHTTPServer((LOCALHOST, port), _handler(found))) as server:
        found.server = server
        yield found


def start_receiver(receiver: Receiver):
    """Serve ``receiver`` on its port (a context manager): for a receiver that was down."""
    return serving(ThreadingHTTPServer((LOCALHOST, receiver.port), _handler(receiver)))
