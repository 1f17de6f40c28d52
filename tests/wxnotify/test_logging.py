"""No secret reaches a log line, whichever way it got into the record.

Every test logs through the handlers built from ``settings.LOGGING`` by ``dictConfig`` (the same
configuration every process uses), with the console handler's stream swapped for a buffer.
"""

from __future__ import annotations

import io
import json
import logging
import logging.config
import secrets
import sys

import pytest
import requests
from django.conf import settings

from sandbox.demo import DEMO_ACCOUNT, DEMO_APPID
from sandbox.state import seeded_openid
from wxnotify.log import MASK, MAX_REGISTERED_SECRETS, _SecretRegistry, redact, register_secret
from wxnotify.wechat import PRODUCTION_API_BASE


@pytest.fixture
def log_output():
    """Configure logging from settings.LOGGING with the console writing to a buffer; restore after."""
    buffer = io.StringIO()
    real_stderr = sys.stderr
    sys.stderr = buffer  # the console StreamHandler binds sys.stderr when dictConfig builds it
    try:
        logging.config.dictConfig(settings.LOGGING)
    finally:
        sys.stderr = real_stderr
    try:
        yield buffer
    finally:
        logging.config.dictConfig(settings.LOGGING)


@pytest.fixture
def token():
    """A fresh access_token-like value, registered the way the token manager registers real ones."""
    value = secrets.token_urlsafe(48)
    register_secret(value)
    return value


def lines_with(output: io.StringIO, marker: str) -> list[str]:
    found = [line for line in output.getvalue().splitlines() if marker in line]
    assert found, f"nothing logged with {marker!r}:\n{output.getvalue()}"
    return found


def test_access_token_in_a_url_is_masked_by_shape(log_output):
    unregistered = secrets.token_hex(32)
    url = f"{PRODUCTION_API_BASE}/cgi-bin/message/template/send?access_token={unregistered}&lang=zh_CN"

    logging.getLogger("wxnotify.wechat.client").info(f"POST {url} took 12 ms")

    assert unregistered not in log_output.getvalue()
    (line,) = lines_with(log_output, "took 12 ms")
    assert "INFO wxnotify.wechat.client" in line
    assert f"POST {PRODUCTION_API_BASE}/cgi-bin/message/template/send?access_token={MASK}&lang=zh_CN" in line


def test_secret_in_a_json_body_is_masked_by_shape(log_output):
    app_secret = secrets.token_hex(16)
    body = json.dumps({"grant_type": "client_credential", "appid": "wx0123456789abcdef", "secret": app_secret})

    logging.getLogger("wxnotify.wechat.tokens").warning("stable_token request body: %s", body)

    assert app_secret not in log_output.getvalue()
    (line,) = lines_with(log_output, "stable_token request body")
    assert "WARNING wxnotify.wechat.tokens" in line
    assert f'"appid": "wx0123456789abcdef", "secret": "{MASK}"' in line
    assert '"grant_type": "client_credential"' in line


def test_registered_secret_in_an_f_string_is_masked(log_output, token):
    logging.getLogger("wxnotify").info(f"cached token {token} for wx0123456789abcdef until 10:00")

    assert token not in log_output.getvalue()
    (line,) = lines_with(log_output, "for wx0123456789abcdef until 10:00")
    assert f"cached token {MASK} for wx0123456789abcdef until 10:00" in line


def test_registered_secret_in_percent_args_is_masked(log_output, token):
    logging.getLogger("messaging.tasks").error("send %s failed with token %s (errcode %d)", "msg-42", token, 40001)

    assert token not in log_output.getvalue()
    (line,) = lines_with(log_output, "send msg-42 failed")
    assert "ERROR messaging.tasks" in line
    assert f"send msg-42 failed with token {MASK} (errcode 40001)" in line


def test_registered_secret_in_a_traceback_is_masked(log_output, token):
    def refresh():
        raise RuntimeError(f"WeChat rejected {token}")

    try:
        refresh()
    except RuntimeError:
        logging.getLogger("wxnotify.wechat.tokens").exception("token refresh for %s failed", "wx0123456789abcdef")

    output = log_output.getvalue()
    assert token not in output
    assert "token refresh for wx0123456789abcdef failed" in output
    assert "Traceback (most recent call last):" in output
    assert 'raise RuntimeError(f"WeChat rejected {token}")' in output  # source lines stay readable
    assert f"RuntimeError: WeChat rejected {MASK}" in output


def test_django_q_logger_is_masked(log_output, token):
    logging.getLogger("django_q").error("Failed [deliver_batch] - args: (%r,)", {"access_token": token, "batch": 7})

    assert token not in log_output.getvalue()
    (line,) = lines_with(log_output, "Failed [deliver_batch]")
    assert "ERROR django_q" in line
    assert f"'access_token': '{MASK}'" in line
    assert "'batch': 7" in line


def test_urllib3_request_line_is_masked(log_output, wechat_sandbox):
    """urllib3 logs every request line at DEBUG, query string included: a real request, really logged."""
    token = requests.post(
        f"{wechat_sandbox.base_url}/cgi-bin/stable_token",
        json={"grant_type": "client_credential", "appid": DEMO_APPID, "secret": DEMO_ACCOUNT["secret"]},
        timeout=5,
    ).json()["access_token"]
    register_secret(token)  # as the token manager registers every token it fetches
    next_openid = seeded_openid(DEMO_APPID, 0)
    logging.getLogger("urllib3").setLevel(logging.DEBUG)

    response = requests.get(
        f"{wechat_sandbox.base_url}/cgi-bin/user/get",
        params={"access_token": token, "next_openid": next_openid},
        timeout=5,
    )

    assert response.json()["total"] == len(wechat_sandbox.followers())
    assert token not in log_output.getvalue()
    (line,) = lines_with(log_output, "/cgi-bin/user/get")
    assert "DEBUG urllib3.connectionpool" in line
    assert f'"GET /cgi-bin/user/get?access_token={MASK}&next_openid={next_openid} HTTP/1.1" 200' in line


# --- The registry of values to mask is bounded -------------------------------------------------------------------


def test_the_registry_keeps_the_most_recently_registered_values_within_its_bound():
    registry = _SecretRegistry(bound=3)
    for value in ("secret-one-1", "secret-two-2", "secret-three-3"):
        registry.add(value)
    registry.add("secret-one-1")  # used again: now the most recent

    registry.add("secret-four-4")

    assert len(registry) == 3
    assert "secret-two-2" not in registry
    assert all(value in registry for value in ("secret-one-1", "secret-three-3", "secret-four-4"))


def test_the_process_registry_never_grows_past_its_bound():
    values = [secrets.token_urlsafe(24) for _ in range(MAX_REGISTERED_SECRETS + 50)]
    for value in values:
        register_secret(value)

    assert redact(values[0]) == values[0]
    assert all(redact(value) == MASK for value in values[-MAX_REGISTERED_SECRETS:])
    assert redact(f"a {values[-1]} b {values[0]}") == f"a {MASK} b {values[0]}"


def test_a_large_registry_masks_each_value_and_the_longest_first():
    registry = _SecretRegistry(bound=2000)
    for _ in range(600):
        registry.add(secrets.token_hex(16))
    inner = "inner-secret-0123"
    outer = f"outer-{inner}-tail"
    registry.add(inner)
    registry.add(outer)

    assert registry.found_in(f"x {outer} y {inner} z") == [outer, inner]
    assert registry.found_in("nothing registered here at all") == []


def test_values_shorter_than_eight_characters_are_not_masked():
    register_secret("short7")

    assert redact("a short7 b") == "a short7 b"
