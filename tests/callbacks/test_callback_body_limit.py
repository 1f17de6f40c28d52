"""An oversized callback body is answered 413 in a way the client can read, against the real web server.

gunicorn closes the connection after answering when the client asks for it or its worker is sync: with request
bytes still unread in the socket, the kernel then resets the connection and the client often gets the reset
instead of the 413.  So the view drains the body (up to ``WECHAT_CALLBACK_MAX_DRAIN_BYTES``) before answering.
Django's test client and its live server (which itself reads what a view left) cannot show this: these tests run
gunicorn with the project's ``gunicorn.conf.py`` in a subprocess on the test database, and talk to it over a plain
socket.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.db import connection

from tests.factories import create_demo_account
from tests.servers import free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

BASE_DIR = Path(__file__).resolve().parents[2]
LIMIT = 64 * 1024
# Larger than the socket buffers on both ends, so a client is still sending when an early answer arrives.
DRAIN = 16 * 1024 * 1024


def database_url() -> str:
    """The test database as a URL the server process can use (it must not create a test database of its own)."""
    config = connection.settings_dict
    if config["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{config['NAME']}"
    return f"postgres://{config['USER']}@{config['HOST'] or '127.0.0.1'}:{config['PORT'] or 5432}/{config['NAME']}"


@pytest.fixture
def gunicorn_url() -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "WECHAT_CALLBACK_MAX_BODY_BYTES": str(LIMIT),
        "WECHAT_CALLBACK_MAX_DRAIN_BYTES": str(DRAIN),
        "WXNOTIFY_LOG_LEVEL": "ERROR",
    }
    command = [sys.executable, "-m", "gunicorn", "wxnotify.wsgi:application", "--config", "gunicorn.conf.py"]
    command += ["--workers", "1", "--bind", f"127.0.0.1:{port}", "--log-level", "error"]
    server = subprocess.Popen(command, cwd=BASE_DIR, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def raw_post(address: str, path: str, content_length: int, body: bytes) -> bytes:
    """POST over a plain socket; everything the server sends back until it closes the connection."""
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/xml\r\n"
            f"Content-Length: {content_length}\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("size", [LIMIT + 1, 900 * 1024, 12 * 1024 * 1024])
def test_oversized_body_gets_a_413_the_client_can_read(gunicorn_url, size):
    account = create_demo_account(message_mode="plaintext")
    body = b"x" * size
    for _attempt in range(3):
        answer = raw_post(gunicorn_url, account.callback_path(), len(body), body)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
        response = requests.post(f"http://{gunicorn_url}{account.callback_path()}", data=body, timeout=30)
        assert response.status_code == 413


def test_body_declared_past_the_drain_bound_is_refused_without_being_read(gunicorn_url):
    """32 MiB announced and none sent: the server answers without waiting for the body.

    The client keeps its side open and never sends a byte of body, so a server that read it would never answer and
    raw_post's socket timeout would fail the test; no wall-clock bound is needed (it failed under a loaded machine).
    """
    account = create_demo_account(message_mode="plaintext")
    answer = raw_post(gunicorn_url, account.callback_path(), 2 * DRAIN, b"")
    assert answer.startswith(b"HTTP/1.1 413")


def test_body_within_the_limit_is_served(gunicorn_url):
    account = create_demo_account(message_mode="plaintext")
    answer = raw_post(gunicorn_url, account.callback_path(), 6, b"<xml/>")
    assert answer.startswith(b"HTTP/1.1 403")  # unsigned: refused after the size check, by the signature check
