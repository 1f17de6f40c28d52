"""WeChatClient at the HTTP level: request shapes, encoding, timeouts, token-invalid retry, network failures."""

import json
import logging
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from wxnotify.wechat import PRODUCTION_API_BASE
from wxnotify.wechat import client as client_module
from wxnotify.wechat.client import AccessToken, Credentials, WeChatClient, shared_session
from wxnotify.wechat.errors import ConfigurationError, NetworkError, PayloadError, RecipientError
from wxnotify.wechat.tokens import AccessTokenManager

API = "http://wechat.test"
SECRET = "app-secret-0123456789abcdef"
TOKEN_1 = "TOKEN-ONE-abcdefghijklmnopqrstuvwxyz"
TOKEN_2 = "TOKEN-TWO-abcdefghijklmnopqrstuvwxyz"
SEND = API + "/cgi-bin/message/template/send"


def new_appid() -> str:
    return "wx" + uuid.uuid4().hex[:16]


@pytest.fixture
def manager():
    return AccessTokenManager()


@pytest.fixture
def wechat(db, manager):
    appid = new_appid()
    client = WeChatClient(Credentials(appid, SECRET), token_manager=manager, api_base=API)
    yield client
    manager.forget(appid)


@pytest.fixture
def mocked():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def stable_token_replies(rsps, *tokens):
    for token in tokens:
        rsps.add(responses.POST, API + "/cgi-bin/stable_token", json={"access_token": token, "expires_in": 7200})


def query(call) -> dict:
    return {key: values[0] for key, values in parse_qs(urlsplit(call.request.url).query).items()}


def test_send_body_is_utf8_json_without_escapes(wechat, mocked):
    stable_token_replies(mocked, TOKEN_1)
    mocked.add(responses.POST, SEND, json={"errcode": 0, "errmsg": "ok", "msgid": 3487542469355618313})

    msgid = wechat.send_template_message(
        touser="OPENID",
        template_id="TPL",
        data={"thing1": "巧克力", "amount2": {"value": "39.8元", "color": "#173177"}},
        url="https://example.com/o/1",
        client_msg_id="MSG_000001",
    )

    assert msgid == 3487542469355618313
    send = mocked.calls[1].request
    assert (
        send.body
        == (
            '{"touser":"OPENID","template_id":"TPL","data":{"thing1":{"value":"巧克力"},"amount2":{"value":"39.8元"}},'
            '"url":"https://example.com/o/1","client_msg_id":"MSG_000001"}'
        ).encode()
    )
    assert b"\\u" not in send.body
    assert send.headers["Content-Type"] == "application/json; charset=utf-8"
    assert query(mocked.calls[1])["access_token"] == TOKEN_1


def test_send_with_miniprogram(wechat, mocked):
    stable_token_replies(mocked, TOKEN_1)
    mocked.add(responses.POST, SEND, json={"errcode": 0, "errmsg": "ok", "msgid": 1})

    wechat.send_template_message(
        touser="O", template_id="T", data={"k": "v"}, miniprogram={"appid": "wxmini", "pagepath": "index?a=1"}
    )

    body = json.loads(mocked.calls[1].request.body)
    assert body["miniprogram"] == {"appid": "wxmini", "pagepath": "index?a=1"}
    assert "url" not in body
    assert "client_msg_id" not in body


def test_stable_token_request_shape(wechat, mocked):
    stable_token_replies(mocked, TOKEN_1)

    before = time.time()
    token = wechat.fetch_access_token(force_refresh=True)

    request = mocked.calls[0].request
    assert request.method == "POST"
    assert json.loads(request.body) == {
        "grant_type": "client_credential",
        "appid": wechat.credentials.appid,
        "secret": SECRET,
        "force_refresh": True,
    }
    assert token.value == TOKEN_1
    assert before <= token.fetched_at <= time.time()
    assert token.expires_at == pytest.approx(token.fetched_at + 7200)
    assert TOKEN_1 not in repr(token)


