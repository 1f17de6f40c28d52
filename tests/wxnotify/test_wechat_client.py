"""WeChatClient at the HTTP level against the sandbox: request shapes, encoding, timeouts, token-invalid retry,
network failures.

What the client sent is read from the sandbox's request log (the bytes as they arrived); WeChat's failures are
the sandbox's own answers or its API faults (``sandbox.state.api_faults``).
"""

import logging
import time
import uuid
from contextlib import contextmanager

import pytest
import requests

from tests.servers import free_port, unanswered_port
from wxnotify.wechat import PRODUCTION_API_BASE
from wxnotify.wechat import client as client_module
from wxnotify.wechat.client import AccessToken, Credentials, WeChatClient, shared_session
from wxnotify.wechat.errors import ConfigurationError, NetworkError, PayloadError, RecipientError
from wxnotify.wechat.tokens import AccessTokenManager

SECRET = "app-secret-0123456789abcdef"
TOKEN_1 = "TOKEN-ONE-abcdefghijklmnopqrstuvwxyz"
SEND = "/cgi-bin/message/template/send"
STABLE_TOKEN = "/cgi-bin/stable_token"
USER_GET = "/cgi-bin/user/get"
# Every test's account at the sandbox: these followers, and templates for the data the tests send.
FOLLOWERS = ["OPENID", "O", "A", "B", "C"]
TEMPLATES = [
    {"template_id": "TPL", "title": "订单通知", "content": "{{thing1.DATA}}{{amount2.DATA}}"},
    {"template_id": "T", "title": "通知", "content": "{{k.DATA}}"},
    {
        "template_id": "T1",
        "title": "领取奖金提醒",
        "content": "{{result.DATA}}",
        "primary_industry": "IT科技",
        "deputy_industry": "互联网|电子商务",
        "example": "",
    },
]


def new_appid() -> str:
    return "wx" + uuid.uuid4().hex[:16]


@pytest.fixture
def manager():
    return AccessTokenManager()


@pytest.fixture
def wechat(db, manager, wechat_sandbox):
    appid = new_appid()
    wechat_sandbox.add_account(appid=appid, secret=SECRET, followers=FOLLOWERS, templates=TEMPLATES)
    client = WeChatClient(Credentials(appid, SECRET), token_manager=manager, api_base=wechat_sandbox.base_url)
    yield client
    manager.forget(appid)


def stable_token_of(sandbox, client) -> str:
    """The stable access_token the sandbox handed to ``client``'s account last."""
    return sandbox.account(client.credentials.appid).stable_token


