"""Local ports and stand-in HTTP servers for tests and benchmarks.

Nothing here imports Django or the project's apps, so ``bench/`` uses it too.  A stand-in server is for what no
WeChat would do (our own callback receiver, an advisory service, a plain echo); the fake WeChat is the sandbox
(the ``wechat_sandbox`` fixture).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler
from socketserver import BaseServer
from typing import Any, TypeVar

# How often a served loop checks for shutdown(): stopping a server waits up to this long (socketserver's default
# of 0.5 s, paid by every test that stops a server, added up to seconds over the suite).
POLL_INTERVAL_S = 0.02
LOCALHOST = "127.0.0.1"

Server = TypeVar("Server", bound=BaseServer)


def free_port() -> int:
    """A local port nothing listens on: bound to get a free one, then closed, so connecting to it is refused
    (until something else takes it: start what should listen there soon)."""
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


@contextmanager
def serving(server: Server) -> Iterator[Server]:
    """Run a stand-in server in a thread; stop it (within ``POLL_INTERVAL_S``) and close its socket after."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": POLL_INTERVAL_S}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def unanswered_port() -> Iterator[int]:
    """A local port where connecting times out instead of being refused, as when the network drops the packets.

    Something listens there but never accepts, and its accept queue is already full: the kernel then ignores new
    connection attempts, so a client's connect timeout runs out.
    """
    with ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind((LOCALHOST, 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        # listen(0) still queues one connection (and the kernel one more): three fill it on any Linux.
        for _ in range(3):
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            filler.connect_ex((LOCALHOST, port))
        yield port


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing (``http.server`` writes every request to stderr)."""

    def log_message(self, format: str, *args: Any) -> None:
        """Tests read their own output; a line per request would bury it."""
