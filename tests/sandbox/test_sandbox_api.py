"""The sandbox's WeChat API endpoints, over real HTTP, with WeChat's reply shapes and errcodes."""

from __future__ import annotations

import json
import re
import time
from http.client import HTTPConnection

import pytest

from sandbox.demo import DEMO_ACCOUNT, DEMO_APPID, DEMO_TEMPLATES
from sandbox.state import FOLLOWER_PAGE_SIZE, seeded_openid, special_openids

SECRET = DEMO_ACCOUNT["secret"]
ORDER_TEMPLATE = DEMO_TEMPLATES[0]["template_id"]
BOOKING_TEMPLATE = DEMO_TEMPLATES[1]["template_id"]
ORDER_DATA = {
    "character_string1": {"value": "SO20261128001"},
    "thing2": {"value": "机械键盘"},
    "time3": {"value": "2026年11月28日 10:30"},
    "amount4": {"value": "¥399.00"},
}


def classic_token(sandbox, http, appid=DEMO_APPID, secret=SECRET):
    reply = http.get(
        f"{sandbox.base_url}/cgi-bin/token",
        params={"grant_type": "client_credential", "appid": appid, "secret": secret},
    ).json()
    return reply["access_token"]


def stable_token(sandbox, http, force_refresh=False, appid=DEMO_APPID, secret=SECRET):
    body = {"grant_type": "client_credential", "appid": appid, "secret": secret, "force_refresh": force_refresh}
    return http.post(f"{sandbox.base_url}/cgi-bin/stable_token", json=body).json()


def send(sandbox, http, token, touser, template_id=ORDER_TEMPLATE, data=None, **extra):
    payload = {"touser": touser, "template_id": template_id, "data": ORDER_DATA if data is None else data, **extra}
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return http.post(f"{sandbox.base_url}/cgi-bin/message/template/send", params={"access_token": token}, data=body)


def api_get(sandbox, http, path, token, **params):
    return http.get(f"{sandbox.base_url}{path}", params={"access_token": token, **params}).json()


def errcode(reply):
    return reply.json()["errcode"] if hasattr(reply, "json") else reply["errcode"]


# --- tokens -----------------------------------------------------------------------------------------


def test_classic_token_issues_a_new_token_each_time(wechat_sandbox, http):
    reply = http.get(
        f"{wechat_sandbox.base_url}/cgi-bin/token",
        params={"grant_type": "client_credential", "appid": DEMO_APPID, "secret": SECRET},
    ).json()
    assert reply["expires_in"] == 7200
    assert len(reply["access_token"]) > 100
    assert classic_token(wechat_sandbox, http) != reply["access_token"]
    assert wechat_sandbox.counters()["token_fetches"] == {"token": 2, "stable_token": 0}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"grant_type": "client_credential", "appid": "wx0000000000000000", "secret": SECRET}, 40013),
        ({"grant_type": "client_credential", "appid": DEMO_APPID, "secret": "wrong"}, 40125),
        ({"grant_type": "password", "appid": DEMO_APPID, "secret": SECRET}, 40002),
        ({"grant_type": "client_credential", "secret": SECRET}, 41002),
        ({"grant_type": "client_credential", "appid": DEMO_APPID}, 41004),
    ],
)
def test_classic_token_errors(wechat_sandbox, http, params, expected):
    reply = http.get(f"{wechat_sandbox.base_url}/cgi-bin/token", params=params).json()
    assert reply["errcode"] == expected
    assert "access_token" not in reply
    assert " rid: " in reply["errmsg"]


def test_stable_token_errors(wechat_sandbox, http):
    assert stable_token(wechat_sandbox, http, secret="wrong")["errcode"] == 40125
    assert stable_token(wechat_sandbox, http, appid="wx0000000000000000")["errcode"] == 40013
    reply = http.post(f"{wechat_sandbox.base_url}/cgi-bin/stable_token", data=b"grant_type=client_credential")
    assert reply.json()["errcode"] == 47001


def test_token_ttl_fault_sets_expires_in_and_expiry_gives_42001(wechat_sandbox, http):
    wechat_sandbox.set_faults(token_ttl=1)
    reply = stable_token(wechat_sandbox, http)
    assert reply["expires_in"] == 1
    openid = seeded_openid(DEMO_APPID, 0)
    assert errcode(send(wechat_sandbox, http, reply["access_token"], openid)) == 0
    time.sleep(1.1)
    assert errcode(send(wechat_sandbox, http, reply["access_token"], openid)) == 42001
    renewed = stable_token(wechat_sandbox, http)["access_token"]
    assert renewed != reply["access_token"]
    assert errcode(send(wechat_sandbox, http, renewed, openid)) == 0


