"""The sandbox's delivery faults: replies lost after delivering, and a configurable de-duplication window.

A dropped reply is the case a sender cannot tell from a lost request: the sandbox recorded (and de-duplicates)
the send, but the client gets no answer, either a closed connection or silence until its read timeout.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from sandbox.demo import DEMO_ACCOUNT, DEMO_APPID, demo_config
from sandbox.server import SandboxServer
from sandbox.state import Faults, SandboxState, seeded_openid
from tests import factories
from wxnotify.wechat.client import Credentials, WeChatClient
from wxnotify.wechat.errors import NetworkError
from wxnotify.wechat.tokens import AccessTokenManager

ORDER_TEMPLATE = factories.ORDER_TEMPLATE
# The data as it goes over the wire: {keyword: {"value": ...}}.
ORDER_DATA = {keyword: {"value": value} for keyword, value in factories.ORDER_DATA.items()}
OPENID = seeded_openid(DEMO_APPID, 0)


@pytest.fixture
def token(wechat_sandbox, http):
    params = {"grant_type": "client_credential", "appid": DEMO_APPID, "secret": DEMO_ACCOUNT["secret"]}
    return http.get(f"{wechat_sandbox.base_url}/cgi-bin/token", params=params, timeout=5).json()["access_token"]


def send(sandbox, http, token, client_msg_id=None, *, touser=OPENID, timeout=5.0):
    payload = {"touser": touser, "template_id": ORDER_TEMPLATE, "data": ORDER_DATA}
    if client_msg_id is not None:
        payload["client_msg_id"] = client_msg_id
    return http.post(
        f"{sandbox.base_url}/cgi-bin/message/template/send",
        params={"access_token": token},
        data=json.dumps(payload, ensure_ascii=False).encode(),
        timeout=timeout,
    )


def outcomes(sandbox):
    """(client_msg_id, outcome, reply dropped) of every send the sandbox recorded, oldest first."""
    return [(sent["client_msg_id"], sent["outcome"], sent["reply_dropped"]) for sent in sandbox.state.list_sends()]


def wait_until(condition, timeout=3.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# --- dropped replies ----------------------------------------------------------------------------------------------


def test_a_closed_reply_is_delivered_and_a_resend_is_deduplicated(wechat_sandbox, http, token):
    wechat_sandbox.set_faults(drop_reply_rate=1.0, drop_reply_mode="close")
    with pytest.raises(requests.ConnectionError):
        send(wechat_sandbox, http, token, "order-1")
    [delivered] = wechat_sandbox.messages()
    assert delivered["client_msg_id"] == "order-1"

    wechat_sandbox.set_faults(drop_reply_rate=0.0)
    resend = send(wechat_sandbox, http, token, "order-1").json()
    assert resend == {"errcode": 0, "errmsg": "ok", "msgid": delivered["msgid"]}
    assert len(wechat_sandbox.messages()) == 1
    assert outcomes(wechat_sandbox) == [("order-1", "delivered", True), ("order-1", "deduplicated", False)]
    counters = wechat_sandbox.counters()
    assert (counters["sends"], counters["delivered"], counters["duplicates"]) == (2, 1, 1)
    assert (counters["replies_dropped"], counters["redelivered"]) == (1, 0)


def test_a_hanging_reply_lasts_until_the_client_gives_up(http):
    # A server of its own: the session's sandbox keeps other tests' idle keep-alive connections open.
    server = SandboxServer(SandboxState(demo_config(callback_url="", followers=3))).start()
    try:
        server.state.set_faults(drop_reply_rate=1.0, drop_reply_mode="hang", drop_reply_hang_ms=30_000)
        params = {"grant_type": "client_credential", "appid": DEMO_APPID, "secret": DEMO_ACCOUNT["secret"]}
        token = http.get(f"{server.base_url}/cgi-bin/token", params=params, timeout=5).json()["access_token"]
        started = time.monotonic()
        with pytest.raises(requests.ReadTimeout):
            send(server, http, token, "order-2", timeout=0.3)
        assert time.monotonic() - started < 5
        assert [m["client_msg_id"] for m in server.state.list_messages()] == ["order-2"]
        # The client closed its connection on the timeout; the sandbox's thread stops waiting and lets it go.
        http.close()
        assert wait_until(lambda: server.open_connections() == 0)
    finally:
        server.stop()


def test_a_hanging_reply_ends_with_a_closed_connection_after_its_limit(wechat_sandbox, http, token):
    wechat_sandbox.set_faults(drop_reply_rate=1.0, drop_reply_mode="hang", drop_reply_hang_ms=300)
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError) as raised:
        send(wechat_sandbox, http, token, "order-3", timeout=10)
    elapsed = time.monotonic() - started
    assert not isinstance(raised.value, requests.ReadTimeout)
    assert 0.3 <= elapsed < 5
    assert wechat_sandbox.counters()["replies_dropped"] == 1


def test_mixed_mode_both_closes_and_hangs(wechat_sandbox, http, token):
    wechat_sandbox.set_faults(drop_reply_rate=1.0, drop_reply_mode="mixed", drop_reply_hang_ms=600)
    durations = []
    for index in range(15):
        started = time.monotonic()
        with pytest.raises(requests.ConnectionError):
            send(wechat_sandbox, http, token, f"mixed-{index}")
        durations.append(time.monotonic() - started)
    # A hang lasts its 600 ms at least; a close answers at once (well under 0.5 s even on a busy machine).
    closed = [d for d in durations if d < 0.5]
    hung = [d for d in durations if d >= 0.6]
    assert closed and hung
    assert len(closed) + len(hung) == 15
    assert len(wechat_sandbox.messages()) == 15


def test_only_some_replies_are_dropped_at_a_partial_rate(wechat_sandbox, http, token):
    wechat_sandbox.set_faults(drop_reply_rate=0.5, drop_reply_mode="close")
    answered = dropped = 0
    for index in range(100):
        try:
            assert send(wechat_sandbox, http, token, f"partial-{index}").json()["errcode"] == 0
            answered += 1
        except requests.ConnectionError:
            dropped += 1
    assert 20 < dropped < 80
    counters = wechat_sandbox.counters()
    assert (counters["delivered"], counters["replies_dropped"]) == (100, dropped)
    assert sum(reply_dropped for _, _, reply_dropped in outcomes(wechat_sandbox)) == dropped


def test_a_failed_send_is_answered_not_dropped(wechat_sandbox, http, token):
    wechat_sandbox.set_faults(error_rate=1.0, error_code=-1, drop_reply_rate=1.0)
    assert send(wechat_sandbox, http, token, "fails").json()["errcode"] == -1
    [record] = wechat_sandbox.state.list_sends()
    assert (record["outcome"], record["errcode"], record["reply_dropped"]) == ("failed", -1, False)
    assert wechat_sandbox.messages() == []


@pytest.mark.parametrize("mode", ["close", "hang"])
def test_our_client_reads_a_dropped_reply_as_outcome_unknown(wechat_sandbox, db, settings, mode):
    """What the chaos bench relies on: the service's client cannot tell a dropped reply from a lost send."""
    settings.WECHAT_READ_TIMEOUT = 0.5
    wechat_sandbox.set_faults(drop_reply_rate=1.0, drop_reply_mode=mode, drop_reply_hang_ms=5_000)
    manager = AccessTokenManager()
    client = WeChatClient(
        Credentials(DEMO_APPID, DEMO_ACCOUNT["secret"]), token_manager=manager, api_base=wechat_sandbox.base_url
    )
    try:
        with pytest.raises(NetworkError) as raised:
            client.send_template_message(
                touser=OPENID, template_id=ORDER_TEMPLATE, data=ORDER_DATA, client_msg_id=f"client-{mode}"
            )
    finally:
        manager.forget(DEMO_APPID)
    assert raised.value.outcome_unknown
    assert [m["client_msg_id"] for m in wechat_sandbox.messages()] == [f"client-{mode}"]


