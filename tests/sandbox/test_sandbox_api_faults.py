"""The sandbox's API faults (one API answering an errcode, an HTTP error, a body that is not JSON, nothing, or
late) and its log of the requests it received, over real HTTP."""

from __future__ import annotations

import json
import socket
import struct
import time

import pytest
import requests

from sandbox.demo import DEMO_ACCOUNT, DEMO_APPID
from sandbox.routes import SandboxApp
from sandbox.state import REQUEST_LOG_CAPACITY, WECHAT_APIS, ApiFault, SandboxState, seeded_openid
from tests import factories

SEND = "/cgi-bin/message/template/send"
STABLE_TOKEN = "/cgi-bin/stable_token"
TOKEN_BODY = {"grant_type": "client_credential", "appid": DEMO_APPID, "secret": DEMO_ACCOUNT["secret"]}
ORDER_DATA = {keyword: {"value": value} for keyword, value in factories.ORDER_DATA.items()}
OPENID = seeded_openid(DEMO_APPID, 0)


def stable_token(sandbox, http, timeout=5.0):
    return http.post(f"{sandbox.base_url}{STABLE_TOKEN}", json=TOKEN_BODY, timeout=timeout)


@pytest.fixture
def token(wechat_sandbox, http):
    return stable_token(wechat_sandbox, http).json()["access_token"]


def send(sandbox, http, token, timeout=5.0):
    payload = {"touser": OPENID, "template_id": factories.ORDER_TEMPLATE, "data": ORDER_DATA}
    return http.post(
        f"{sandbox.base_url}{SEND}",
        params={"access_token": token},
        data=json.dumps(payload, ensure_ascii=False).encode(),
        timeout=timeout,
    )


# --- API faults -------------------------------------------------------------------------------------


def test_an_errcode_fault_answers_the_next_call_only_and_changes_nothing(wechat_sandbox, http, token):
    wechat_sandbox.add_api_fault(SEND, errcode=40001)

    faulted = send(wechat_sandbox, http, token)
    after = send(wechat_sandbox, http, token)

    assert faulted.status_code == 200
    assert faulted.json()["errcode"] == 40001
    assert faulted.json()["errmsg"].startswith("invalid credential") and " rid: " in faulted.json()["errmsg"]
    assert after.json()["errcode"] == 0
    assert len(wechat_sandbox.messages()) == 1
    counters = wechat_sandbox.counters()
    assert (counters["sends"], counters["errors"]) == (1, {})


def test_faults_of_one_api_apply_in_order_and_leave_other_apis_alone(wechat_sandbox, http, token):
    wechat_sandbox.add_api_fault(SEND, errcode=42001)
    wechat_sandbox.add_api_fault(SEND, errcode=40001)

    assert stable_token(wechat_sandbox, http).json()["access_token"] == token
    assert [send(wechat_sandbox, http, token).json()["errcode"] for _ in range(3)] == [42001, 40001, 0]


def test_a_fault_for_every_call_lasts_until_the_reset(wechat_sandbox, http, token):
    wechat_sandbox.add_api_fault(SEND, errcode=45009, times=None)

    assert [send(wechat_sandbox, http, token).json()["errcode"] for _ in range(3)] == [45009] * 3

    wechat_sandbox.state.reset()
    token = stable_token(wechat_sandbox, http).json()["access_token"]
    assert send(wechat_sandbox, http, token).json()["errcode"] == 0


def test_a_count_of_calls_then_normal_answers(wechat_sandbox, http, token):
    wechat_sandbox.add_api_fault(SEND, errcode=-1, times=2)

    assert [send(wechat_sandbox, http, token).json()["errcode"] for _ in range(3)] == [-1, -1, 0]


@pytest.mark.parametrize("status", [500, 502, 503, 404])
def test_an_http_status_fault_answers_that_status_and_body(wechat_sandbox, http, token, status):
    wechat_sandbox.add_api_fault(SEND, status=status, body="bad gateway")

    reply = send(wechat_sandbox, http, token)

    assert reply.status_code == status
    assert reply.text == "bad gateway"
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert wechat_sandbox.messages() == []