def test_missing_and_unknown_tokens(wechat_sandbox, http):
    url = f"{wechat_sandbox.base_url}/cgi-bin/template/get_all_private_template"
    assert http.get(url).json()["errcode"] == 41001
    unknown = http.get(url, params={"access_token": "not-a-token"}).json()
    assert unknown["errcode"] == 40001
    assert unknown["errmsg"].startswith("invalid credential, access_token is invalid or not latest")
    assert wechat_sandbox.state.snapshot()["unauthenticated_errors"] == {"40001": 1, "41001": 1}


def test_invalidation_makes_every_token_answer_40001(wechat_sandbox, http):
    classic = classic_token(wechat_sandbox, http)
    stable = stable_token(wechat_sandbox, http)["access_token"]
    reply = http.post(f"{wechat_sandbox.base_url}/sandbox/tokens/invalidate", json={"appid": DEMO_APPID}).json()
    assert reply["revoked"] == 2
    for token in (classic, stable):
        assert api_get(wechat_sandbox, http, "/cgi-bin/template/get_all_private_template", token)["errcode"] == 40001
    fresh = stable_token(wechat_sandbox, http)["access_token"]
    assert fresh != stable
    assert "template_list" in api_get(wechat_sandbox, http, "/cgi-bin/template/get_all_private_template", fresh)


def test_classic_refetch_keeps_previous_token_for_at_most_five_minutes(wechat_sandbox, http):
    first = classic_token(wechat_sandbox, http)
    second = classic_token(wechat_sandbox, http)
    path = "/cgi-bin/template/get_all_private_template"
    assert "template_list" in api_get(wechat_sandbox, http, path, first)
    assert "template_list" in api_get(wechat_sandbox, http, path, second)
    issued = wechat_sandbox.state.tokens
    assert issued[first].expires_at - time.monotonic() == pytest.approx(300, abs=2)
    assert issued[second].expires_at - time.monotonic() == pytest.approx(7200, abs=2)


def test_classic_overlap_never_extends_a_token_beyond_its_own_life(wechat_sandbox, http):
    wechat_sandbox.set_faults(token_ttl=1)
    first = classic_token(wechat_sandbox, http)
    classic_token(wechat_sandbox, http)
    time.sleep(1.1)
    assert api_get(wechat_sandbox, http, "/cgi-bin/template/get_all_private_template", first)["errcode"] == 42001


def test_stable_token_is_reused_until_forced_and_force_revokes_at_once(wechat_sandbox, http):
    first = stable_token(wechat_sandbox, http)
    again = stable_token(wechat_sandbox, http)
    assert again["access_token"] == first["access_token"]
    assert 7190 <= again["expires_in"] <= 7200
    forced = stable_token(wechat_sandbox, http, force_refresh=True)["access_token"]
    assert forced != first["access_token"]
    path = "/cgi-bin/template/get_all_private_template"
    assert api_get(wechat_sandbox, http, path, first["access_token"])["errcode"] == 40001
    assert "template_list" in api_get(wechat_sandbox, http, path, forced)
    assert wechat_sandbox.counters()["token_fetches"]["stable_token"] == 3


def test_stable_and_classic_tokens_are_isolated(wechat_sandbox, http):
    stable = stable_token(wechat_sandbox, http)["access_token"]
    classic_token(wechat_sandbox, http)
    classic_token(wechat_sandbox, http)
    assert stable_token(wechat_sandbox, http)["access_token"] == stable
    stable_token(wechat_sandbox, http, force_refresh=True)
    classic = classic_token(wechat_sandbox, http)
    assert "template_list" in api_get(wechat_sandbox, http, "/cgi-bin/template/get_all_private_template", classic)


# --- template send ------------------------------------------------------------------------------------