# --- the de-duplication window ------------------------------------------------------------------------------------


def test_a_resend_after_a_short_window_is_delivered_again_and_counted(wechat_sandbox, http, token, monkeypatch):
    wechat_sandbox.set_faults(dedupe_window_s=30)
    first = send(wechat_sandbox, http, token, "late").json()
    assert send(wechat_sandbox, http, token, "late").json()["msgid"] == first["msgid"]
    real_monotonic = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real_monotonic() + 31)
    again = send(wechat_sandbox, http, token, "late").json()
    assert again["errcode"] == 0 and again["msgid"] != first["msgid"]
    # Once delivered again, the window starts over for the new delivery.
    assert send(wechat_sandbox, http, token, "late").json()["msgid"] == again["msgid"]
    assert [outcome for _, outcome, _ in outcomes(wechat_sandbox)] == [
        "delivered",
        "deduplicated",
        "redelivered",
        "deduplicated",
    ]
    counters = wechat_sandbox.counters()
    assert (counters["delivered"], counters["duplicates"], counters["redelivered"]) == (2, 2, 1)


def test_the_window_still_defaults_to_ten_minutes(wechat_sandbox, http, token, monkeypatch):
    assert wechat_sandbox.state.faults.dedupe_window_s == 600
    first = send(wechat_sandbox, http, token, "ten-minutes").json()
    real_monotonic = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real_monotonic() + 590)
    assert send(wechat_sandbox, http, token, "ten-minutes").json()["msgid"] == first["msgid"]
    assert wechat_sandbox.counters()["redelivered"] == 0


def test_sends_without_client_msg_id_are_never_deduplicated_nor_redelivered(wechat_sandbox, http, token):
    send(wechat_sandbox, http, token)
    send(wechat_sandbox, http, token)
    counters = wechat_sandbox.counters()
    assert (counters["delivered"], counters["duplicates"], counters["redelivered"]) == (2, 0, 0)


