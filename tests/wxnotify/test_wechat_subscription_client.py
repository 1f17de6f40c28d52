"""WeChatClient's subscription-notification calls against the sandbox: library, add, list, delete, bizsend, and
how WeChat's refusals come back (43101 as a consent failure, 47003, 2000xx, faults)."""

import uuid

import pytest

from sandbox.subscription_library import TITLES_BY_TID
from wxnotify.wechat.client import Credentials, WeChatClient
from wxnotify.wechat.errors import ConfigurationError, ConsentError, PayloadError
from wxnotify.wechat.subscriptions import SubscriptionCategory, SubscriptionKeyword, SubscriptionTemplateType
from wxnotify.wechat.tokens import AccessTokenManager

SECRET = "app-secret-0123456789abcdef"
BIZSEND = "/cgi-bin/message/subscribe/bizsend"


@pytest.fixture
def wechat(db, wechat_sandbox):
    appid = "wx" + uuid.uuid4().hex[:16]
    wechat_sandbox.add_account(appid=appid, secret=SECRET, followers=["OPENID"], subscription_categories=[670, 411])
    manager = AccessTokenManager()
    yield WeChatClient(Credentials(appid, SECRET), token_manager=manager, api_base=wechat_sandbox.base_url)
    manager.forget(appid)


def test_library_browse_add_list_delete_round_trip(wechat, wechat_sandbox):
    categories = wechat.get_subscription_categories()
    assert categories == [SubscriptionCategory(670, "快递、物流"), SubscriptionCategory(411, "医疗服务")]

    page = wechat.get_public_subscription_titles([670], start=0, limit=1)
    assert page.count == 2
    [first] = page.titles
    assert (first.tid, first.title, first.type, first.category_id) == (99, "付款成功通知", 2, 670)
    assert [title.tid for title in wechat.get_public_subscription_titles([670], start=1).titles] == [1082]

    keywords = wechat.get_public_subscription_keywords(1082)
    assert keywords[0] == SubscriptionKeyword(1, "订单编号", "SO20261128001", "character_string")
    assert [keyword.rule for keyword in keywords][:3] == ["character_string", "thing", "time"]

    pri_tmpl_id = wechat.add_subscription_template(1082, [2, 1, 3], "订单发货后提醒")
    request = wechat_sandbox.requests("/wxaapi/newtmpl/addtemplate")[0]
    assert request.json() == {"tid": "1082", "kidList": [2, 1, 3], "sceneDesc": "订单发货后提醒"}

    [listed] = wechat.get_subscription_templates()
    assert listed["priTmplId"] == pri_tmpl_id
    assert listed["type"] == SubscriptionTemplateType.ONE_TIME
    assert (
        listed["content"] == "商品名称:{{thing2.DATA}}\n订单编号:{{character_string1.DATA}}\n发货时间:{{time3.DATA}}\n"
    )

    wechat.delete_subscription_template(pri_tmpl_id)
    assert wechat.get_subscription_templates() == []
    assert wechat_sandbox.requests("/wxaapi/newtmpl/deltemplate")[0].json() == {"priTmplId": pri_tmpl_id}


def test_library_query_parameters(wechat, wechat_sandbox):
    wechat.get_public_subscription_titles([670, 411], start=0, limit=30)
    wechat.get_public_subscription_keywords(2304)

    titles, keywords = wechat_sandbox.requests()[1:]
    assert titles.query["ids"] == "670,411"
    assert (titles.query["start"], titles.query["limit"]) == ("0", "30")
    assert keywords.query["tid"] == "2304"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.add_subscription_template(1082, [1], "x"), "2 to 5"),
        (lambda c: c.add_subscription_template(1082, [1, 2, 3, 4, 5, 6], "x"), "2 to 5"),
        (lambda c: c.add_subscription_template(1082, [1, 2], "一二三四五六七八九十一二三四五六"), "at most 15"),
        (lambda c: c.get_public_subscription_titles([670], limit=31), "limit"),
        (lambda c: c.get_public_subscription_titles([], limit=1), "category"),
        (lambda c: c.delete_subscription_template(""), "pri_tmpl_id"),
        (
            lambda c: c.send_subscription_message(touser="O", template_id="T", data={}, miniprogram={"appid": "a"}),
            "pagepath",
        ),
    ],
)
def test_bad_arguments_never_reach_wechat(wechat, wechat_sandbox, call, message):
    with pytest.raises(ValueError, match=message):
        call(wechat)

    assert wechat_sandbox.requests() == []