def test_send_delivers_and_records_the_message(wechat_sandbox, http):
    token = classic_token(wechat_sandbox, http)
    openid = seeded_openid(DEMO_APPID, 3)
    reply = send(wechat_sandbox, http, token, openid, url="https://example.com/o/1").json()
    assert reply["errcode"] == 0
    assert reply["errmsg"] == "ok"
    assert isinstance(reply["msgid"], int)
    assert reply["msgid"] > 2**53
    [message] = wechat_sandbox.messages(appid=DEMO_APPID)
    assert message["msgid"] == reply["msgid"]
    assert message["touser"] == openid
    assert message["data"] == ORDER_DATA
    assert message["url"] == "https://example.com/o/1"
    listed = http.get(f"{wechat_sandbox.base_url}/sandbox/messages", params={"touser": openid}).json()
    assert listed["count"] == 1
    assert listed["messages"][0]["msgid"] == reply["msgid"]
    assert http.get(f"{wechat_sandbox.base_url}/sandbox/messages", params={"touser": "nobody"}).json()["count"] == 0
    counters = wechat_sandbox.counters()
    assert (counters["sends"], counters["delivered"], counters["errors"]) == (1, 1, {})


@pytest.mark.parametrize(
    ("touser", "expected"),
    [
        ("oNotAFollowerOfThisAccount000", 40003),
        (special_openids(DEMO_APPID, "unsub_")[0], 43004),
        (special_openids(DEMO_APPID, "block_")[0], 43101),
    ],
)
def test_send_refuses_recipients(wechat_sandbox, http, touser, expected):
    token = classic_token(wechat_sandbox, http)
    assert errcode(send(wechat_sandbox, http, token, touser)) == expected
    assert wechat_sandbox.messages() == []
    assert wechat_sandbox.counters()["errors"] == {str(expected): 1}


def test_send_to_an_unsubscribed_follower_is_43004(wechat_sandbox, http):
    token = classic_token(wechat_sandbox, http)
    openid = seeded_openid(DEMO_APPID, 1)
    wechat_sandbox.state.simulate_unsubscribe(DEMO_APPID, openid)
    assert errcode(send(wechat_sandbox, http, token, openid)) == 43004


def test_send_payload_errors(wechat_sandbox, http):
    token = classic_token(wechat_sandbox, http)
    openid = seeded_openid(DEMO_APPID, 0)
    url = f"{wechat_sandbox.base_url}/cgi-bin/message/template/send"
    assert http.post(url, params={"access_token": token}, data=b"touser=x").json()["errcode"] == 47001
    assert http.post(url, params={"access_token": token}, data=b"[1, 2]").json()["errcode"] == 47001
    assert errcode(send(wechat_sandbox, http, token, openid, template_id="no-such-template")) == 40037

    escaped = json.dumps({"touser": openid, "template_id": ORDER_TEMPLATE, "data": ORDER_DATA})  # ensure_ascii
    assert "\\u" in escaped
    reply = http.post(url, params={"access_token": token}, data=escaped.encode()).json()
    assert reply["errcode"] == 40033
    payload = {"touser": openid, "template_id": ORDER_TEMPLATE, "data": ORDER_DATA}
    ascii_escape = json.dumps(payload, ensure_ascii=False).replace("SO20261128001", "SO\\u0041")
    assert errcode(http.post(url, params={"access_token": token}, data=ascii_escape.encode())) == 0
    assert wechat_sandbox.messages()[0]["data"]["character_string1"]["value"] == "SOA"


def test_a_legacy_send_without_first_or_remark_is_taken(wechat_sandbox, http):
    """WeChat no longer shows a legacy template's first line and remark, and no longer asks for them."""
    token = classic_token(wechat_sandbox, http)
    legacy = next(spec for spec in DEMO_ACCOUNT["templates"] if "{{first.DATA}}" in spec["content"])
    keywords = re.findall(r"\{\{(keyword\d+)\.DATA\}\}", legacy["content"])
    data = {keyword: {"value": "x"} for keyword in keywords}
    openid = seeded_openid(DEMO_APPID, 0)
    reply = send(wechat_sandbox, http, token, openid, template_id=legacy["template_id"], data=data)
    assert reply.json()["errcode"] == 0