def test_classic_token_request_shape(db, manager, mocked):
    client = WeChatClient(Credentials(new_appid(), SECRET, "classic"), token_manager=manager, api_base=API)
    mocked.add(responses.GET, API + "/cgi-bin/token", json={"access_token": TOKEN_1, "expires_in": 7200})

    token = client.fetch_access_token()

    assert mocked.calls[0].request.method == "GET"
    assert query(mocked.calls[0]) == {
        "grant_type": "client_credential",
        "appid": client.credentials.appid,
        "secret": SECRET,
    }
    assert token.value == TOKEN_1


def test_token_endpoint_40001_means_wrong_secret(wechat, mocked):
    mocked.add(responses.POST, API + "/cgi-bin/stable_token", json={"errcode": 40001, "errmsg": "invalid credential"})

    with pytest.raises(ConfigurationError) as excinfo:
        wechat.fetch_access_token()

    assert excinfo.value.errcode == 40001
    assert SECRET not in str(excinfo.value)


def test_timeouts_come_from_settings(wechat, mocked, settings):
    settings.WECHAT_CONNECT_TIMEOUT = 1.5
    settings.WECHAT_READ_TIMEOUT = 7.0
    stable_token_replies(mocked, TOKEN_1)
    mocked.add(responses.GET, API + "/cgi-bin/user/info", json={"subscribe": 1, "openid": "O"})

    wechat.get_user_info("O")

    assert all(call.request.req_kwargs["timeout"] == (1.5, 7.0) for call in mocked.calls)


def test_api_base_defaults_to_the_setting_read_lazily(db, manager, settings):
    client = WeChatClient(Credentials(new_appid(), SECRET), token_manager=manager)
    settings.WECHAT_API_BASE = "http://127.0.0.1:1234"

    assert client.api_base == "http://127.0.0.1:1234"


def test_token_invalid_refreshes_and_retries_once(wechat, mocked):
    stable_token_replies(mocked, TOKEN_1, TOKEN_2)
    mocked.add(responses.POST, SEND, json={"errcode": 40001, "errmsg": "invalid credential"})
    mocked.add(responses.POST, SEND, json={"errcode": 0, "errmsg": "ok", "msgid": 7})

    assert wechat.send_template_message(touser="O", template_id="T", data={"k": "v"}) == 7

    paths = [urlsplit(call.request.url).path for call in mocked.calls]
    assert paths == ["/cgi-bin/stable_token", SEND[len(API) :], "/cgi-bin/stable_token", SEND[len(API) :]]
    assert query(mocked.calls[1])["access_token"] == TOKEN_1
    assert query(mocked.calls[3])["access_token"] == TOKEN_2
    assert mocked.calls[1].request.body == mocked.calls[3].request.body


def test_second_token_invalid_is_a_configuration_error(wechat, mocked):
    stable_token_replies(mocked, TOKEN_1, TOKEN_2)
    mocked.add(responses.POST, SEND, json={"errcode": 42001, "errmsg": "access_token expired"})
    mocked.add(responses.POST, SEND, json={"errcode": 40001, "errmsg": "invalid credential"})

    with pytest.raises(ConfigurationError) as excinfo:
        wechat.send_template_message(touser="O", template_id="T", data={"k": "v"})

    assert excinfo.value.errcode == 40001
    assert "another system" in str(excinfo.value)
    assert sum(urlsplit(call.request.url).path.endswith("/send") for call in mocked.calls) == 2


def test_business_errors_are_classified_and_logged(wechat, mocked, caplog):
    stable_token_replies(mocked, TOKEN_1)
    mocked.add(responses.POST, SEND, json={"errcode": 43004, "errmsg": "require subscribe rid: 1"})

    with caplog.at_level(logging.WARNING, logger="wxnotify.wechat"), pytest.raises(RecipientError):
        wechat.send_template_message(touser="O", template_id="T", data={"k": "v"})

    assert "/cgi-bin/message/template/send" in caplog.text
    assert "43004" in caplog.text
    assert TOKEN_1 not in caplog.text


