"""The sandbox's subscription notifications over real HTTP: the library's errcodes, the 25-template limit, consent
(credits, long-term grants, refusals) through the control endpoints, and the value rules bizsend enforces."""

from __future__ import annotations

import json

import pytest

from sandbox.demo import DEMO_ACCOUNT, DEMO_APPID, DEMO_SUBSCRIPTION_TEMPLATES
from sandbox.state import SUBSCRIPTION_TEMPLATES_MAX
from sandbox.state.subscription_values import value_is_valid

ONE_TIME_ID = DEMO_SUBSCRIPTION_TEMPLATES[0]["pri_tmpl_id"]
LONG_TERM_ID = DEMO_SUBSCRIPTION_TEMPLATES[1]["pri_tmpl_id"]
ORDER_DATA = {
    "character_string1": {"value": "SO20261128001"},
    "thing2": {"value": "机械键盘"},
    "time3": {"value": "2026年11月28日 10:30"},
    "phrase7": {"value": "已发货"},
}


@pytest.fixture
def api(wechat_sandbox, http):
    """GET/POST a WeChat API of the demo account with a fresh token; answers the JSON."""
    token = http.post(
        f"{wechat_sandbox.base_url}/cgi-bin/stable_token",
        json={"grant_type": "client_credential", "appid": DEMO_APPID, "secret": DEMO_ACCOUNT["secret"]},
    ).json()["access_token"]

    def call(method, path, body=None, **params):
        """WeChat's way: UTF-8 JSON without \\uXXXX escapes (those are a 40033)."""
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        response = http.request(
            method, f"{wechat_sandbox.base_url}{path}", params={"access_token": token, **params}, data=data
        )
        return response.json()

    return call


def control(wechat_sandbox, http, path, body=None):
    if body is None:
        return http.get(f"{wechat_sandbox.base_url}/sandbox/subscriptions/{path}").json()
    return http.post(f"{wechat_sandbox.base_url}/sandbox/subscriptions/{path}", json=body).json()


def test_the_demo_account_holds_a_one_time_and_a_long_term_template(api):
    templates = api("GET", "/wxaapi/newtmpl/gettemplate")["data"]

    assert [(item["priTmplId"], item["type"]) for item in templates] == [(ONE_TIME_ID, 2), (LONG_TERM_ID, 3)]
    assert templates[0]["content"].startswith("订单编号:{{character_string1.DATA}}\n")
    assert templates[0]["example"].startswith("订单编号:SO20261128001\n")


@pytest.mark.parametrize(
    ("params", "errcode"),
    [
        ({"start": "0", "limit": "10"}, 200018),
        ({"ids": "670,abc", "start": "0", "limit": "10"}, 200019),
        ({"ids": "999", "start": "0", "limit": "10"}, 200019),
        ({"ids": "670", "start": "-1", "limit": "10"}, 200016),
        ({"ids": "670", "start": "0", "limit": "31"}, 200017),
        ({"ids": "670", "start": "0", "limit": "0"}, 200017),
    ],
)
def test_title_paging_errors(api, params, errcode):
    assert api("GET", "/wxaapi/newtmpl/getpubtemplatetitles", **params)["errcode"] == errcode


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"tid": "424242", "kidList": [1, 2], "sceneDesc": "x"}, 200014),
        ({"tid": "1082", "kidList": [1], "sceneDesc": "x"}, 200020),
        ({"tid": "1082", "kidList": [1, 1], "sceneDesc": "x"}, 200020),
        ({"tid": "1082", "kidList": [1, 2, 3, 4, 5, 6], "sceneDesc": "x"}, 200020),
        ({"tid": "1082", "kidList": [1, 42], "sceneDesc": "x"}, 200020),
        ({"tid": "1082", "kidList": [1, 2], "sceneDesc": ""}, 200021),
        ({"tid": "1082", "kidList": [1, 2], "sceneDesc": "一" * 16}, 200021),
    ],
)
def test_addtemplate_refusals(api, body, errcode):
    assert api("POST", "/wxaapi/newtmpl/addtemplate", body)["errcode"] == errcode


def test_an_account_holds_at_most_25_templates(api):
    for _ in range(SUBSCRIPTION_TEMPLATES_MAX - len(DEMO_SUBSCRIPTION_TEMPLATES)):
        assert api("POST", "/wxaapi/newtmpl/addtemplate", {"tid": "99", "kidList": [1, 2], "sceneDesc": "付款"})[
            "priTmplId"
        ]
    full = api("POST", "/wxaapi/newtmpl/addtemplate", {"tid": "99", "kidList": [1, 2], "sceneDesc": "付款"})
    assert full["errcode"] == 200012
    assert api("POST", "/wxaapi/newtmpl/deltemplate", {"priTmplId": "nope"})["errcode"] == 40037