def test_send_validates_each_keyword(wechat_sandbox, http):
    token = classic_token(wechat_sandbox, http)
    openid = seeded_openid(DEMO_APPID, 0)
    missing = {key: value for key, value in ORDER_DATA.items() if key != "time3"}
    reply = send(wechat_sandbox, http, token, openid, data=missing).json()
    assert reply["errcode"] == 47003
    assert reply["errmsg"].startswith("argument invalid! data.time3.value is empty")
    blank = {**ORDER_DATA, "amount4": {"value": "  "}}
    assert (
        send(wechat_sandbox, http, token, openid, data=blank)
        .json()["errmsg"]
        .startswith("argument invalid! data.amount4.value is empty")
    )
    long_thing = {**ORDER_DATA, "thing2": {"value": "超" * 21}}
    reply = send(wechat_sandbox, http, token, openid, data=long_thing).json()
    assert reply["errcode"] == 47003
    assert reply["errmsg"].startswith("argument invalid! data.thing2.value invalid")
    exactly_twenty = {**ORDER_DATA, "thing2": {"value": "好" * 20}}
    assert errcode(send(wechat_sandbox, http, token, openid, data=exactly_twenty)) == 0
    assert wechat_sandbox.counters()["errors"] == {"47003": 3}


def test_client_msg_id_dedupes_per_recipient(wechat_sandbox, http):
    token = classic_token(wechat_sandbox, http)
    first_user, second_user = seeded_openid(DEMO_APPID, 0), seeded_openid(DEMO_APPID, 1)
    original = send(wechat_sandbox, http, token, first_user, client_msg_id="order-1").json()
    repeat = send(wechat_sandbox, http, token, first_user, client_msg_id="order-1").json()
    assert repeat == {"errcode": 0, "errmsg": "ok", "msgid": original["msgid"]}
    other_user = send(wechat_sandbox, http, token, second_user, client_msg_id="order-1").json()
    assert other_user["msgid"] != original["msgid"]
    assert [m["touser"] for m in wechat_sandbox.messages()] == [first_user, second_user]
    assert wechat_sandbox.messages()[0]["client_msg_id"] == "order-1"
    counters = wechat_sandbox.counters()
    assert (counters["delivered"], counters["duplicates"]) == (2, 1)


def test_client_msg_id_window_is_ten_minutes(wechat_sandbox, http, monkeypatch):
    token = classic_token(wechat_sandbox, http)
    openid = seeded_openid(DEMO_APPID, 0)
    original = send(wechat_sandbox, http, token, openid, client_msg_id="late").json()
    real_monotonic = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real_monotonic() + 601)
    wechat_sandbox.state.tokens[token].expires_at += 601
    later = send(wechat_sandbox, http, token, openid, client_msg_id="late").json()
    assert later["errcode"] == 0
    assert later["msgid"] != original["msgid"]
    assert len(wechat_sandbox.messages()) == 2


def test_fault_injection_replies_the_error_and_delivers_nothing(wechat_sandbox, http):
    token = classic_token(wechat_sandbox, http)
    openid = seeded_openid(DEMO_APPID, 0)
    reply = http.post(f"{wechat_sandbox.base_url}/sandbox/faults", json={"error_rate": 1.0, "error_code": 45009}).json()
    assert reply["faults"]["error_rate"] == 1.0
    assert errcode(send(wechat_sandbox, http, token, openid)) == 45009
    assert wechat_sandbox.messages() == []
    wechat_sandbox.set_faults(error_rate=0.5, error_code=-1)
    codes = [errcode(send(wechat_sandbox, http, token, openid)) for _ in range(200)]
    assert 40 < codes.count(-1) < 160
    assert codes.count(0) == len(wechat_sandbox.messages())
    assert set(codes) == {0, -1}


def test_bad_fault_settings_are_refused(wechat_sandbox, http):
    url = f"{wechat_sandbox.base_url}/sandbox/faults"
    assert http.post(url, json={"error_rate": 2}).status_code == 400
    assert http.post(url, json={"no_such_knob": 1}).status_code == 400
    assert wechat_sandbox.state.faults.error_rate == 0.0


def test_latency_fault_delays_sends(wechat_sandbox, http):
    token = classic_token(wechat_sandbox, http)
    wechat_sandbox.set_faults(latency_ms=200)
    started = time.monotonic()
    assert errcode(send(wechat_sandbox, http, token, seeded_openid(DEMO_APPID, 0))) == 0
    assert time.monotonic() - started >= 0.2