def test_payload_error(wechat, mocked):
    stable_token_replies(mocked, TOKEN_1)
    mocked.add(responses.POST, SEND, json={"errcode": 47003, "errmsg": "argument invalid! data.thing1.value invalid"})

    with pytest.raises(PayloadError):
        wechat.send_template_message(touser="O", template_id="T", data={"thing1": "x"})


@pytest.mark.parametrize(
    ("raised", "outcome_unknown"),
    [
        (requests.ConnectTimeout("connect timed out"), False),
        (requests.ConnectionError(MaxRetryError(None, "/x", NewConnectionError(None, "refused"))), False),
        (requests.ReadTimeout("read timed out"), True),
        (requests.ConnectionError(ProtocolError("Connection aborted.")), True),
    ],
)
def test_transport_failures_are_network_errors(wechat, mocked, raised, outcome_unknown):
    stable_token_replies(mocked, TOKEN_1)
    mocked.add(responses.POST, SEND, body=raised)

    with pytest.raises(NetworkError) as excinfo:
        wechat.send_template_message(touser="O", template_id="T", data={"k": "v"})

    assert excinfo.value.outcome_unknown is outcome_unknown
    assert excinfo.value.__cause__ is None
    assert TOKEN_1 not in str(excinfo.value)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_http_5xx_is_a_network_error_with_unknown_outcome(wechat, mocked, status):
    stable_token_replies(mocked, TOKEN_1)
    mocked.add(responses.POST, SEND, status=status, body="bad gateway")

    with pytest.raises(NetworkError) as excinfo:
        wechat.send_template_message(touser="O", template_id="T", data={"k": "v"})

    assert excinfo.value.outcome_unknown is True
    assert str(status) in str(excinfo.value)


def test_unreadable_json_is_a_network_error(wechat, mocked):
    stable_token_replies(mocked, TOKEN_1)
    mocked.add(responses.POST, SEND, body="<html>proxy error</html>")

    with pytest.raises(NetworkError) as excinfo:
        wechat.send_template_message(touser="O", template_id="T", data={"k": "v"})

    assert excinfo.value.outcome_unknown is True


def test_http_4xx_points_at_the_api_base(wechat, mocked):
    stable_token_replies(mocked, TOKEN_1)
    mocked.add(responses.POST, SEND, status=404, body="not found")

    with pytest.raises(ConfigurationError, match="WECHAT_API_BASE"):
        wechat.send_template_message(touser="O", template_id="T", data={"k": "v"})


def test_connection_refused_on_a_closed_port_is_known_not_sent(db, manager):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = WeChatClient(
        Credentials(new_appid(), SECRET, "classic"), token_manager=manager, api_base=f"http://127.0.0.1:{port}"
    )

    with pytest.raises(NetworkError) as excinfo:
        client.fetch_access_token()

    assert excinfo.value.outcome_unknown is False
    assert SECRET not in str(excinfo.value)
    assert SECRET not in repr(excinfo.value)


class SilentHandler(BaseHTTPRequestHandler):
    """Accepts the request and never answers in time, like WeChat behind a stalled network."""

    def do_POST(self):
        time.sleep(1.0)
        self.close_connection = True

    def log_message(self, format, *args):
        pass