def test_wechat_refusals_of_template_calls_are_classified(wechat, wechat_sandbox):
    with pytest.raises(PayloadError) as unknown_tid:
        wechat.get_public_subscription_keywords(424242)
    assert unknown_tid.value.errcode == 200014
    with pytest.raises(PayloadError) as kid_refused:
        wechat.add_subscription_template(1082, [1, 99], "发货提醒")
    assert kid_refused.value.errcode == 200020
    wechat_sandbox.add_api_fault("/wxaapi/newtmpl/addtemplate", errcode=200012)
    with pytest.raises(ConfigurationError) as full:
        wechat.add_subscription_template(1082, [1, 2], "发货提醒")
    assert full.value.errcode == 200012


def test_bizsend_consumes_a_credit_and_43101_is_a_consent_error(wechat, wechat_sandbox):
    appid = wechat.credentials.appid
    pri_tmpl_id = wechat.add_subscription_template(1082, [1, 2], "发货提醒")
    wechat_sandbox.state.grant_credit(appid, "NON_FOLLOWER", pri_tmpl_id)
    data = {"character_string1": "SO1", "thing2": {"value": "机械键盘"}}

    msgid = wechat.send_subscription_message(
        touser="NON_FOLLOWER", template_id=pri_tmpl_id, data=data, page="https://example.com/o/1"
    )

    [delivered] = wechat_sandbox.state.list_subscription_messages(appid)
    assert msgid == delivered["msgid"]
    assert wechat_sandbox.requests(BIZSEND)[0].json() == {
        "touser": "NON_FOLLOWER",
        "template_id": pri_tmpl_id,
        "data": {"character_string1": {"value": "SO1"}, "thing2": {"value": "机械键盘"}},
        "page": "https://example.com/o/1",
    }
    with pytest.raises(ConsentError) as no_credit:
        wechat.send_subscription_message(touser="NON_FOLLOWER", template_id=pri_tmpl_id, data=data)
    assert no_credit.value.errcode == 43101
    assert len(wechat_sandbox.requests(BIZSEND)) == 2  # never retried by the client


def test_bizsend_with_a_miniprogram_and_a_bad_value(wechat, wechat_sandbox):
    appid = wechat.credentials.appid
    pri_tmpl_id = wechat.add_subscription_template(1082, [1, 2], "发货提醒")
    wechat_sandbox.state.grant_credit(appid, "U", pri_tmpl_id, count=2)

    with pytest.raises(PayloadError) as too_long:
        wechat.send_subscription_message(
            touser="U", template_id=pri_tmpl_id, data={"character_string1": "SO1", "thing2": "键" * 21}
        )
    assert too_long.value.errcode == 47003
    assert "data.thing2.value invalid" in too_long.value.errmsg

    wechat.send_subscription_message(
        touser="U",
        template_id=pri_tmpl_id,
        data={"character_string1": "SO1", "thing2": "键" * 20},
        miniprogram={"appid": "wxmini", "pagepath": "pages/order?id=1"},
    )
    assert wechat_sandbox.requests(BIZSEND)[-1].json()["miniprogram"] == {
        "appid": "wxmini",
        "pagepath": "pages/order?id=1",
    }
    assert wechat_sandbox.state.credits(appid, "U") == [
        {"openid": "U", "template_id": pri_tmpl_id, "credits": 1, "long_term": False}
    ]


def test_bizsend_without_a_msgid_in_the_answer_returns_none(wechat, wechat_sandbox):
    wechat_sandbox.add_api_fault(BIZSEND, status=200, body='{"errcode":0,"errmsg":"ok"}')

    assert wechat.send_subscription_message(touser="U", template_id="T", data={"thing1": "x"}) is None


def test_long_term_templates_need_a_long_term_grant(wechat, wechat_sandbox):
    appid = wechat.credentials.appid
    pri_tmpl_id = wechat.add_subscription_template(2304, [1, 6], "挂号结果通知")
    assert TITLES_BY_TID[2304]["type"] == SubscriptionTemplateType.LONG_TERM
    data = {"name1": "张三", "enum_string6": "已预约"}

    with pytest.raises(ConsentError):
        wechat.send_subscription_message(touser="P", template_id=pri_tmpl_id, data=data)
    wechat_sandbox.state.grant_long_term(appid, "P", pri_tmpl_id)
    for _ in range(3):
        wechat.send_subscription_message(touser="P", template_id=pri_tmpl_id, data=data)
    with pytest.raises(PayloadError):
        wechat.send_subscription_message(
            touser="P", template_id=pri_tmpl_id, data={"name1": "张三", "enum_string6": "已付款"}
        )
    [listed] = wechat.get_subscription_templates()
    assert listed["keywordEnumValueList"] == [
        {"keywordCode": "enum_string6.DATA", "enumValueList": ["已预约", "已取消", "已就诊"]}
    ]
    wechat_sandbox.state.refuse(appid, "P", pri_tmpl_id)
    with pytest.raises(ConsentError):
        wechat.send_subscription_message(touser="P", template_id=pri_tmpl_id, data=data)
