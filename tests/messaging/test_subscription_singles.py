"""Single messages on every channel (issue 15): explicit subscription notifications, ``auto`` routing, their
fingerprints and content hashes, caps and duplicates with no template, the API's fields and errors, the admin.

Nothing here reaches WeChat: delivery is another part's, so the broker only records that it was asked
(``no_broker``) and the messages are judged as accepted.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import Follower, OfficialAccount
from messaging import caps
from messaging.models import Channel, Message, SendingCap
from messaging.reasons import CONSENT_NO_CREDIT_REASON, CONSENT_REJECTED_REASON
from messaging.services import IdempotencyConflict, MessageRejected, request_fingerprint, send_message
from messaging.services.duplicates import content_hash
from messaging.services.routing import auto_channel
from sandbox.demo import DEMO_APPID, DEMO_SUBSCRIPTION_TEMPLATES
from subscriptions.services import record_change, record_popup
from templates_app.keywords import parse_keywords
from templates_app.models import SubscriptionTemplate
from tests.factories import ORDER_DATA, ORDER_TEMPLATE, api_client_for, english_client
from webhooks.delivery import payload
from webhooks.models import Endpoint, Event

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english", "no_broker")]

MESSAGES = "/api/v1/messages/"
SUBSCRIPTION = DEMO_SUBSCRIPTION_TEMPLATES[0]["pri_tmpl_id"]
# The subscription template's keywords differ from the order template's (phrase7 instead of amount4), so data can
# fit one and not the other.
SUBSCRIPTION_DATA = {
    "character_string1": "SO20261128001",
    "thing2": "机械键盘",
    "time3": "2026年11月28日 10:30",
    "phrase7": "已发货",
}
PAGE = "https://example.com/orders/SO20261128001"
FOLLOWER = "oFollower0000000000000000001"
STRANGER = "oStranger0000000000000000001"
UNFOLLOWED = "oUnfollowed00000000000000001"


@pytest.fixture
def subscription_template(account_a: OfficialAccount) -> SubscriptionTemplate:
    content = (
        "订单编号:{{character_string1.DATA}}\n商品名称:{{thing2.DATA}}\n发货时间:{{time3.DATA}}\n状态:{{phrase7.DATA}}"
    )
    return SubscriptionTemplate.objects.create(
        account=account_a,
        pri_tmpl_id=SUBSCRIPTION,
        title="订单发货提醒",
        type=SubscriptionTemplate.Type.ONE_TIME,
        content=content,
        keywords=[keyword.as_dict() for keyword in parse_keywords(content)],
    )


@pytest.fixture
def people(account_a: OfficialAccount, subscription_template: SubscriptionTemplate, django_user_model: Any) -> None:
    """A follower, one who unfollowed (bound to user "gone"), and an openid never seen."""
    Follower.objects.create(account=account_a, openid=FOLLOWER, subscribed_at=timezone.now())
    gone = django_user_model.objects.create_user("gone")
    Follower.objects.create(account=account_a, openid=UNFOLLOWED, subscribed=False, user=gone)


def grant(account: OfficialAccount, openid: str) -> None:
    """The user accepted the subscription popup once: one credit."""
    record_popup(account, openid, [{"TemplateId": SUBSCRIPTION, "SubscribeStatusString": "accept"}])


def refuse(account: OfficialAccount, openid: str) -> None:
    record_change(account, openid, [{"TemplateId": SUBSCRIPTION, "SubscribeStatusString": "reject"}])


def subscribe(account: OfficialAccount, **fields: Any):
    values = {"channel": Channel.SUBSCRIBE, "subscription_template_id": SUBSCRIPTION, "data": SUBSCRIPTION_DATA}
    return send_message(account=account, **{**values, **fields})


def auto(account: OfficialAccount, **fields: Any):
    values = {
        "channel": Channel.AUTO,
        "template_id": ORDER_TEMPLATE,
        "subscription_template_id": SUBSCRIPTION,
        "data": ORDER_DATA,
        "subscription_data": SUBSCRIPTION_DATA,
    }
    return send_message(account=account, **{**values, **fields})


# --- Explicit subscribe ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("openid", [FOLLOWER, STRANGER], ids=["follower", "openid never seen"])
def test_a_subscription_notification_with_a_credit_is_queued_without_a_template(account_a, people, no_broker, openid):
    grant(account_a, openid)
    result = subscribe(account_a, touser=openid, page=PAGE)

    message = Message.objects.get(pk=result.message.pk)
    assert result.created and message.status == Message.Status.QUEUED
    assert (message.channel, message.template, message.subscription_template.pri_tmpl_id) == (
        Channel.SUBSCRIBE,
        None,
        SUBSCRIPTION,
    )
    assert message.template_id_sent == SUBSCRIPTION
    assert message.url == PAGE
    assert message.data["phrase7"] == {"value": "已发货"}
    assert (message.follower_id is not None) == (openid == FOLLOWER)
    assert message.content_hash == content_hash(
        template_id=SUBSCRIPTION, data=message.data, url=PAGE, miniprogram=None, channel=Channel.SUBSCRIBE
    )


def test_a_user_who_unfollowed_gets_a_subscription_notification_through_the_binding(account_a, people):
    grant(account_a, UNFOLLOWED)
    message = subscribe(account_a, user="gone").message
    assert (message.touser, message.status, message.errmsg) == (UNFOLLOWED, Message.Status.QUEUED, "")


@pytest.mark.parametrize(
    ("ledger", "reason"),
    [("refused", CONSENT_REJECTED_REASON), ("nothing", CONSENT_NO_CREDIT_REASON), ("spent", CONSENT_NO_CREDIT_REASON)],
)
def test_without_consent_the_message_is_stored_failed_at_once_with_its_event(
    account_a, people, staff_a, no_broker, ledger, reason
):
    if ledger == "refused":
        grant(account_a, FOLLOWER)
        refuse(account_a, FOLLOWER)
    elif ledger == "spent":
        grant(account_a, FOLLOWER)
        account_a.subscription_consents.update(credits=0)
    Endpoint.objects.create(
        owner=staff_a,
        account=account_a,
        url="https://hooks.example.com/x",
        secret="s" * 20,
        event_types=["message.failed"],
    )

    result = subscribe(account_a, touser=FOLLOWER)

    message = Message.objects.get(pk=result.message.pk)
    assert (message.status, message.errmsg, message.errcode) == (Message.Status.FAILED, reason, None)
    assert message.finished_at is not None and message.template is None
    assert no_broker == []  # no delivery asked for: WeChat is never called
    event = Event.objects.get(kind="message.failed", message_id=message.pk)
    event.appid = DEMO_APPID
    body = payload(event)["message"]
    assert (body["channel"], body["errmsg"]) == ("subscribe", reason)


def test_explicit_subscribe_validates_against_the_subscription_template(account_a, people):
    with pytest.raises(MessageRejected) as refused:
        subscribe(account_a, touser=FOLLOWER, data=ORDER_DATA, page="ftp://example.com/x")
    assert set(refused.value.errors) == {"data", "page"}
    assert set(refused.value.errors["data"]) == {"amount4", "phrase7"}
    with pytest.raises(MessageRejected) as unknown:
        subscribe(account_a, touser=FOLLOWER, subscription_template_id="no-such-template")
    assert set(unknown.value.errors) == {"subscription_template_id"}


# --- auto -----------------------------------------------------------------------------------------------------------


def test_the_rule_of_auto():
    never = pytest.fail
    assert auto_channel(follows=True, template_fits=True, subscription_fits=True, consent_allows=never) == "template"
    for follows, fits in ((False, True), (True, False)):
        assert (
            auto_channel(follows=follows, template_fits=fits, subscription_fits=True, consent_allows=lambda: True)
            == "subscribe"
        )
    assert auto_channel(follows=False, template_fits=True, subscription_fits=True, consent_allows=lambda: False) is None
    assert auto_channel(follows=True, template_fits=False, subscription_fits=False, consent_allows=lambda: True) is None


def test_auto_sends_a_follower_the_template_message(account_a, people):
    grant(account_a, FOLLOWER)
    message = auto(account_a, touser=FOLLOWER, url="https://example.com/t", page=PAGE).message
    assert (message.channel, message.template.template_id, message.subscription_template) == (
        Channel.TEMPLATE,
        ORDER_TEMPLATE,
        None,
    )
    assert (message.template_id_sent, message.url, message.data["amount4"]) == (
        ORDER_TEMPLATE,
        "https://example.com/t",
        {"value": "¥399.00"},
    )
    assert message.content_hash == content_hash(
        template_id=ORDER_TEMPLATE, data=message.data, url="https://example.com/t", miniprogram=None
    )


@pytest.mark.parametrize("openid", [STRANGER, UNFOLLOWED])
def test_auto_sends_a_non_follower_with_a_credit_the_subscription_notification(account_a, people, openid):
    grant(account_a, openid)
    message = auto(account_a, touser=openid, url="https://example.com/t", page=PAGE).message
    assert (message.channel, message.template, message.template_id_sent) == (Channel.SUBSCRIBE, None, SUBSCRIPTION)
    assert (message.url, message.status, message.data["phrase7"]) == (PAGE, Message.Status.QUEUED, {"value": "已发货"})


def test_auto_sends_a_follower_the_subscription_notification_when_only_its_data_fits(account_a, people):
    grant(account_a, FOLLOWER)
    message = auto(account_a, touser=FOLLOWER, data=SUBSCRIPTION_DATA, subscription_data=None).message
    assert (message.channel, message.subscription_template.pri_tmpl_id) == (Channel.SUBSCRIBE, SUBSCRIPTION)


@pytest.mark.parametrize("ledger", ["nothing", "refused"])
def test_auto_without_a_channel_is_refused_and_stores_nothing(account_a, people, ledger):
    if ledger == "refused":
        grant(account_a, STRANGER)
        refuse(account_a, STRANGER)
    with pytest.raises(MessageRejected) as refused:
        auto(account_a, touser=STRANGER)
    assert set(refused.value.errors) == {"channel"}
    assert refused.value.errors["channel"][0].startswith("No channel:")
    assert not Message.objects.exists()


def test_auto_refused_names_the_data_errors_of_the_open_channels(account_a, people):
    grant(account_a, FOLLOWER)
    bad = {**ORDER_DATA, "amount4": "lots"}
    with pytest.raises(MessageRejected) as refused:
        auto(account_a, touser=FOLLOWER, data=bad, subscription_data={**SUBSCRIPTION_DATA, "phrase7": ""})
    assert set(refused.value.errors) == {"channel", "data", "subscription_data"}
    assert set(refused.value.errors["data"]) == {"amount4"}
    assert set(refused.value.errors["subscription_data"]) == {"phrase7"}


# --- Idempotency, fingerprints, content hashes --------------------------------------------------------------------


def test_the_same_key_and_request_replays_and_another_channel_is_a_conflict(account_a, people):
    grant(account_a, FOLLOWER)
    first = subscribe(account_a, touser=FOLLOWER, client_msg_id="order-7-shipped", page=PAGE)
    again = subscribe(account_a, touser=FOLLOWER, client_msg_id="order-7-shipped", page=PAGE)
    assert (again.created, again.message.pk) == (False, first.message.pk)
    with pytest.raises(IdempotencyConflict):
        auto(account_a, touser=FOLLOWER, client_msg_id="order-7-shipped", page=PAGE)
    with pytest.raises(IdempotencyConflict):
        subscribe(account_a, touser=FOLLOWER, client_msg_id="order-7-shipped")


def test_an_auto_repeat_replays_the_first_message_after_the_credit_it_used_is_gone(account_a, people):
    grant(account_a, STRANGER)
    first = auto(account_a, touser=STRANGER, client_msg_id="order-8-shipped")
    account_a.subscription_consents.update(credits=0)
    again = auto(account_a, touser=STRANGER, client_msg_id="order-8-shipped")
    assert (again.created, again.message.pk) == (False, first.message.pk)
    # Both forms of keyword values are one request.
    as_sent = {name: {"value": value} for name, value in ORDER_DATA.items()}
    assert (
        auto(account_a, touser=STRANGER, client_msg_id="order-8-shipped", data=as_sent).message.pk == first.message.pk
    )


def test_template_requests_hash_as_before_channels_existed(account_a, people):
    asked = {"touser": "o1", "template_id": "t", "data": {"k": {"value": "v"}}, "url": "", "miniprogram": None}
    before = hashlib.sha256(json.dumps(asked, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode())
    assert request_fingerprint(**asked) == request_fingerprint(**asked, channel=Channel.TEMPLATE) == before.hexdigest()
    said = {"template_id": "t", "data": {"k": {"value": "v"}}, "url": "", "miniprogram": None}
    before = hashlib.sha256(json.dumps(said, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode())
    assert content_hash(**said) == before.hexdigest()
    assert content_hash(**said, channel=Channel.SUBSCRIBE) != before.hexdigest()

    message = send_message(account=account_a, template_id=ORDER_TEMPLATE, data=ORDER_DATA, touser=FOLLOWER).message
    normalized = {name: {"value": value} for name, value in ORDER_DATA.items()}
    assert message.request_fingerprint == request_fingerprint(
        touser=FOLLOWER, template_id=ORDER_TEMPLATE, data=normalized, url="", miniprogram=None
    )
    assert message.content_hash == content_hash(template_id=ORDER_TEMPLATE, data=normalized, url="", miniprogram=None)


def test_the_duplicate_window_answers_a_second_subscription_notification_with_the_first(account_a, people):
    account_a.duplicate_window_minutes = 10
    account_a.save()
    grant(account_a, STRANGER)
    grant(account_a, STRANGER)
    first = subscribe(account_a, touser=STRANGER, page=PAGE)
    second = subscribe(account_a, touser=STRANGER, page=PAGE)
    assert (second.created, second.duplicate, second.message.pk) == (False, True, first.message.pk)
    other = subscribe(account_a, touser=STRANGER, page="https://example.com/other")
    assert other.created


# --- Caps -----------------------------------------------------------------------------------------------------------


def test_a_template_cap_passes_subscription_notifications_and_an_account_cap_counts_them(account_a, people):
    grant(account_a, STRANGER)
    grant(account_a, STRANGER)
    order_cap = SendingCap.objects.create(
        account=account_a, template=account_a.templates.get(template_id=ORDER_TEMPLATE), limit=1
    )
    notifications = [subscribe(account_a, touser=STRANGER, page=f"{PAGE}?n={n}").message for n in range(2)]
    for message in notifications:
        message.account = account_a
    rules = caps.CapRules()
    verdict = rules.apply(notifications)
    assert verdict.allowed == notifications and not order_cap.counters.exists()

    order_cap.delete()
    SendingCap.objects.create(account=account_a, template=None, limit=1)
    fresh = [subscribe(account_a, touser=STRANGER, page=f"{PAGE}?m={n}").message for n in range(2)]
    for message in fresh:
        message.account = account_a
    verdict = caps.CapRules().apply(fresh)
    assert (verdict.allowed, verdict.capped) == ([fresh[0]], [fresh[1]])


# --- The API --------------------------------------------------------------------------------------------------------


@pytest.fixture
def api(staff_a):
    return api_client_for(staff_a)


def test_the_api_sends_a_subscription_notification_and_shows_its_channel(api, account_a, people):
    grant(account_a, STRANGER)
    body = {
        "account": DEMO_APPID,
        "touser": STRANGER,
        "channel": "subscribe",
        "subscription_template_id": SUBSCRIPTION,
        "data": SUBSCRIPTION_DATA,
        "page": PAGE,
    }
    response = api.post(MESSAGES, body, format="json")
    assert response.status_code == 202, response.content
    shown = response.json()
    assert (shown["channel"], shown["template_id"], shown["subscription_template_id"]) == (
        "subscribe",
        SUBSCRIPTION,
        SUBSCRIPTION,
    )
    assert (shown["url"], shown["page"], shown["status"]) == ("", PAGE, "queued")
    listed = api.get(MESSAGES, {"template": SUBSCRIPTION}).json()["results"]
    assert [item["id"] for item in listed] == [shown["id"]]
    assert api.get(f"{MESSAGES}{shown['id']}/").json() == {**shown, "updated_at": listed[0]["updated_at"]}


def test_the_api_shows_a_template_message_as_before_plus_its_channel(api, account_a, people):
    body = {"account": DEMO_APPID, "touser": FOLLOWER, "template_id": ORDER_TEMPLATE, "data": ORDER_DATA}
    response = api.post(MESSAGES, {**body, "url": "https://example.com/t"}, format="json")
    assert response.status_code == 202, response.content
    shown = response.json()
    assert (shown["channel"], shown["template_id"], shown["subscription_template_id"]) == (
        "template",
        ORDER_TEMPLATE,
        None,
    )
    assert (shown["url"], shown["page"]) == ("https://example.com/t", "")


def test_the_api_answers_auto_without_a_channel_400(api, account_a, people):
    body = {
        "account": DEMO_APPID,
        "touser": STRANGER,
        "channel": "auto",
        "template_id": ORDER_TEMPLATE,
        "subscription_template_id": SUBSCRIPTION,
        "data": ORDER_DATA,
        "subscription_data": SUBSCRIPTION_DATA,
    }
    response = api.post(MESSAGES, body, format="json")
    assert response.status_code == 400, response.content
    assert set(response.json()["errors"]) == {"channel"}
    grant(account_a, STRANGER)
    response = api.post(MESSAGES, {**body, "subscription_data": None, "data": SUBSCRIPTION_DATA}, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["channel"] == "subscribe"


def test_the_api_replays_a_repeated_subscription_notification_and_refuses_its_key_on_another_channel(
    api, account_a, people
):
    grant(account_a, FOLLOWER)
    body = {
        "account": DEMO_APPID,
        "touser": FOLLOWER,
        "channel": "subscribe",
        "subscription_template_id": SUBSCRIPTION,
        "data": SUBSCRIPTION_DATA,
        "client_msg_id": "order-9-shipped",
    }
    first = api.post(MESSAGES, body, format="json")
    again = api.post(MESSAGES, body, format="json")
    assert (first.status_code, again.status_code) == (202, 200)
    assert again["X-Wxnotify-Replay"] == "idempotency-key" and again.json()["id"] == first.json()["id"]
    other = {**body, "channel": "auto", "template_id": ORDER_TEMPLATE}
    assert api.post(MESSAGES, other, format="json").status_code == 422


BASE = {"account": DEMO_APPID, "touser": FOLLOWER, "data": ORDER_DATA}


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"channel": "template"}, {"template_id"}),
        ({"channel": "subscribe"}, {"subscription_template_id"}),
        ({"channel": "auto", "template_id": ORDER_TEMPLATE}, {"subscription_template_id"}),
        ({"channel": "auto", "subscription_template_id": SUBSCRIPTION}, {"template_id"}),
        ({"channel": "auto"}, {"template_id", "subscription_template_id"}),
        ({"template_id": ORDER_TEMPLATE, "page": PAGE}, {"page"}),
        ({"template_id": ORDER_TEMPLATE, "subscription_template_id": SUBSCRIPTION}, {"subscription_template_id"}),
        ({"template_id": ORDER_TEMPLATE, "subscription_data": SUBSCRIPTION_DATA}, {"subscription_data"}),
        (
            {
                "channel": "subscribe",
                "subscription_template_id": SUBSCRIPTION,
                "data": SUBSCRIPTION_DATA,
                "url": PAGE,
                "template_id": "x",
            },
            {"url", "template_id"},
        ),
        (
            {
                "channel": "subscribe",
                "subscription_template_id": SUBSCRIPTION,
                "data": SUBSCRIPTION_DATA,
                "subscription_data": {"k": "v"},
            },
            {"subscription_data"},
        ),
        ({"channel": "sms", "template_id": ORDER_TEMPLATE}, {"channel"}),
        (
            {
                "channel": "subscribe",
                "subscription_template_id": SUBSCRIPTION,
                "data": SUBSCRIPTION_DATA,
                "page": "not a url",
            },
            {"page"},
        ),
    ],
    ids=lambda value: "-".join(sorted(value)) if isinstance(value, set) else None,
)
def test_the_api_answers_bad_combinations_400_field_by_field(api, account_a, people, fields, errors):
    response = api.post(MESSAGES, {**BASE, **fields}, format="json")
    assert response.status_code == 400, response.content
    assert set(response.json()["errors"]) == errors
    assert not Message.objects.exists()


def test_the_schema_documents_the_channel_fields(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()["components"]["schemas"]
    request = schema["MessageCreate"]["properties"]
    assert {"channel", "subscription_template_id", "subscription_data", "page"} <= set(request)
    assert schema["ChannelEnum"]["enum"] == ["template", "subscribe", "auto"]
    assert schema["MessageChannelEnum"]["enum"] == ["template", "subscribe"]
    shown = schema["Message"]["properties"]
    assert {"channel", "subscription_template_id", "page"} <= set(shown)


# --- The admin ------------------------------------------------------------------------------------------------------


def test_the_admin_lists_and_shows_a_subscription_notification(admin_client, account_a, people):
    grant(account_a, STRANGER)
    message = subscribe(account_a, touser=STRANGER, page=PAGE).message
    changelist = reverse("admin:messaging_message_changelist")
    listed = admin_client.get(changelist, HTTP_ACCEPT_LANGUAGE="en")
    assert listed.status_code == 200
    assert "订单发货提醒" in listed.content.decode()
    filtered = admin_client.get(changelist, {"channel__exact": "subscribe"}, HTTP_ACCEPT_LANGUAGE="en")
    assert filtered.status_code == 200 and filtered.context["cl"].result_count == 1
    detail = admin_client.get(reverse("admin:messaging_message_change", args=[message.pk]), HTTP_ACCEPT_LANGUAGE="en")
    assert detail.status_code == 200
    page = detail.content.decode()
    assert "订单发货提醒" in page and SUBSCRIPTION in page and "subscription notification" in page


def test_scheduled_subscription_notifications_wait_like_template_messages(account_a, people):
    grant(account_a, STRANGER)
    later = timezone.now() + timedelta(hours=2)
    message = subscribe(account_a, touser=STRANGER, send_at=later).message
    assert (message.status, message.next_attempt_at) == (Message.Status.SCHEDULED, later)


def test_the_dashboard_and_the_console_history_open_with_a_subscription_notification(
    admin_client, account_a, people, staff_a
):
    grant(account_a, STRANGER)
    subscribe(account_a, touser=STRANGER)
    refused = subscribe(account_a, touser=FOLLOWER).message
    assert admin_client.get("/admin/ops/dashboard/", HTTP_ACCEPT_LANGUAGE="en").status_code == 200
    console = english_client(staff_a)
    history = console.get(reverse("console:history"), {"view": "messages"})
    assert history.status_code == 200
    assert refused.touser in history.content.decode() and "No consent" in history.content.decode()