def test_a_body_fault_answers_text_that_is_not_json(wechat_sandbox, http, token):
    wechat_sandbox.add_api_fault(SEND, body="<html>proxy error</html>")

    reply = send(wechat_sandbox, http, token)

    assert reply.status_code == 200
    assert reply.text == "<html>proxy error</html>"
    with pytest.raises(ValueError):
        reply.json()


def test_a_close_fault_answers_nothing_and_the_next_call_is_served(wechat_sandbox, http, token):
    wechat_sandbox.add_api_fault(STABLE_TOKEN, drop="close")

    with pytest.raises(requests.ConnectionError) as raised:
        stable_token(wechat_sandbox, http)

    assert not isinstance(raised.value, requests.ReadTimeout)
    assert stable_token(wechat_sandbox, http).json()["access_token"] == token


def test_a_hang_fault_answers_nothing_until_the_client_gives_up(wechat_sandbox, http):
    wechat_sandbox.add_api_fault(STABLE_TOKEN, drop="hang")

    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        stable_token(wechat_sandbox, http, timeout=0.3)

    assert time.monotonic() - started < 5
    assert wechat_sandbox.counters()["token_fetches"]["stable_token"] == 0


def test_a_delay_fault_handles_the_call_and_answers_late(wechat_sandbox, http):
    wechat_sandbox.add_api_fault(STABLE_TOKEN, delay_ms=400)

    started = time.monotonic()
    reply = stable_token(wechat_sandbox, http)

    assert time.monotonic() - started >= 0.4
    assert reply.json()["access_token"]
    assert wechat_sandbox.counters()["token_fetches"]["stable_token"] == 1


def test_a_client_that_gives_up_on_a_late_answer_leaves_the_sandbox_serving(wechat_sandbox, http, capfd):
    wechat_sandbox.add_api_fault(STABLE_TOKEN, delay_ms=300)
    body = json.dumps(TOKEN_BODY).encode()
    with socket.create_connection((wechat_sandbox.server.host, wechat_sandbox.server.port), timeout=5) as client:
        client.sendall(
            f"POST {STABLE_TOKEN} HTTP/1.1\r\nHost: sandbox\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        )
        # Gone before the answer, and abruptly (a reset, as a client killed on its timeout leaves it).
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    time.sleep(0.6)  # the sandbox finishes the call and answers into the reset connection

    assert wechat_sandbox.counters()["token_fetches"]["stable_token"] == 1
    assert stable_token(wechat_sandbox, http).json()["access_token"]
    assert "Traceback" not in capfd.readouterr().err


def test_a_delayed_errcode_waits_then_answers(wechat_sandbox, http, token):
    wechat_sandbox.add_api_fault(SEND, errcode=43101, delay_ms=300)

    started = time.monotonic()
    assert send(wechat_sandbox, http, token).json()["errcode"] == 43101
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"api": "/cgi-bin/nope", "errcode": 1}, "api must be one of"),
        ({"api": SEND, "errcode": 40001, "status": 502}, "one of errcode"),
        ({"api": SEND, "body": "x", "drop": "close"}, "one of errcode"),
        ({"api": SEND}, "needs an errcode"),
        ({"api": SEND, "errcode": 0}, "errcode 0"),
        ({"api": SEND, "errcode": "40001"}, "errcode must be an integer"),
        ({"api": SEND, "status": 99}, "status must be"),
        ({"api": SEND, "status": 600}, "status must be"),
        ({"api": SEND, "body": b"bytes"}, "body must be text"),
        ({"api": SEND, "drop": "mixed"}, "drop must be one of close, hang"),
        ({"api": SEND, "delay_ms": -1}, "delay_ms"),
        ({"api": SEND, "errcode": 1, "times": 0}, "times must be at least 1"),
    ],
)
def test_bad_api_faults_are_refused(wechat_sandbox, spec, message):
    with pytest.raises(ValueError, match=message):
        wechat_sandbox.add_api_fault(**spec)
    assert wechat_sandbox.state.api_faults == []