# --- settings and the send log ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"drop_reply_rate": 1.5},
        {"drop_reply_rate": -0.1},
        {"drop_reply_mode": "sometimes"},
        {"drop_reply_hang_ms": -1},
        {"dedupe_window_s": 0},
        {"dedupe_window_s": "soon"},
    ],
)
def test_bad_drop_and_window_settings_are_refused(wechat_sandbox, http, change):
    reply = http.post(f"{wechat_sandbox.base_url}/sandbox/faults", json=change, timeout=5)
    assert reply.status_code == 400
    assert reply.json()["errcode"] == 40097


def test_a_refused_fault_update_changes_nothing(wechat_sandbox, http):
    reply = http.post(
        f"{wechat_sandbox.base_url}/sandbox/faults", json={"drop_reply_rate": 0.5, "drop_reply_mode": "x"}, timeout=5
    )
    assert reply.status_code == 400
    assert wechat_sandbox.state.faults.drop_reply_rate == 0.0
    faults = Faults()
    with pytest.raises(ValueError, match="dedupe_window_s"):
        faults.update(latency_ms=5, dedupe_window_s=-1)
    assert faults.latency_ms == 0


def test_fault_settings_over_http_and_in_a_config(wechat_sandbox, http):
    reply = http.post(
        f"{wechat_sandbox.base_url}/sandbox/faults",
        json={"drop_reply_rate": 0.05, "drop_reply_mode": "mixed", "drop_reply_hang_ms": 1500, "dedupe_window_s": 90},
        timeout=5,
    ).json()
    assert reply["faults"]["drop_reply_mode"] == "mixed"
    assert (reply["faults"]["drop_reply_rate"], reply["faults"]["dedupe_window_s"]) == (0.05, 90.0)
    state = SandboxState({"accounts": [], "faults": {"drop_reply_mode": "hang", "dedupe_window_s": 5}})
    assert (state.faults.drop_reply_mode, state.faults.dedupe_window_s) == ("hang", 5.0)


def test_the_send_log_lists_every_authenticated_send_with_filters(wechat_sandbox, http, token):
    wechat_sandbox.set_faults(error_rate=1.0, error_code=45009)
    send(wechat_sandbox, http, token, "quota")
    wechat_sandbox.set_faults(error_rate=0.0)
    boundary = time.time()
    send(wechat_sandbox, http, token, "ok-1")
    send(wechat_sandbox, http, token, "ok-2")
    send(wechat_sandbox, http, "not-a-token", "unauthenticated")
    base = f"{wechat_sandbox.base_url}/sandbox/sends"
    everything = http.get(base, timeout=5).json()
    assert everything["count"] == 3
    assert [(s["client_msg_id"], s["outcome"], s["errcode"]) for s in everything["sends"]] == [
        ("quota", "failed", 45009),
        ("ok-1", "delivered", 0),
        ("ok-2", "delivered", 0),
    ]
    assert everything["sends"][1]["touser"] == OPENID and everything["sends"][1]["msgid"] > 0
    assert [s["client_msg_id"] for s in http.get(base, params={"since": boundary}, timeout=5).json()["sends"]] == [
        "ok-1",
        "ok-2",
    ]
    assert [s["client_msg_id"] for s in http.get(base, params={"limit": 1}, timeout=5).json()["sends"]] == ["ok-2"]
    assert http.get(base, params={"appid": "wx0000000000000000"}, timeout=5).json()["count"] == 0


def test_reset_forgets_the_send_log_and_earlier_deliveries(wechat_sandbox, http, token, monkeypatch):
    wechat_sandbox.set_faults(dedupe_window_s=30)
    send(wechat_sandbox, http, token, "before-reset")
    wechat_sandbox.state.reset()
    assert wechat_sandbox.state.list_sends() == []
    params = {"grant_type": "client_credential", "appid": DEMO_APPID, "secret": DEMO_ACCOUNT["secret"]}
    fresh = http.get(f"{wechat_sandbox.base_url}/cgi-bin/token", params=params, timeout=5).json()["access_token"]
    send(wechat_sandbox, http, fresh, "before-reset")
    assert outcomes(wechat_sandbox) == [("before-reset", "delivered", False)]


def test_the_log_and_the_redelivery_memory_keep_the_capacity():
    state = SandboxState({"accounts": [{"appid": DEMO_APPID, "secret": "s", "followers": 3}]}, message_capacity=2)
    token = state.issue_classic_token("client_credential", DEMO_APPID, "s")["access_token"]
    for index in range(3):
        body = {"touser": seeded_openid(DEMO_APPID, 0), "template_id": ORDER_TEMPLATE, "data": ORDER_DATA}
        state.send_template(token, json.dumps({**body, "client_msg_id": f"cap-{index}"}, ensure_ascii=False).encode())
    assert [record["client_msg_id"] for record in state.list_sends()] == ["cap-1", "cap-2"]
    assert len(state.list_messages()) == 2
    with pytest.raises(ValueError, match="message_capacity"):
        SandboxState({"accounts": []}, message_capacity=0)
