"""``manage.py serve_metrics``: ``/metrics`` for a host that runs only ``qcluster``.

A web host serves its processes' counters at ``/metrics``; a worker-only host has no web server, so its workers'
counters (sends, token fetches, retry lateness) would never be scraped.  This small listener serves the same
exposition (``operations.metrics.render``: this host's metric files plus the database gauges) under the same rule
(``operations.access``: the bearer token, or public on purpose, else 404), and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections

from operations import access, metrics

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def metrics_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The WSGI application: GET /metrics only, with the web hosts' access rule."""
    if environ.get("PATH_INFO") != "/metrics":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    if environ.get("REQUEST_METHOD") not in {"GET", "HEAD"}:
        start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Type", "text/plain")])
        return [b"method not allowed\n"]
    refusal = access.metrics_refusal(environ.get("HTTP_AUTHORIZATION", ""))
    if refusal == 404:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    if refusal is not None:
        start_response("401 Unauthorized", [("WWW-Authenticate", access.BEARER_CHALLENGE)])
        return [b""]
    close_old_connections()
    try:
        body, content_type = metrics.render(environ.get("HTTP_ACCEPT"))
    finally:
        close_old_connections()
    start_response("200 OK", [("Content-Type", content_type), ("Cache-Control", "no-store")])
    return [body]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would fill the journal; errors still go to stderr."""


def parse_bind(value: str) -> tuple[str, int]:
    host, _colon, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CommandError(f"--bind wants HOST:PORT, e.g. 0.0.0.0:9108, not {value!r}")
    return host.strip("[]"), int(port)


class Command(BaseCommand):
    help = "Serve /metrics of a worker-only host (its qcluster processes' counters), with the web hosts' access rule."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--bind", default="127.0.0.1:9108", help="HOST:PORT to listen on (default 127.0.0.1:9108)")

    def handle(self, *args: Any, bind: str, **options: Any) -> None:
        host, port = parse_bind(bind)
        with make_server(host, port, metrics_app, server_class=_ThreadingServer, handler_class=_QuietHandler) as server:
            self.stdout.write(f"Serving /metrics on {host}:{port}")
            server.serve_forever()
