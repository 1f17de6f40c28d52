"""The built-in demo account of the sandbox.

The demo runner registers exactly this account in wxnotify, so the two sides agree on AppID, AppSecret,
callback Token and EncodingAESKey without any copy-and-paste.  The values are public test values: they
only ever talk to the sandbox.
"""

from __future__ import annotations

import copy
from typing import Any

DEMO_APPID = "wxdeadbeef00000001"
DEMO_CALLBACK_URL = f"http://127.0.0.1:8000/wechat/callback/{DEMO_APPID}/"
DEMO_FOLLOWERS = 100

DEMO_TEMPLATES: list[dict[str, str]] = [
    {
        "template_id": "sandbox-order-shipped-0000000000000000000001",
        "title": "订单发货通知",
        "primary_industry": "IT科技",
        "deputy_industry": "互联网|电子商务",
        "content": (
            "订单编号:{{character_string1.DATA}}\n商品名称:{{thing2.DATA}}\n"
            "发货时间:{{time3.DATA}}\n订单金额:{{amount4.DATA}}"
        ),
        "example": "订单编号:SO20261128001\n商品名称:机械键盘\n发货时间:2026年11月28日 10:30\n订单金额:¥399.00",
    },
    {
        "template_id": "sandbox-booking-confirmed-000000000000000002",
        "title": "预约成功提醒",
        "primary_industry": "IT科技",
        "deputy_industry": "互联网|电子商务",
        "content": (
            "预约项目:{{thing1.DATA}}\n预约日期:{{date2.DATA}}\n预约状态:{{phrase3.DATA}}\n"
            "联系电话:{{phone_number4.DATA}}"
        ),
        "example": "预约项目:口腔检查\n预约日期:2026年12月1日 09:00\n预约状态:已确认\n联系电话:0755-88886666",
    },
    {
        "template_id": "sandbox-ticket-status-00000000000000000000003",
        "title": "工单状态变更通知",
        "primary_industry": "IT科技",
        "deputy_industry": "IT软件与服务",
        "content": "工单名称:{{thing1.DATA}}\n工单编号:{{character_string2.DATA}}\n处理时间:{{time3.DATA}}",
        "example": "工单名称:打印机故障\n工单编号:T-10086\n处理时间:2026年11月28日 14:00",
    },
    {
        "template_id": "sandbox-legacy-payment-00000000000000000000004",
        "title": "付款成功通知",
        "primary_industry": "IT科技",
        "deputy_industry": "互联网|电子商务",
        "content": ("{{first.DATA}}\n付款金额:{{keyword1.DATA}}\n付款时间:{{keyword2.DATA}}\n{{remark.DATA}}"),
        "example": "您好，您的订单已付款成功\n付款金额:39.80元\n付款时间:2026-11-28 10:00\n感谢您的惠顾",
    },
]

# Subscription templates the demo account has added from the sandbox's library (sandbox.subscription_library): a
# one-time and a long-term one, so the demo can show both kinds of consent.
DEMO_SUBSCRIPTION_TEMPLATES: list[dict[str, Any]] = [
    {
        "pri_tmpl_id": "sandbox-sub-order-shipped000000000000000001",
        "tid": 1082,
        "kid_list": [1, 2, 3, 7],
        "scene_desc": "订单发货后提醒",
    },
    {
        "pri_tmpl_id": "sandbox-sub-registration0000000000000000002",
        "tid": 2304,
        "kid_list": [1, 2, 3, 6],
        "scene_desc": "挂号结果通知",
    },
]

DEMO_ACCOUNT: dict[str, Any] = {
    "appid": DEMO_APPID,
    "secret": "5ec7e75ec7e75ec7e75ec7e75ec7e700",
    "token": "wxnotifydemo",
    "encoding_aes_key": "DemoKeyDemoKeyDemoKeyDemoKeyDemoKeyDemoKey1",
    "mode": "safe",
    "original_id": "gh_de0000000001",
    "callback_url": DEMO_CALLBACK_URL,
    "followers": DEMO_FOLLOWERS,
    # WeChat's default is 100,000 template sends a day; the demo account gets more so benchmarks never meet it.
    "daily_quota": 10_000_000,
    "templates": DEMO_TEMPLATES,
    "subscription_templates": DEMO_SUBSCRIPTION_TEMPLATES,
}


def demo_config(**account_overrides: Any) -> dict[str, Any]:
    """A sandbox config holding only the demo account; a deep copy, so callers may change it freely."""
    account = copy.deepcopy(DEMO_ACCOUNT)
    account.update(account_overrides)
    return {"accounts": [account]}