def test_api_faults_over_http(wechat_sandbox, http, token):
    control = f"{wechat_sandbox.base_url}/sandbox/api_faults"

    added = http.post(control, json={"api": SEND, "errcode": 43004, "times": 2}, timeout=5)
    refused = http.post(control, json={"api": SEND, "errcode": 1, "colour": "red"}, timeout=5)
    no_api = http.post(control, json={"errcode": 1}, timeout=5)

    assert added.json() == {
        "errcode": 0,
        "errmsg": "ok",
        "api_fault": {
            "api": SEND,
            "errcode": 43004,
            "status": None,
            "body": None,
            "drop": None,
            "delay_ms": 0,
            "times": 2,
        },
    }
    assert (refused.status_code, refused.json()["errcode"]) == (400, 40097)
    assert (no_api.status_code, no_api.json()["errcode"]) == (400, 40097)
    assert [send(wechat_sandbox, http, token).json()["errcode"] for _ in range(3)] == [43004, 43004, 0]


def test_every_wechat_api_a_fault_can_name_is_served():
    served = {path for _method, path in SandboxApp(SandboxState()).routes}

    assert set(WECHAT_APIS) <= served
    assert all(ApiFault(api, errcode=-1).api == api for api in WECHAT_APIS)


# --- the request log ----------------------------------------------------------------------------------


def test_the_request_log_holds_api_requests_as_they_arrived(wechat_sandbox, http, token):
    send(wechat_sandbox, http, token)
    http.get(f"{wechat_sandbox.base_url}/sandbox/state", timeout=5)
    http.get(f"{wechat_sandbox.base_url}/cgi-bin/user/info", params={"access_token": token, "openid": "o1"})

    token_call, send_call, user_call = wechat_sandbox.requests()

    assert (token_call.method, token_call.path, token_call.query) == ("POST", STABLE_TOKEN, {})
    assert token_call.json() == TOKEN_BODY
    assert token_call.content_type == "application/json"
    assert (send_call.method, send_call.path, send_call.query) == ("POST", SEND, {"access_token": token})
    assert send_call.json()["touser"] == OPENID
    assert "机械键盘".encode() in send_call.body
    assert (user_call.method, user_call.query, user_call.body) == ("GET", {"access_token": token, "openid": "o1"}, b"")
    assert [call.path for call in wechat_sandbox.requests(SEND)] == [SEND]
    assert all(token_call.time <= call.time <= time.time() for call in (send_call, user_call))


def test_the_state_counts_api_requests_by_source_address_and_forgets_them_on_reset(wechat_sandbox, http, token):
    """What bench/cluster.py reads to tell each host's share of the sends; the control API is not counted."""
    send(wechat_sandbox, http, token)
    send(wechat_sandbox, http, token)
    http.get(f"{wechat_sandbox.base_url}/sandbox/state", timeout=5)

    state = http.get(f"{wechat_sandbox.base_url}/sandbox/state", timeout=5).json()

    assert state["requests_by_source"] == {"127.0.0.1": {SEND: 2, STABLE_TOKEN: 1}}
    assert {call.source for call in wechat_sandbox.requests()} == {"127.0.0.1"}
    wechat_sandbox.state.reset()
    assert wechat_sandbox.state.snapshot()["requests_by_source"] == {}


def test_the_request_log_holds_faulted_calls_and_wrong_paths_and_forgets_them_on_reset(wechat_sandbox, http):
    wechat_sandbox.add_api_fault(STABLE_TOKEN, errcode=-1)
    stable_token(wechat_sandbox, http)
    http.get(f"{wechat_sandbox.base_url}/cgi-bin/no/such/api", timeout=5)

    assert [call.path for call in wechat_sandbox.requests()] == [STABLE_TOKEN, "/cgi-bin/no/such/api"]

    wechat_sandbox.state.reset()
    assert wechat_sandbox.requests() == []
    assert wechat_sandbox.state.request_log.maxlen == REQUEST_LOG_CAPACITY
