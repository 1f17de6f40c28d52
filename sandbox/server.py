"""The sandbox's HTTP front: WeChat's real paths on a small threaded server.

``http.server`` is enough here and keeps the hot path tiny: one thread per keep-alive connection, no
framework, no per-request logging, and each reply written with a single ``write`` (headers and body
together, Nagle off) so small replies never wait for a delayed ACK.  The benchmarks need well over
1,000 sends/s on two cores that the client shares.
"""

from __future__ import annotations

import html
import json
import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import requests

from sandbox.callbacks import ReceiptDispatcher, open_reply, post_callback
from sandbox.state import DROP_HANG, ReplyDropped, SandboxError, SandboxState

JSON_TYPE = "application/json; charset=utf-8"
logger = logging.getLogger(__name__)


class Reply:
    """A non-JSON or non-200 answer (JSON dicts returned by routes mean 200 + JSON)."""

    def __init__(self, status: int, body: bytes, content_type: str = JSON_TYPE) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type


class NoReply(Reply):
    """No answer at all (the drop_reply_* faults): the connection is closed, after a hang in ``hang`` mode."""

    def __init__(self, mode: str, hang_ms: int) -> None:
        super().__init__(0, b"")
        self.mode = mode
        self.hang_ms = hang_ms


def json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def parse_json(body: bytes) -> dict[str, Any]:
    """A JSON object body, or WeChat's 47001 ``data format error``."""
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        raise SandboxError(47001) from None
    if not isinstance(payload, dict):
        raise SandboxError(47001)
    return payload


def _sleep_ms(milliseconds: int) -> None:
    """The configured latency, outside the state's lock so concurrent callers wait side by side."""
    if milliseconds:
        time.sleep(milliseconds / 1000)


Route = Callable[[dict[str, str], bytes], "dict[str, Any] | Reply"]