def test_reset_restores_the_start_state(wechat_sandbox, http):
    token = classic_token(wechat_sandbox, http)
    send(wechat_sandbox, http, token, seeded_openid(DEMO_APPID, 0), client_msg_id="x")
    wechat_sandbox.set_faults(latency_ms=5, error_rate=0.1)
    assert http.post(f"{wechat_sandbox.base_url}/sandbox/reset").json()["errcode"] == 0
    assert wechat_sandbox.messages() == []
    assert wechat_sandbox.state.faults.latency_ms == 0
    assert wechat_sandbox.counters()["sends"] == 0
    assert api_get(wechat_sandbox, http, "/cgi-bin/template/get_all_private_template", token)["errcode"] == 40001


# --- templates, users, QR codes ----------------------------------------------------------------------


def test_get_all_private_template(wechat_sandbox, http):
    token = classic_token(wechat_sandbox, http)
    reply = api_get(wechat_sandbox, http, "/cgi-bin/template/get_all_private_template", token)
    assert [item["template_id"] for item in reply["template_list"]] == [t["template_id"] for t in DEMO_TEMPLATES]
    first = reply["template_list"][0]
    assert set(first) == {"template_id", "title", "primary_industry", "deputy_industry", "content", "example"}
    assert first["title"] == "订单发货通知"
    assert "{{thing2.DATA}}" in first["content"]


def test_user_get_pages_25000_followers(wechat_sandbox, http):
    wechat_sandbox.update_account(DEMO_APPID, followers=25_000)
    token = classic_token(wechat_sandbox, http)
    pages, next_openid = [], None
    started = time.monotonic()
    while next_openid != "":
        params = {"next_openid": next_openid} if next_openid else {}
        page = api_get(wechat_sandbox, http, "/cgi-bin/user/get", token, **params)
        pages.append(page)
        next_openid = page["next_openid"]
    assert time.monotonic() - started < 5
    total = 25_000 + 6  # seeded followers plus the block_/rblock_/rfail_ ones
    assert [page["count"] for page in pages] == [FOLLOWER_PAGE_SIZE, FOLLOWER_PAGE_SIZE, total - 2 * FOLLOWER_PAGE_SIZE]
    assert all(page["total"] == total for page in pages)
    assert pages[0]["next_openid"] == pages[0]["data"]["openid"][-1]
    openids = [openid for page in pages for openid in page["data"]["openid"]]
    assert len(set(openids)) == total
    assert openids[0] == seeded_openid(DEMO_APPID, 0)
    assert all(len(openid) == 28 for openid in openids)
    assert not any(openid.startswith("unsub_") for openid in openids)
    assert api_get(wechat_sandbox, http, "/cgi-bin/user/get", token, next_openid="oUnknown")["errcode"] == 40003


def test_user_get_stays_fast_with_100000_followers(wechat_sandbox, http):
    wechat_sandbox.update_account(DEMO_APPID, followers=100_000)
    wechat_sandbox.state.simulate_unsubscribe(DEMO_APPID, seeded_openid(DEMO_APPID, 50_000))
    token = classic_token(wechat_sandbox, http)
    started, seen, next_openid = time.monotonic(), 0, None
    while next_openid != "":
        params = {"next_openid": next_openid} if next_openid else {}
        page = api_get(wechat_sandbox, http, "/cgi-bin/user/get", token, **params)
        seen += page["count"]
        next_openid = page["next_openid"]
    assert seen == page["total"] == 100_000 + 6 - 1
    assert time.monotonic() - started < 5


def test_user_get_with_an_exact_page_multiple_ends_with_empty_next_openid(wechat_sandbox, http):
    wechat_sandbox.update_account(DEMO_APPID, followers=[f"oExplicit{n:019d}" for n in range(FOLLOWER_PAGE_SIZE)])
    token = classic_token(wechat_sandbox, http)
    page = api_get(wechat_sandbox, http, "/cgi-bin/user/get", token)
    assert (page["count"], page["next_openid"]) == (FOLLOWER_PAGE_SIZE, "")


def test_user_info_shapes(wechat_sandbox, http):
    token = classic_token(wechat_sandbox, http)
    openid = seeded_openid(DEMO_APPID, 0)
    info = api_get(wechat_sandbox, http, "/cgi-bin/user/info", token, openid=openid, lang="zh_CN")
    assert info["subscribe"] == 1
    assert info["openid"] == openid
    assert info["unionid"].startswith("oU")
    for key in ("subscribe_time", "remark", "subscribe_scene", "qr_scene", "qr_scene_str", "tagid_list"):
        assert key in info
    assert "nickname" not in info
    no_union = api_get(wechat_sandbox, http, "/cgi-bin/user/info", token, openid=seeded_openid(DEMO_APPID, 1))
    assert "unionid" not in no_union
    unsub = special_openids(DEMO_APPID, "unsub_")[0]
    assert api_get(wechat_sandbox, http, "/cgi-bin/user/info", token, openid=unsub) == {"subscribe": 0, "openid": unsub}
    assert api_get(wechat_sandbox, http, "/cgi-bin/user/info", token, openid="oNobody")["errcode"] == 40003