def test_read_timeout_on_a_real_server_has_unknown_outcome(db, manager, settings):
    settings.WECHAT_READ_TIMEOUT = 0.2
    server = ThreadingHTTPServer(("127.0.0.1", 0), SilentHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        client = WeChatClient(Credentials(new_appid(), SECRET), token_manager=manager, api_base=base)
        with pytest.raises(NetworkError) as excinfo:
            client.fetch_access_token()
    finally:
        server.shutdown()
        server.server_close()

    assert excinfo.value.outcome_unknown is True


def test_private_templates(wechat, mocked):
    stable_token_replies(mocked, TOKEN_1)
    template = {"template_id": "T1", "title": "领取奖金提醒", "content": "{{result.DATA}}", "example": ""}
    mocked.add(responses.GET, API + "/cgi-bin/template/get_all_private_template", json={"template_list": [template]})

    assert wechat.get_all_private_templates() == [template]
    assert mocked.calls[1].request.body is None


def test_user_info(wechat, mocked):
    stable_token_replies(mocked, TOKEN_1)
    mocked.add(responses.GET, API + "/cgi-bin/user/info", json={"subscribe": 1, "openid": "O", "qr_scene_str": "s"})

    assert wechat.get_user_info("O", lang="en")["qr_scene_str"] == "s"
    assert query(mocked.calls[1]) == {"openid": "O", "lang": "en", "access_token": TOKEN_1}


def test_batch_user_info(wechat, mocked):
    stable_token_replies(mocked, TOKEN_1)
    users = [{"subscribe": 1, "openid": "A"}, {"subscribe": 0, "openid": "B"}]
    mocked.add(responses.POST, API + "/cgi-bin/user/info/batchget", json={"user_info_list": users})

    assert wechat.batch_get_user_info(["A", "B"]) == users
    assert json.loads(mocked.calls[1].request.body) == {
        "user_list": [{"openid": "A", "lang": "zh_CN"}, {"openid": "B", "lang": "zh_CN"}]
    }


def test_batch_user_info_limits(wechat, mocked):
    with pytest.raises(ValueError, match="100"):
        wechat.batch_get_user_info([f"O{i}" for i in range(101)])
    assert wechat.batch_get_user_info([]) == []
    assert len(mocked.calls) == 0


def test_temporary_qrcode(wechat, mocked):
    stable_token_replies(mocked, TOKEN_1)
    reply = {"ticket": "gQH47joAAA==", "expire_seconds": 600, "url": "http://weixin.qq.com/q/kZgfwMTm72"}
    mocked.add(responses.POST, API + "/cgi-bin/qrcode/create", json=reply)

    assert wechat.create_qrcode(scene_str="bind:42", expire_seconds=600) == reply
    assert json.loads(mocked.calls[1].request.body) == {
        "action_info": {"scene": {"scene_str": "bind:42"}},
        "action_name": "QR_STR_SCENE",
        "expire_seconds": 600,
    }


def test_permanent_qrcode(wechat, mocked):
    stable_token_replies(mocked, TOKEN_1)
    mocked.add(responses.POST, API + "/cgi-bin/qrcode/create", json={"ticket": "t", "url": "u"})

    wechat.create_qrcode(scene_str="shop", permanent=True)

    assert json.loads(mocked.calls[1].request.body) == {
        "action_info": {"scene": {"scene_str": "shop"}},
        "action_name": "QR_LIMIT_STR_SCENE",
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scene_str": ""},
        {"scene_str": "x" * 65},
        {"scene_str": "s", "expire_seconds": 2_592_001},
        {"scene_str": "s", "expire_seconds": 60, "permanent": True},
    ],
)
def test_qrcode_arguments_are_validated(wechat, mocked, kwargs):
    with pytest.raises(ValueError):
        wechat.create_qrcode(**kwargs)
    assert len(mocked.calls) == 0


def test_one_session_per_process_rebuilt_after_fork(monkeypatch, settings):
    settings.WECHAT_HTTP_POOL_SIZE = 17
    monkeypatch.setattr(client_module, "_session", None)
    first = shared_session()

    assert shared_session() is first
    adapter = first.get_adapter(PRODUCTION_API_BASE)
    assert adapter._pool_maxsize == 17
    assert adapter.max_retries.total == 0

    real_pid = client_module.os.getpid()
    monkeypatch.setattr(client_module.os, "getpid", lambda: real_pid + 1)
    assert shared_session() is not first


def test_reprs_hide_secrets(wechat):
    token = AccessToken(value=TOKEN_1, expires_at=1.0, fetched_at=0.0)

    assert SECRET not in repr(wechat)
    assert SECRET not in repr(wechat.credentials)
    assert TOKEN_1 not in repr(token)
