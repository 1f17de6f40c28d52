"""A campaign larger than what WeChat's daily quota still allows is accepted with a warning, in the API's answer
(``warnings``) and on the console's campaign page (a flash message, in the user's language).

The quota is the sandbox's (``daily_quota``), read the way the schedule reads it (``poll_quota``); delivery is kept
out (``no_broker``), so the sandbox's count stays where the test set it.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.utils.html import escape

from accounts.models import Follower, OfficialAccount
from accounts.services import poll_quota
from messaging.models import Campaign
from sandbox.demo import DEMO_APPID
from tests.factories import ORDER_DATA, ORDER_TEMPLATE

SHORT_QUOTA_EN = "3 recipients, but WeChat allows only 2 more template messages today for this account"
SHORT_QUOTA_ZH = "共 3 个接收人，但微信今天只允许该公众号再发送 2 条模板消息"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def quota_of_two(account_a: OfficialAccount, followers_a: list[Follower], sandbox_api: Any, no_broker: list[str]):
    """WeChat allows the account 2 more template messages today, and our reading says so."""
    sandbox_api.update_account(DEMO_APPID, daily_quota=2)
    assert poll_quota(account_a).remain == 2


def _openids(followers: list[Follower], count: int) -> list[str]:
    return [follower.openid for follower in followers[:count]]


def _send_form(account: OfficialAccount, openids: list[str]) -> dict[str, Any]:
    """The console's compose form, sent: the order template to these openids, no link."""
    return {
        "account": account.appid,
        "template": account.templates.get(template_id=ORDER_TEMPLATE).pk,
        "action": "send",
        "name": "",
        "link_kind": "none",
        "recipient_kind": Campaign.RecipientKind.OPENIDS,
        "recipient_list": "\n".join(openids),
        **{f"kw_{name}": value for name, value in ORDER_DATA.items()},
    }


def test_the_api_answer_warns_when_the_recipients_exceed_the_quota_left(api_a, followers_a, quota_of_two):
    body = {"account": DEMO_APPID, "template_id": ORDER_TEMPLATE, "data": ORDER_DATA}

    short = api_a.post("/api/v1/campaigns/", {**body, "recipients": {"openids": _openids(followers_a, 3)}}, "json")
    enough = api_a.post("/api/v1/campaigns/", {**body, "recipients": {"openids": _openids(followers_a, 2)}}, "json")

    assert short.status_code == 202, short.content
    assert len(short.json()["warnings"]) == 1
    assert SHORT_QUOTA_EN in short.json()["warnings"][0]
    assert enough.status_code == 202, enough.content
    assert enough.json()["warnings"] == []


@pytest.mark.parametrize(
    ("language", "expected"), [("en", SHORT_QUOTA_EN), ("zh-hans", SHORT_QUOTA_ZH)], ids=["en", "zh-hans"]
)
def test_the_console_shows_the_warning_after_the_send(
    staff_a, account_a, followers_a, quota_of_two, language, expected
):
    client = Client(HTTP_ACCEPT_LANGUAGE=language)
    client.force_login(staff_a)
    page = client.post("/console/", _send_form(account_a, _openids(followers_a, 3)), follow=True)

    assert page.redirect_chain == [(f"/console/campaigns/{Campaign.objects.get().pk}/", 302)]
    flashes = [(message.level_tag, message.message) for message in page.context["messages"]]
    assert [level for level, _text in flashes] == ["success", "warning"]
    assert expected in flashes[1][1]
    assert f'<li class="warning">{escape(flashes[1][1])}</li>' in page.content.decode()


def test_the_console_says_nothing_more_when_the_quota_suffices(staff_a, account_a, followers_a, quota_of_two):
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(staff_a)
    page = client.post("/console/", _send_form(account_a, _openids(followers_a, 2)), follow=True)

    assert [message.level_tag for message in page.context["messages"]] == ["success"]