class SandboxApp:
    """Maps (method, path) to the state's operations; knows nothing about sockets."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.routes: dict[tuple[str, str], Route] = {
            ("GET", "/cgi-bin/token"): self.token,
            ("POST", "/cgi-bin/stable_token"): self.stable_token,
            ("POST", "/cgi-bin/message/template/send"): self.send,
            ("GET", "/cgi-bin/template/get_all_private_template"): self.templates,
            ("GET", "/cgi-bin/user/get"): self.user_get,
            ("GET", "/cgi-bin/user/info"): self.user_info,
            ("POST", "/cgi-bin/user/info/batchget"): self.user_batchget,
            ("POST", "/cgi-bin/qrcode/create"): self.qrcode_create,
            ("GET", "/cgi-bin/showqrcode"): self.showqrcode,
            ("POST", "/sandbox/simulate/subscribe"): self.simulate_subscribe,
            ("POST", "/sandbox/simulate/scan"): self.simulate_scan,
            ("POST", "/sandbox/simulate/unsubscribe"): self.simulate_unsubscribe,
            ("POST", "/sandbox/simulate/text"): self.simulate_text,
            ("GET", "/sandbox/state"): self.control_state,
            ("GET", "/sandbox/messages"): self.control_messages,
            ("GET", "/sandbox/sends"): self.control_sends,
            ("POST", "/sandbox/reset"): self.control_reset,
            ("POST", "/sandbox/faults"): self.control_faults,
            ("POST", "/sandbox/tokens/invalidate"): self.control_invalidate,
            ("POST", "/sandbox/accounts"): self.control_accounts,
        }

    def handle(self, method: str, target: str, body: bytes) -> Reply:
        path, _, query_string = target.partition("?")
        route = self.routes.get((method, path))
        if route is None:
            return Reply(404, json_bytes({"errcode": -1, "errmsg": f"sandbox: no such API {method} {path}"}))
        query = dict(parse_qsl(query_string, keep_blank_values=True))
        try:
            result = route(query, body)
        except SandboxError as exc:
            result = exc.as_reply()
        except ReplyDropped as exc:
            return NoReply(exc.mode, exc.hang_ms)
        except (ValueError, TypeError, KeyError) as exc:
            result = Reply(400, json_bytes({"errcode": 40097, "errmsg": f"invalid args: {exc}"}))
        except Exception:
            # A sandbox bug must not look like a dropped connection to the client under test.
            logger.exception("sandbox failed on %s %s", method, path)
            result = Reply(500, json_bytes({"errcode": -1, "errmsg": "system error"}))
        if isinstance(result, Reply):
            return result
        return Reply(200, json_bytes(result))

    # --- WeChat API -----------------------------------------------------------------------------

    def token(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        return self.state.issue_classic_token(query.get("grant_type"), query.get("appid"), query.get("secret"))

    def stable_token(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        return self.state.issue_stable_token(parse_json(body))

    def send(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        try:
            return self.state.send_template(query.get("access_token"), body)
        finally:
            _sleep_ms(self.state.faults.latency_ms)

    def templates(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        return self.state.private_templates(query.get("access_token"))

    def user_get(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        try:
            return self.state.follower_page(query.get("access_token"), query.get("next_openid", ""))
        finally:
            _sleep_ms(self.state.faults.user_latency_ms)

    def user_info(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        try:
            return self.state.user_info(query.get("access_token"), query.get("openid", ""))
        finally:
            _sleep_ms(self.state.faults.user_latency_ms)

    def user_batchget(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        try:
            self.state.authenticate(query.get("access_token"))
            return self.state.batch_user_info(query.get("access_token"), parse_json(body))
        finally:
            _sleep_ms(self.state.faults.user_latency_ms)

    def qrcode_create(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        self.state.authenticate(query.get("access_token"))
        return self.state.create_qrcode(query.get("access_token"), parse_json(body))

    def showqrcode(self, query: dict[str, str], body: bytes) -> Reply:
        """A placeholder image naming the scene: enough for the demo to show "scan this"."""
        ticket = self.state.qr_ticket(query.get("ticket", ""))
        if ticket is None:
            return Reply(404, json_bytes({"errcode": 40097, "errmsg": "invalid args: unknown or expired ticket"}))
        scene = html.escape(ticket.scene)
        svg = (
            '<svg xmlns="http://www.w3.org/2000/svg" width="240" height="240" viewBox="0 0 240 240">'
            '<rect width="240" height="240" fill="#fff" stroke="#000" stroke-width="8"/>'
            '<rect x="20" y="20" width="50" height="50"/><rect x="170" y="20" width="50" height="50"/>'
            '<rect x="20" y="170" width="50" height="50"/>'
            '<text x="120" y="115" font-size="14" text-anchor="middle" font-family="sans-serif">sandbox QR</text>'
            f'<text x="120" y="140" font-size="12" text-anchor="middle" font-family="monospace">{scene}</text>'
            "</svg>"
        )
        return Reply(200, svg.encode("utf-8"), "image/svg+xml")

    # --- simulated users: push the event now and hand back what the service answered ----------

    def _push(self, simulated: tuple[Any, str], openid: str) -> dict[str, Any]:
        account, xml = simulated
        target = account.callback_target()
        reply: dict[str, Any] = {"errcode": 0, "errmsg": "ok", "event": xml, "status": None, "body": None}
        if target is None:
            reply["error"] = "account has no callback_url"
            return reply
        try:
            response = post_callback(None, target, openid, xml)
        except requests.RequestException as exc:
            reply["error"] = f"callback unreachable: {type(exc).__name__}"
            return reply
        reply.update(status=response.status_code, body=response.text, reply=open_reply(target, response.text))
        return reply

    def simulate_subscribe(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        payload = parse_json(body)
        appid, openid = str(payload.get("appid", "")), str(payload.get("openid", ""))
        # ``event_key`` may be given as WeChat shows it (``qrscene_<scene>``) or as the bare scene.
        scene = payload.get("scene", payload.get("event_key"))
        if isinstance(scene, str):
            scene = scene.removeprefix("qrscene_")
        simulated = self.state.simulate_subscribe(
            appid, openid, ticket=payload.get("ticket"), scene=None if scene is None else str(scene)
        )
        return self._push(simulated, openid)

    def simulate_scan(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        payload = parse_json(body)
        openid = str(payload.get("openid", ""))
        return self._push(
            self.state.simulate_scan(str(payload.get("appid", "")), openid, str(payload.get("ticket", ""))), openid
        )

    def simulate_unsubscribe(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        payload = parse_json(body)
        openid = str(payload.get("openid", ""))
        return self._push(self.state.simulate_unsubscribe(str(payload.get("appid", "")), openid), openid)

    def simulate_text(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        payload = parse_json(body)
        openid = str(payload.get("openid", ""))
        simulated = self.state.simulate_text(str(payload.get("appid", "")), openid, str(payload.get("content", "")))
        return self._push(simulated, openid)

    # --- inspection and control -------------------------------------------------------------------

    def control_state(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        return self.state.snapshot()

    def control_messages(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        limit = int(query["limit"]) if query.get("limit") else None
        messages = self.state.list_messages(query.get("appid") or None, query.get("touser") or None, limit)
        return {"count": len(messages), "messages": messages}

    def control_sends(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        """Every send the sandbox handled (delivered, de-duplicated, redelivered or failed), oldest first."""
        limit = int(query["limit"]) if query.get("limit") else None
        since = float(query["since"]) if query.get("since") else None
        sends = self.state.list_sends(query.get("appid") or None, since, limit)
        return {"count": len(sends), "sends": sends}

    def control_reset(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        self.state.reset()
        return {"errcode": 0, "errmsg": "ok"}

    def control_faults(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        return {"errcode": 0, "errmsg": "ok", "faults": self.state.set_faults(**parse_json(body))}

    def control_invalidate(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        revoked = self.state.invalidate_tokens(str(parse_json(body).get("appid", "")))
        return {"errcode": 0, "errmsg": "ok", "revoked": revoked}

    def control_accounts(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        account = self.state.upsert_account(parse_json(body))
        return {"errcode": 0, "errmsg": "ok", "appid": account.appid, "followers": account.follower_count}


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
            reply = self.server.app.handle(method, self.path, body)
        if isinstance(reply, NoReply):
            self._answer_nothing(reply)
            return
        head = (
            f"HTTP/1.1 {reply.status} {self.responses.get(reply.status, ('',))[0]}\r\n"
            f"Content-Type: {reply.content_type}\r\nContent-Length: {len(reply.body)}\r\n"
        )
        if self.close_connection:
            head += "Connection: close\r\n"
        self.wfile.write(head.encode("latin-1") + b"\r\n" + reply.body)

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
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="wechat-sandbox", daemon=True)
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