def test_credits_are_granted_consumed_and_refused_through_the_control_endpoints(wechat_sandbox, http, api):
    send = {"touser": "oNotAFollower", "template_id": ONE_TIME_ID, "data": ORDER_DATA}
    assert api("POST", "/cgi-bin/message/subscribe/bizsend", send)["errcode"] == 43101

    granted = control(
        wechat_sandbox,
        http,
        "grant",
        {"appid": DEMO_APPID, "openid": "oNotAFollower", "template_id": ONE_TIME_ID, "count": 2},
    )
    assert granted["credits"] == [
        {"openid": "oNotAFollower", "template_id": ONE_TIME_ID, "credits": 2, "long_term": False}
    ]
    first = api("POST", "/cgi-bin/message/subscribe/bizsend", send)
    assert first["errcode"] == 0 and first["msgid"] > 0
    held = control(wechat_sandbox, http, f"credits?appid={DEMO_APPID}&openid=oNotAFollower")["credits"]
    assert held[0]["credits"] == 1

    control(
        wechat_sandbox, http, "refuse", {"appid": DEMO_APPID, "openid": "oNotAFollower", "template_id": ONE_TIME_ID}
    )
    assert api("POST", "/cgi-bin/message/subscribe/bizsend", send)["errcode"] == 43101
    assert control(wechat_sandbox, http, f"messages?appid={DEMO_APPID}")["count"] == 1
    assert wechat_sandbox.counters()["subscription_sends"] == 3


def test_a_long_term_grant_is_refused_for_a_one_time_template(wechat_sandbox, http):
    answer = http.post(
        f"{wechat_sandbox.base_url}/sandbox/subscriptions/grant",
        json={"appid": DEMO_APPID, "openid": "o1", "template_id": ONE_TIME_ID, "long_term": True},
    )
    assert answer.status_code == 400
    assert "one-time" in answer.json()["errmsg"]


def test_reset_forgets_consent_and_added_templates(wechat_sandbox, api):
    wechat_sandbox.state.grant_long_term(DEMO_APPID, "o1", LONG_TERM_ID)
    api("POST", "/wxaapi/newtmpl/addtemplate", {"tid": "99", "kidList": [1, 2], "sceneDesc": "付款"})

    wechat_sandbox.state.reset()

    assert wechat_sandbox.state.credits(DEMO_APPID) == []
    assert len(wechat_sandbox.account().subscription_templates) == len(DEMO_SUBSCRIPTION_TEMPLATES)


def test_deleting_a_template_drops_its_consent(wechat_sandbox, api):
    wechat_sandbox.state.grant_credit(DEMO_APPID, "o1", ONE_TIME_ID)

    assert api("POST", "/wxaapi/newtmpl/deltemplate", {"priTmplId": ONE_TIME_ID})["errcode"] == 0
    assert wechat_sandbox.state.credits(DEMO_APPID) == []


@pytest.mark.parametrize(
    ("rule", "good", "bad"),
    [
        ("thing", "字" * 20, "字" * 21),
        ("number", "1" * 31 + ".5", "1" * 33),
        ("letter", "a" * 32, "a" * 33),
        ("symbol", "-" * 5, "-" * 6),
        ("character_string", "A-1" * 10 + "XY", "A" * 33),
        ("time", "2019年10月1日 15:01~16:00", "明天下午"),
        ("date", "2019-10-01", "10月1日"),
        ("amount", "¥" + "9" * 8 + ".50", "¥" + "9" * 9 + ".50"),
        ("phone_number", "+86-0766-66888866", "+86-0766-668888661"),
        ("car_number", "粤A8Z888挂", "粤A8Z8888挂"),
        ("name", "欧" * 10, "欧" * 11),
        ("name", "a" * 20, "a" * 21),
        ("phrase", "配送中", "配送中了了了"),
    ],
)
def test_value_rules_at_and_past_their_limit(rule, good, bad):
    assert value_is_valid(rule, good)
    assert not value_is_valid(rule, bad)


def test_enumerated_values_must_be_listed():
    assert value_is_valid("enum_string", "已预约", ["已预约", "已取消"])
    assert not value_is_valid("enum_string", "已付款", ["已预约", "已取消"])
