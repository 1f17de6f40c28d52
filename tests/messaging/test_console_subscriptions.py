"""The staff console on channels subscribe and auto: the subscription template picker and its keyword fields, the
service-notification preview, credit counts before sending, the campaign page and history of subscription messages.

Nothing is delivered: the task queue is replaced by a recording broker (``no_broker``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from accounts.models import Follower, OfficialAccount
from messaging.models import Campaign, Channel, Message
from messaging.reasons import CONSENT_NO_CREDIT_REASON
from subscriptions.models import SubscriptionConsent
from tests.factories import ORDER_DATA, english_client
from tests.messaging.test_subscription_campaigns import SHIPPED, SHIPPED_CONTENT, subscription_template

pytestmark = pytest.mark.django_db

HOLDER = "oHolder000000000000000000001"
FOLLOWER = "oFollower00000000000000000002"
STRANGER = "oStranger00000000000000000003"


@pytest.fixture
def client_a(staff_a) -> Client:
    return english_client(staff_a)


@pytest.fixture
def shipped(account_a: OfficialAccount):
    return subscription_template(account_a, SHIPPED, SHIPPED_CONTENT, "订单发货提醒")


@pytest.fixture
def ledger(account_a: OfficialAccount, shipped) -> None:
    """HOLDER (no follower) holds a credit; FOLLOWER follows without one; STRANGER is unknown everywhere."""
    Follower.objects.create(account=account_a, openid=FOLLOWER)
    SubscriptionConsent.objects.create(account=account_a, openid=HOLDER, pri_tmpl_id=SHIPPED, credits=1)


def _body(account: OfficialAccount, shipped, action: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "account": account.appid,
        "channel": "subscribe",
        "subscription": shipped.pk,
        "action": action,
        "name": "",
        "link_kind": "url",
        "url": "https://shop.example.com/orders/1",
        "miniprogram_appid": "",
        "miniprogram_pagepath": "",
        "recipient_kind": Campaign.RecipientKind.OPENIDS,
        "recipient_list": f"{HOLDER}\n{FOLLOWER}\n{STRANGER}",
        **{f"kw_{name}": value for name, value in ORDER_DATA.items()},
    }
    body.update(overrides)
    return body


def _post_json(client: Client, url: str, body: Any):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def _service_card(page: str) -> str:
    return page.split('data-testid="service-card"')[1].split("</article>")[0]


def test_picking_subscribe_offers_the_subscription_templates_and_their_keyword_fields(client_a, account_a, shipped):
    page = client_a.get("/console/", {"account": account_a.appid, "channel": "subscribe"}).content.decode()
    assert 'id="pick-subscription"' in page and "订单发货提醒" in page
    assert 'id="pick-template"' not in page
    assert "Send a subscription notification" in page
    for name in ORDER_DATA:
        assert f'name="kw_{name}"' in page
    assert 'value="all_with_credit"' in page
    assert SHIPPED_CONTENT.splitlines()[0] in page


def test_the_template_channel_offers_no_subscription_picker(client_a, account_a, shipped):
    page = client_a.get("/console/", {"account": account_a.appid}).content.decode()
    assert 'id="pick-subscription"' not in page and 'value="all_with_credit"' not in page


def test_preview_shows_the_service_notification_card_and_sends_nothing(client_a, account_a, shipped, no_broker):
    response = client_a.post("/console/", _body(account_a, shipped, "preview"))
    assert response.status_code == 200
    page = response.content.decode()
    card = _service_card(page)
    assert "订单发货提醒" in card
    assert "商品名称" in card and ORDER_DATA["thing2"] in card
    assert "查看详情" in card
    assert "服务通知" in page
    assert 'data-testid="preview-card"' not in page
    assert not Campaign.objects.exists()


def test_preview_with_a_mini_program_says_so(client_a, account_a, shipped, no_broker):
    body = _body(account_a, shipped, "preview", link_kind="miniprogram", miniprogram_appid="wx0123456789abcdef")
    card = _service_card(client_a.post("/console/", body).content.decode())
    assert "进入小程序查看" in card and "查看详情" not in card


def test_auto_shows_both_keyword_sets_both_cards_and_each_sets_errors(client_a, account_a, shipped, no_broker):
    template = account_a.templates.get(template_id="sandbox-order-shipped-0000000000000000000001")
    body = _body(
        account_a,
        shipped,
        "preview",
        channel="auto",
        template=template.pk,
        **{f"skw_{name}": value for name, value in ORDER_DATA.items()},
    )
    body["skw_thing2"] = "超长的商品名称" * 3
    page = client_a.post("/console/", body).content.decode()
    assert 'data-testid="preview-card"' in page and 'data-testid="service-card"' in page
    assert 'data-keyword-set="template"' in page and 'data-keyword-set="subscription"' in page
    subscription_set = page.split('data-keyword-set="subscription"')[1]
    assert 'class="field keyword invalid" data-keyword-field="thing2"' in subscription_set
    template_set = page.split('data-keyword-set="template"')[1].split('data-keyword-set="subscription"')[0]
    assert "invalid" not in template_set


def test_send_refuses_an_invalid_value_with_the_field_error(client_a, account_a, shipped, no_broker):
    response = client_a.post("/console/", _body(account_a, shipped, "send", kw_thing2=""))
    assert response.status_code == 200
    assert 'class="field keyword invalid" data-keyword-field="thing2"' in response.content.decode()
    assert not Campaign.objects.exists()


def test_send_refuses_a_link_kind_without_its_url(client_a, account_a, shipped, no_broker):
    response = client_a.post("/console/", _body(account_a, shipped, "send", url=""))
    assert "Enter the link URL" in response.content.decode()
    assert not Campaign.objects.exists()


def test_send_starts_a_subscribe_campaign_and_its_page_shows_channel_credits_and_card(
    client_a, account_a, shipped, ledger, no_broker
):
    response = client_a.post("/console/", _body(account_a, shipped, "send"), follow=True)
    campaign = Campaign.objects.get()
    assert response.redirect_chain[-1][0] == f"/console/campaigns/{campaign.pk}/"
    assert (campaign.channel, campaign.page, campaign.url) == (
        Channel.SUBSCRIBE,
        "https://shop.example.com/orders/1",
        "",
    )
    assert campaign.recipients_with_credit == 1
    page = response.content.decode()
    assert "1 recipient(s) hold the subscription." in page
    assert 'id="campaign-channel">Subscription notification' in page
    assert "1 recipient held a credit or a long-term grant" in page
    assert "订单发货提醒" in _service_card(page)
    assert CONSENT_NO_CREDIT_REASON in page
    statuses = dict(Message.objects.filter(campaign=campaign).values_list("touser", "status"))
    assert statuses == {HOLDER: "queued", FOLLOWER: "failed", STRANGER: "failed"}


def test_auto_campaign_page_counts_each_channel(client_a, account_a, shipped, ledger, no_broker):
    template = account_a.templates.get(template_id="sandbox-order-shipped-0000000000000000000001")
    body = _body(
        account_a,
        shipped,
        "send",
        channel="auto",
        template=template.pk,
        **{f"skw_{name}": value for name, value in ORDER_DATA.items()},
    )
    response = client_a.post("/console/", body, follow=True)
    campaign = Campaign.objects.get()
    assert (campaign.url, campaign.page) == ("https://shop.example.com/orders/1",) * 2
    page = response.content.decode()
    table = page.split('id="channel-counts"')[1].split("</table>")[0]
    template_row = table.split('data-channel="template"')[1].split("</tr>")[0]
    subscribe_row = table.split('data-channel="subscribe"')[1].split("</tr>")[0]
    # FOLLOWER gets the template; HOLDER the subscription; STRANGER fails without a channel.
    assert "<td>1</td>" in template_row
    assert subscribe_row.count("<td>1</td>") == 2


def test_count_with_a_subscription_says_who_holds_it(client_a, account_a, shipped, ledger):
    listed = _post_json(
        client_a,
        "/console/recipients/count/",
        {"account": account_a.appid, "kind": "openids", "list": f"{HOLDER} {FOLLOWER}", "subscription": shipped.pk},
    ).json()
    assert listed["count"] == 2 and listed["with_credit"] == 1
    assert listed["holders"] == {HOLDER: True, FOLLOWER: False}
    everyone = _post_json(
        client_a,
        "/console/recipients/count/",
        {"account": account_a.appid, "kind": "all_with_credit", "subscription": shipped.pk},
    ).json()
    assert (everyone["count"], everyone["with_credit"]) == (1, 1)
    followers = _post_json(
        client_a,
        "/console/recipients/count/",
        {"account": account_a.appid, "kind": "all_subscribed", "subscription": shipped.pk},
    ).json()
    assert (followers["count"], followers["with_credit"]) == (1, 0)
    plain = _post_json(
        client_a, "/console/recipients/count/", {"account": account_a.appid, "kind": "openids", "list": HOLDER}
    ).json()
    assert plain["with_credit"] is None and plain["holders"] == {}


def test_validation_endpoint_judges_a_subscription_template(client_a, account_a, shipped):
    data = {**ORDER_DATA, "thing2": "超长的商品名称" * 3}
    result = _post_json(
        client_a, "/console/validate/", {"account": account_a.appid, "subscription": shipped.pk, "data": data}
    ).json()
    assert not result["valid"] and set(result["errors"]) == {"thing2"}


def test_another_accounts_subscription_template_is_404(client_b, account_a, shipped):
    assert client_b.get("/console/", {"channel": "subscribe", "subscription": shipped.pk}).status_code == 404


@pytest.fixture
def client_b(staff_b) -> Client:
    return english_client(staff_b)


def test_history_names_the_subscription_template_of_messages_without_a_template(
    client_a, account_a, shipped, ledger, no_broker
):
    client_a.post("/console/", _body(account_a, shipped, "send"))
    campaigns = client_a.get("/console/history/").content.decode()
    assert "订单发货提醒" in campaigns.split('id="history-campaigns"')[1]
    messages = client_a.get("/console/history/", {"view": "messages"}).content.decode()
    rows = messages.split('id="history-messages"')[1]
    assert rows.count("订单发货提醒") == 3
