"""The sandbox's HTTP front: the routes of ``sandbox.routes`` on a small threaded server.

``http.server`` is enough here and keeps the hot path tiny: one thread per keep-alive connection, no
framework, no per-request logging, and each reply written with a single ``write`` (headers and body
together, Nagle off) so small replies never wait for a delayed ACK.  The benchmarks need well over
1,000 sends/s on two cores that the client shares.
"""

from __future__ import annotations

import select
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sandbox.receipt_dispatch import ReceiptDispatcher
from sandbox.routes import NoReply, Reply, SandboxApp, json_bytes
from sandbox.state import DROP_HANG, SandboxState

# How often the accept loop checks for stop(): stopping waits up to this long (socketserver's default is 0.5 s).
SHUTDOWN_POLL_S = 0.05


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "WeChatSandbox/1.0"
    disable_nagle_algorithm = True
    timeout = 300  # an idle keep-alive connection gives its thread back after this long
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """No per-request logging: it would cost more CPU than answering."""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            reply = Reply(400, json_bytes({"errcode": 44002, "errmsg": "bad Content-Length"}))
        else:
            body = self.rfile.read(length) if length else b""
            reply = self.server.app.handle(
                method, self.path, body, self.headers.get("Content-Type", ""), self.client_address[0]
            )
        if isinstance(reply, NoReply):
            self._answer_nothing(reply)
            return
        head = (
            f"HTTP/1.1 {reply.status} {self.responses.get(reply.status, ('',))[0]}\r\n"
            f"Content-Type: {reply.content_type}\r\nContent-Length: {len(reply.body)}\r\n"
        )
        if self.close_connection:
            head += "Connection: close\r\n"
        try:
            self.wfile.write(head.encode("latin-1") + b"\r\n" + reply.body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up first (its read timeout ran out during a slow answer): nothing left to tell it.
            self.close_connection = True

    def _answer_nothing(self, reply: NoReply) -> None:
        """Close the connection without a byte of answer; in ``hang`` mode first wait until the client gives up
        and closes its end (or sends anything), or until the hang limit, whichever comes first."""
        self.close_connection = True
        if reply.mode == DROP_HANG and reply.hang_ms:
            select.select([self.connection], [], [], reply.hang_ms / 1000)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: SandboxApp) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def connection_count(self) -> int:
        with self._connections_lock:
            return len(self._connections)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                continue


class SandboxServer:
    """The fake WeChat API on ``host:port`` (port 0 picks a free one), served from a background thread."""

    def __init__(self, state: SandboxState, host: str = "127.0.0.1", port: int = 0, receipt_workers: int = 8) -> None:
        self.state = state
        self.app = SandboxApp(state)
        self._httpd = _HTTPServer((host, port), self.app)
        self._thread: threading.Thread | None = None
        self._dispatcher = ReceiptDispatcher(
            state.receipt_queue, state.receipt_target, state.record_receipt, workers=receipt_workers
        )

    @property
    def host(self) -> str:
        return self._httpd.server_address[0]

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def open_connections(self) -> int:
        """Client connections open now: a hanging dropped reply holds one until its client gives up."""
        return self._httpd.connection_count()

    def start(self) -> SandboxServer:
        self._dispatcher.start()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_S},
            name="wechat-sandbox",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, drop open keep-alive connections and the receipt workers.

        The state's receipt queue is closed with the workers: give a new server a new state.
        """
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        self._dispatcher.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