def test_user_info_batchget(wechat_sandbox, http):
    token = classic_token(wechat_sandbox, http)
    url = f"{wechat_sandbox.base_url}/cgi-bin/user/info/batchget"
    unsub = special_openids(DEMO_APPID, "unsub_")[0]
    users = [{"openid": seeded_openid(DEMO_APPID, n), "lang": "zh_CN"} for n in range(3)] + [{"openid": unsub}]
    reply = http.post(url, params={"access_token": token}, json={"user_list": users}).json()
    assert [info["openid"] for info in reply["user_info_list"]] == [user["openid"] for user in users]
    assert reply["user_info_list"][-1] == {"subscribe": 0, "openid": unsub}
    too_many = [{"openid": seeded_openid(DEMO_APPID, 0)}] * 101
    refused = http.post(url, params={"access_token": token}, json={"user_list": too_many}).json()
    assert refused["errcode"] == 40032
    assert refused["errmsg"].startswith("invalid openid list size")
    assert http.post(url, params={"access_token": token}, json={"user_list": []}).json()["errcode"] == 40032
    assert http.post(url, json={"user_list": users}).json()["errcode"] == 41001


def test_follower_reads_are_counted_per_api_and_delayed_by_the_user_latency(wechat_sandbox, http):
    token = classic_token(wechat_sandbox, http)
    batchget = f"{wechat_sandbox.base_url}/cgi-bin/user/info/batchget"
    users = {"user_list": [{"openid": seeded_openid(DEMO_APPID, 0)}]}
    api_get(wechat_sandbox, http, "/cgi-bin/user/get", token)
    api_get(wechat_sandbox, http, "/cgi-bin/user/info", token, openid="oNobody")
    http.post(batchget, params={"access_token": token}, json=users)
    http.post(batchget, json=users)  # no token: refused before it counts
    counters = wechat_sandbox.counters()
    assert counters["user_calls"] == {"user/get": 1, "user/info": 1, "user/info/batchget": 1}
    assert counters["sends"] == 0

    wechat_sandbox.set_faults(user_latency_ms=150)
    for call in (
        lambda: api_get(wechat_sandbox, http, "/cgi-bin/user/get", token),
        lambda: api_get(wechat_sandbox, http, "/cgi-bin/user/info", token, openid=seeded_openid(DEMO_APPID, 0)),
        lambda: http.post(batchget, params={"access_token": token}, json=users).json(),
    ):
        started = time.monotonic()
        assert call().get("errcode", 0) == 0
        assert time.monotonic() - started >= 0.15
    assert http.post(f"{wechat_sandbox.base_url}/sandbox/faults", json={"user_latency_ms": -1}).status_code == 400


def test_qrcode_create_and_show(wechat_sandbox, http):
    token = classic_token(wechat_sandbox, http)
    url = f"{wechat_sandbox.base_url}/cgi-bin/qrcode/create"
    temp = http.post(
        url,
        params={"access_token": token},
        json={"expire_seconds": 600, "action_name": "QR_STR_SCENE", "action_info": {"scene": {"scene_str": "bind-42"}}},
    ).json()
    assert temp["expire_seconds"] == 600
    assert temp["url"].startswith("http://weixin.qq.com/q/")
    assert wechat_sandbox.state.qr_ticket(temp["ticket"]).scene == "bind-42"
    default = http.post(
        url, params={"access_token": token}, json={"action_name": "QR_SCENE", "action_info": {"scene": {"scene_id": 7}}}
    ).json()
    assert default["expire_seconds"] == 60
    permanent = http.post(
        url,
        params={"access_token": token},
        json={"action_name": "QR_LIMIT_SCENE", "action_info": {"scene": {"scene_id": 100000}}},
    ).json()
    assert "expire_seconds" not in permanent
    assert wechat_sandbox.state.qr_ticket(permanent["ticket"]).scene == "100000"

    image = http.get(f"{wechat_sandbox.base_url}/cgi-bin/showqrcode", params={"ticket": temp["ticket"]})
    assert image.status_code == 200
    assert image.headers["Content-Type"] == "image/svg+xml"
    assert "bind-42" in image.text
    assert http.get(f"{wechat_sandbox.base_url}/cgi-bin/showqrcode", params={"ticket": "nope"}).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"action_name": "QR_STR_SCENE", "action_info": {"scene": {"scene_str": ""}}},
        {"action_name": "QR_STR_SCENE", "action_info": {"scene": {"scene_str": "x" * 65}}},
        {"action_name": "QR_LIMIT_SCENE", "action_info": {"scene": {"scene_id": 100001}}},
        {"action_name": "QR_SCENE", "action_info": {"scene": {"scene_id": 0}}},
        {"action_name": "QR_BOGUS", "action_info": {"scene": {"scene_id": 1}}},
        {"action_name": "QR_SCENE"},
    ],
)
def test_qrcode_create_rejects_bad_scenes(wechat_sandbox, http, body):
    token = classic_token(wechat_sandbox, http)
    reply = http.post(f"{wechat_sandbox.base_url}/cgi-bin/qrcode/create", params={"access_token": token}, json=body)
    assert reply.json()["errcode"] == 40097