class RecordingSession(requests.Session):
    """A real session that also notes the keyword arguments of every request it makes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict] = []

    def request(self, method, url, **kwargs):
        self.calls.append(kwargs)
        return super().request(method, url, **kwargs)


def test_send_body_is_utf8_json_without_escapes(wechat, wechat_sandbox):
    msgid = wechat.send_template_message(
        touser="OPENID",
        template_id="TPL",
        data={"thing1": "巧克力", "amount2": {"value": "39.8元", "color": "#173177"}},
        url="https://example.com/o/1",
        client_msg_id="MSG_000001",
    )

    [delivered] = wechat_sandbox.messages(wechat.credentials.appid)
    assert msgid == delivered["msgid"] > 2**53  # a 64-bit id, kept exact
    send = wechat_sandbox.requests()[1]
    assert (
        send.body
        == (
            '{"touser":"OPENID","template_id":"TPL","data":{"thing1":{"value":"巧克力"},"amount2":{"value":"39.8元"}},'
            '"url":"https://example.com/o/1","client_msg_id":"MSG_000001"}'
        ).encode()
    )
    assert b"\\u" not in send.body
    assert send.content_type == "application/json; charset=utf-8"
    assert send.query["access_token"] == stable_token_of(wechat_sandbox, wechat)


def test_send_with_miniprogram(wechat, wechat_sandbox):
    wechat.send_template_message(
        touser="O", template_id="T", data={"k": "v"}, miniprogram={"appid": "wxmini", "pagepath": "index?a=1"}
    )

    body = wechat_sandbox.requests(SEND)[0].json()
    assert body["miniprogram"] == {"appid": "wxmini", "pagepath": "index?a=1"}
    assert "url" not in body
    assert "client_msg_id" not in body


def test_stable_token_request_shape(wechat, wechat_sandbox):
    before = time.time()
    token = wechat.fetch_access_token(force_refresh=True)

    [request] = wechat_sandbox.requests()
    assert (request.method, request.path) == ("POST", STABLE_TOKEN)
    assert request.json() == {
        "grant_type": "client_credential",
        "appid": wechat.credentials.appid,
        "secret": SECRET,
        "force_refresh": True,
    }
    assert token.value == stable_token_of(wechat_sandbox, wechat)
    assert before <= token.fetched_at <= time.time()
    assert token.expires_at == pytest.approx(token.fetched_at + 7200)
    assert token.value not in repr(token)


def test_classic_token_request_shape(db, manager, wechat_sandbox):
    appid = new_appid()
    wechat_sandbox.add_account(appid=appid, secret=SECRET)
    credentials = Credentials(appid, SECRET, "classic")
    client = WeChatClient(credentials, token_manager=manager, api_base=wechat_sandbox.base_url)

    token = client.fetch_access_token()

    [request] = wechat_sandbox.requests()
    assert (request.method, request.path) == ("GET", "/cgi-bin/token")
    assert request.query == {"grant_type": "client_credential", "appid": appid, "secret": SECRET}
    assert token.value == wechat_sandbox.account(appid).classic_token


def test_token_endpoint_40001_means_wrong_secret(wechat, wechat_sandbox):
    wechat_sandbox.add_api_fault(STABLE_TOKEN, errcode=40001)

    with pytest.raises(ConfigurationError) as excinfo:
        wechat.fetch_access_token()

    assert excinfo.value.errcode == 40001
    assert SECRET not in str(excinfo.value)


def test_timeouts_come_from_settings(db, manager, wechat, wechat_sandbox, settings):
    settings.WECHAT_CONNECT_TIMEOUT = 1.5
    settings.WECHAT_READ_TIMEOUT = 7.0
    session = RecordingSession()
    client = WeChatClient(wechat.credentials, token_manager=manager, api_base=wechat_sandbox.base_url, session=session)

    client.get_user_info("O")

    assert len(session.calls) == 2  # the token, then user/info
    assert all(call["timeout"] == (1.5, 7.0) for call in session.calls)


def test_api_base_defaults_to_the_setting_read_lazily(db, manager, settings):
    client = WeChatClient(Credentials(new_appid(), SECRET), token_manager=manager)
    settings.WECHAT_API_BASE = "http://127.0.0.1:1234"

    assert client.api_base == "http://127.0.0.1:1234"


def test_token_invalid_refreshes_and_retries_once(wechat, wechat_sandbox):
    first = wechat.token_manager.get_token(wechat)
    wechat_sandbox.invalidate_tokens(wechat.credentials.appid)  # as when another system fetched a new one

    msgid = wechat.send_template_message(touser="O", template_id="T", data={"k": "v"})

    assert msgid == wechat_sandbox.messages(wechat.credentials.appid)[0]["msgid"]
    calls = wechat_sandbox.requests()
    assert [call.path for call in calls] == [STABLE_TOKEN, SEND, STABLE_TOKEN, SEND]
    second = stable_token_of(wechat_sandbox, wechat)
    assert second != first
    assert calls[1].query["access_token"] == first
    assert calls[3].query["access_token"] == second
    assert calls[1].body == calls[3].body


def test_second_token_invalid_is_a_configuration_error(wechat, wechat_sandbox):
    wechat_sandbox.add_api_fault(SEND, errcode=42001)
    wechat_sandbox.add_api_fault(SEND, errcode=40001)

    with pytest.raises(ConfigurationError) as excinfo:
        wechat.send_template_message(touser="O", template_id="T", data={"k": "v"})

    assert excinfo.value.errcode == 40001
    assert "another system" in str(excinfo.value)
    assert len(wechat_sandbox.requests(SEND)) == 2


def test_business_errors_are_classified_and_logged(wechat, wechat_sandbox, caplog):
    with caplog.at_level(logging.WARNING, logger="wxnotify.wechat"), pytest.raises(RecipientError):
        wechat.send_template_message(touser="unsub_O", template_id="T", data={"k": "v"})  # not following: 43004

    assert "/cgi-bin/message/template/send" in caplog.text
    assert "43004" in caplog.text
    assert stable_token_of(wechat_sandbox, wechat) not in caplog.text


def test_payload_error(wechat):
    with pytest.raises(PayloadError):  # 47003: a thing keyword holds at most 20 characters
        wechat.send_template_message(touser="O", template_id="TPL", data={"thing1": "x" * 21, "amount2": "1元"})


@contextmanager
def refused_connection(sandbox, settings):
    yield f"http://127.0.0.1:{free_port()}"


@contextmanager
def connect_timeout(sandbox, settings):
    settings.WECHAT_CONNECT_TIMEOUT = 0.2
    with unanswered_port() as port:
        yield f"http://127.0.0.1:{port}"


@contextmanager
def read_timeout(sandbox, settings):
    settings.WECHAT_READ_TIMEOUT = 0.2
    sandbox.add_api_fault(SEND, delay_ms=1000)
    yield sandbox.base_url


@contextmanager
def closed_connection(sandbox, settings):
    sandbox.add_api_fault(SEND, drop="close")
    yield sandbox.base_url


@pytest.mark.parametrize(
    ("failure", "outcome_unknown"),
    [(connect_timeout, False), (refused_connection, False), (read_timeout, True), (closed_connection, True)],
)
def test_transport_failures_are_network_errors(wechat, wechat_sandbox, manager, settings, failure, outcome_unknown):
    token = manager.get_token(wechat)  # from the sandbox; the send then fails on its way
    with failure(wechat_sandbox, settings) as api_base, pytest.raises(NetworkError) as excinfo:
        WeChatClient(wechat.credentials, token_manager=manager, api_base=api_base).send_template_message(
            touser="O", template_id="T", data={"k": "v"}
        )

    assert excinfo.value.outcome_unknown is outcome_unknown
    assert excinfo.value.__cause__ is None
    assert token not in str(excinfo.value)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_http_5xx_is_a_network_error_with_unknown_outcome(wechat, wechat_sandbox, status):
    wechat_sandbox.add_api_fault(SEND, status=status, body="bad gateway")

    with pytest.raises(NetworkError) as excinfo:
        wechat.send_template_message(touser="O", template_id="T", data={"k": "v"})

    assert excinfo.value.outcome_unknown is True
    assert str(status) in str(excinfo.value)


def test_unreadable_json_is_a_network_error(wechat, wechat_sandbox):
    wechat_sandbox.add_api_fault(SEND, body="<html>proxy error</html>")

    with pytest.raises(NetworkError) as excinfo:
        wechat.send_template_message(touser="O", template_id="T", data={"k": "v"})

    assert excinfo.value.outcome_unknown is True


def test_http_4xx_points_at_the_api_base(wechat, wechat_sandbox):
    wechat_sandbox.add_api_fault(SEND, status=404, body="not found")

    with pytest.raises(ConfigurationError, match="WECHAT_API_BASE"):
        wechat.send_template_message(touser="O", template_id="T", data={"k": "v"})


def test_connection_refused_on_a_closed_port_is_known_not_sent(db, manager):
    client = WeChatClient(
        Credentials(new_appid(), SECRET, "classic"), token_manager=manager, api_base=f"http://127.0.0.1:{free_port()}"
    )

    with pytest.raises(NetworkError) as excinfo:
        client.fetch_access_token()

    assert excinfo.value.outcome_unknown is False
    assert SECRET not in str(excinfo.value)
    assert SECRET not in repr(excinfo.value)


def test_read_timeout_on_a_real_server_has_unknown_outcome(wechat, wechat_sandbox, settings):
    """The sandbox takes the request and answers too late, like WeChat behind a stalled network."""
    settings.WECHAT_READ_TIMEOUT = 0.2
    wechat_sandbox.add_api_fault(STABLE_TOKEN, delay_ms=1000)

    with pytest.raises(NetworkError) as excinfo:
        wechat.fetch_access_token()

    assert excinfo.value.outcome_unknown is True


def test_private_templates(wechat, wechat_sandbox):
    assert wechat.get_all_private_templates() == [
        {
            "template_id": template["template_id"],
            "title": template["title"],
            "content": template["content"],
            "primary_industry": "IT科技",
            "deputy_industry": "互联网|电子商务",
            "example": "",
        }
        for template in TEMPLATES
    ]
    listing = wechat_sandbox.requests()[1]
    assert (listing.method, listing.body, listing.content_type) == ("GET", b"", "")


def test_user_info(wechat, wechat_sandbox):
    wechat_sandbox.account(wechat.credentials.appid).subscribe("O", "s")  # followed again through QR scene "s"

    assert wechat.get_user_info("O", lang="en")["qr_scene_str"] == "s"
    assert wechat_sandbox.requests()[1].query == {
        "openid": "O",
        "lang": "en",
        "access_token": stable_token_of(wechat_sandbox, wechat),
    }


def test_batch_user_info(wechat, wechat_sandbox):
    account = wechat_sandbox.account(wechat.credentials.appid)
    account.unsubscribe("B")

    users = wechat.batch_get_user_info(["A", "B"])

    assert users == [account.followers["A"].as_info(), {"subscribe": 0, "openid": "B"}]
    assert users[0]["subscribe"] == 1
    assert wechat_sandbox.requests()[1].json() == {
        "user_list": [{"openid": "A", "lang": "zh_CN"}, {"openid": "B", "lang": "zh_CN"}]
    }


def test_batch_user_info_limits(wechat, wechat_sandbox):
    with pytest.raises(ValueError, match="100"):
        wechat.batch_get_user_info([f"O{i}" for i in range(101)])
    assert wechat.batch_get_user_info([]) == []
    assert wechat_sandbox.requests() == []


def test_temporary_qrcode(wechat, wechat_sandbox):
    reply = wechat.create_qrcode(scene_str="bind:42", expire_seconds=600)

    assert set(reply) == {"ticket", "expire_seconds", "url"}
    assert reply["expire_seconds"] == 600
    assert wechat_sandbox.state.qr_ticket(reply["ticket"]).scene == "bind:42"
    assert wechat_sandbox.requests()[1].json() == {
        "action_info": {"scene": {"scene_str": "bind:42"}},
        "action_name": "QR_STR_SCENE",
        "expire_seconds": 600,
    }


def test_permanent_qrcode(wechat, wechat_sandbox):
    reply = wechat.create_qrcode(scene_str="shop", permanent=True)

    assert wechat_sandbox.state.qr_ticket(reply["ticket"]).expires_at is None
    assert wechat_sandbox.requests()[1].json() == {
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
def test_qrcode_arguments_are_validated(wechat, wechat_sandbox, kwargs):
    with pytest.raises(ValueError):
        wechat.create_qrcode(**kwargs)
    assert wechat_sandbox.requests() == []


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