# --- control ---------------------------------------------------------------------------------------


def test_accounts_can_be_added_and_updated_at_run_time(wechat_sandbox, http):
    url = f"{wechat_sandbox.base_url}/sandbox/accounts"
    added = http.post(url, json={"appid": "wx00000000000000aa", "secret": "s3cr3t-s3cr3t", "followers": 5}).json()
    assert added == {"errcode": 0, "errmsg": "ok", "appid": "wx00000000000000aa", "followers": 11}
    token = classic_token(wechat_sandbox, http, appid="wx00000000000000aa", secret="s3cr3t-s3cr3t")
    assert errcode(send(wechat_sandbox, http, token, seeded_openid("wx00000000000000aa", 4))) == 0
    assert errcode(send(wechat_sandbox, http, token, seeded_openid(DEMO_APPID, 0))) == 40003
    assert http.post(url, json={"appid": "wx00000000000000aa", "mode": "safe"}).status_code == 400
    http.post(url, json={"appid": "wx00000000000000aa", "secret": "rotated-secret"})
    assert classic_token(wechat_sandbox, http, appid="wx00000000000000aa", secret="rotated-secret")
    state = http.get(f"{wechat_sandbox.base_url}/sandbox/state").json()
    assert set(state["accounts"]) == {DEMO_APPID, "wx00000000000000aa"}
    assert state["accounts"]["wx00000000000000aa"]["delivered"] == 1
    assert "secret" not in json.dumps(state)


def test_a_refused_account_update_changes_nothing(wechat_sandbox, http):
    url = f"{wechat_sandbox.base_url}/sandbox/accounts"
    refused = http.post(url, json={"appid": DEMO_APPID, "secret": "", "callback_url": "http://127.0.0.1:1/"})
    assert refused.status_code == 400
    assert http.post(url, json={"appid": DEMO_APPID, "templates": [{"title": "no id"}]}).status_code == 400
    account = wechat_sandbox.account()
    assert account.secret == SECRET
    assert account.callback_url == ""
    assert len(account.templates) == len(DEMO_TEMPLATES)


def test_unknown_path_is_a_json_404(wechat_sandbox, http):
    reply = http.get(f"{wechat_sandbox.base_url}/cgi-bin/nothing-here")
    assert reply.status_code == 404
    assert reply.json()["errcode"] == -1


def test_keep_alive_serves_many_requests_on_one_connection(wechat_sandbox, http):
    token = classic_token(wechat_sandbox, http)
    payload = {"touser": seeded_openid(DEMO_APPID, 0), "template_id": ORDER_TEMPLATE, "data": ORDER_DATA}
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    connection = HTTPConnection(wechat_sandbox.server.host, wechat_sandbox.server.port, timeout=5)
    connection.connect()
    sock = connection.sock
    for _ in range(50):
        connection.request("POST", f"/cgi-bin/message/template/send?access_token={token}", body=body)
        response = connection.getresponse()
        assert json.loads(response.read())["errcode"] == 0
        assert int(response.headers["Content-Length"]) > 0
    assert connection.sock is sock
    connection.close()
    assert len(wechat_sandbox.messages()) == 50
