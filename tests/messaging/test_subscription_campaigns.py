"""Campaigns of channels subscribe and auto: each recipient's route chosen in SQL against the consent ledger, the
credit count shown before sending, the API's fields and errors, approval.

The task queue is replaced by a recording broker (``no_broker``): nothing reaches WeChat; each test looks at the
messages the expansion wrote.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from accounts.models import Follower, OfficialAccount
from messaging.models import ApprovalPolicy, Campaign, Channel, Message
from messaging.reasons import CONSENT_NO_CREDIT_REASON, CONSENT_REJECTED_REASON, NO_CHANNEL_REASON
from messaging.services import (
    MessageRejected,
    RecipientSpec,
    approve_campaign,
    create_campaign,
    expand_all_subscribed,
)
from subscriptions.models import SubscriptionConsent
from templates_app.keywords import parse_keywords
from templates_app.models import SubscriptionTemplate
from tests.factories import ORDER_DATA, ORDER_TEMPLATE, english_client
from tests.messaging.test_approval import make_admin

pytestmark = pytest.mark.django_db

SHIPPED = "sub-order-shipped-000000000000000000001"
OTHER = "sub-registration-00000000000000000000002"
# The subscription template has the order template's keywords: ORDER_DATA fits both.
SHIPPED_CONTENT = (
    "商品名称:{{thing2.DATA}}\n订单编号:{{character_string1.DATA}}\n发货时间:{{time3.DATA}}\n订单金额:{{amount4.DATA}}"
)
OTHER_CONTENT = "就诊人:{{name1.DATA}}\n就诊时间:{{time2.DATA}}"
OTHER_DATA = {"name1": "张三", "time2": "2026年12月1日 09:00"}


# The fields of a subscribe and an auto campaign of the order's content.
SUBSCRIBE = {"channel": Channel.SUBSCRIBE, "subscription_template_id": SHIPPED, "data": ORDER_DATA}
AUTO = {**SUBSCRIBE, "channel": Channel.AUTO, "template_id": ORDER_TEMPLATE}


def subscription_template(account: OfficialAccount, pri_tmpl_id: str, content: str, title: str) -> SubscriptionTemplate:
    return SubscriptionTemplate.objects.create(
        account=account,
        pri_tmpl_id=pri_tmpl_id,
        title=title,
        type=SubscriptionTemplate.Type.ONE_TIME,
        content=content,
        keywords=[keyword.as_dict() for keyword in parse_keywords(content)],
    )


@pytest.fixture
def templates(account_a: OfficialAccount) -> None:
    subscription_template(account_a, SHIPPED, SHIPPED_CONTENT, "订单发货提醒")
    subscription_template(account_a, OTHER, OTHER_CONTENT, "挂号结果通知")


@pytest.fixture
def people(account_a: OfficialAccount, templates: None) -> dict[str, str]:
    """Followers and non-followers with every state of consent to SHIPPED."""
    openids = {
        "follower_credit": "oFollowerCredit0000000000001",
        "follower_bare": "oFollowerBare000000000000002",
        "left_credit": "oLeftCredit00000000000000003",
        "stranger_credit": "oStrangerCredit0000000000004",
        "stranger_long": "oStrangerLong000000000000005",
        "stranger_rejected": "oStrangerRejected000000006",
        "stranger_spent": "oStrangerSpent00000000000007",
        "stranger_bare": "oStrangerBare000000000000008",
    }
    for name in ("follower_credit", "follower_bare"):
        Follower.objects.create(account=account_a, openid=openids[name])
    Follower.objects.create(account=account_a, openid=openids["left_credit"], subscribed=False)
    ledger = {
        "follower_credit": {"credits": 1},
        "left_credit": {"credits": 2},
        "stranger_credit": {"credits": 1},
        "stranger_long": {"long_term": True},
        "stranger_rejected": {"credits": 3, "rejected": True},
        "stranger_spent": {"credits": 0},
    }
    for name, fields in ledger.items():
        SubscriptionConsent.objects.create(account=account_a, openid=openids[name], pri_tmpl_id=SHIPPED, **fields)
    # Consent to another template counts for nothing here.
    SubscriptionConsent.objects.create(account=account_a, openid=openids["stranger_bare"], pri_tmpl_id=OTHER, credits=5)
    return openids


def start(capture: Any, account: OfficialAccount, recipients: RecipientSpec, **fields: Any) -> Campaign:
    with capture(execute=True):
        campaign = create_campaign(account=account, recipients=recipients, **fields)
    campaign.refresh_from_db()
    return campaign


def outcome(campaign: Campaign) -> dict[str, tuple[str, str, str]]:
    """openid → (channel, status, errmsg) of the campaign's messages."""
    return {
        touser: (channel, status, errmsg)
        for touser, channel, status, errmsg in Message.objects.filter(campaign=campaign).values_list(
            "touser", "channel", "status", "errmsg"
        )
    }


QUEUED_SUBSCRIBE = (Channel.SUBSCRIBE, Message.Status.QUEUED, "")
QUEUED_TEMPLATE = (Channel.TEMPLATE, Message.Status.QUEUED, "")


def test_a_subscribe_campaign_queues_credit_holders_and_fails_the_others_with_the_ledgers_reason(
    account_a, people, no_broker, django_capture_on_commit_callbacks
):
    campaign = start(
        django_capture_on_commit_callbacks,
        account_a,
        RecipientSpec.openids(people.values()),
        **SUBSCRIBE,
        page="https://shop.example.com/orders/1",
    )
    result = outcome(campaign)
    assert result[people["follower_credit"]] == QUEUED_SUBSCRIBE
    assert result[people["left_credit"]] == QUEUED_SUBSCRIBE  # no longer follows: a subscription needs no follow
    assert result[people["stranger_credit"]] == QUEUED_SUBSCRIBE
    assert result[people["stranger_long"]] == QUEUED_SUBSCRIBE
    rejected = (Channel.SUBSCRIBE, Message.Status.FAILED, CONSENT_REJECTED_REASON)
    no_credit = (Channel.SUBSCRIBE, Message.Status.FAILED, CONSENT_NO_CREDIT_REASON)
    assert result[people["stranger_rejected"]] == rejected
    for name in ("follower_bare", "stranger_spent", "stranger_bare"):
        assert result[people[name]] == no_credit
    assert campaign.recipient_count == 8
    assert campaign.recipients_with_credit == 4
    message = Message.objects.get(campaign=campaign, touser=people["stranger_credit"])
    assert message.template_id is None
    assert message.subscription_template.pri_tmpl_id == SHIPPED
    assert message.template_id_sent == SHIPPED
    assert message.data is None and campaign.content_for(message.channel) == (
        campaign.data,
        "https://shop.example.com/orders/1",
    )
    failed = Message.objects.get(campaign=campaign, touser=people["stranger_bare"])
    assert failed.finished_at is not None


def test_a_subscribe_campaign_by_username_goes_through_the_follower_binding(
    account_a, people, django_user_model, no_broker, django_capture_on_commit_callbacks
):
    follower = Follower.objects.get(openid=people["follower_credit"])
    follower.user = django_user_model.objects.create_user("carol")
    follower.save()
    campaign = start(
        django_capture_on_commit_callbacks,
        account_a,
        RecipientSpec.usernames(["carol"]),
        **SUBSCRIBE,
    )
    assert outcome(campaign) == {people["follower_credit"]: QUEUED_SUBSCRIBE}
    assert campaign.recipients_with_credit == 1


def test_an_auto_campaign_over_all_followers_routes_each_in_sql(
    account_a, people, no_broker, django_capture_on_commit_callbacks
):
    campaign = start(
        django_capture_on_commit_callbacks,
        account_a,
        RecipientSpec.all_subscribed(),
        **AUTO,
        url="https://shop.example.com/t",
        page="https://shop.example.com/s",
    )
    # Two subscribed followers, one of them holding a credit, counted before any message is written.
    assert campaign.state == Campaign.State.EXPANDING
    assert (campaign.recipient_count, campaign.recipients_with_credit) == (2, 1)
    expand_all_subscribed(campaign.pk)
    assert outcome(campaign) == {people["follower_credit"]: QUEUED_TEMPLATE, people["follower_bare"]: QUEUED_TEMPLATE}
    message = Message.objects.get(campaign=campaign, touser=people["follower_bare"])
    assert (message.template.template_id, message.subscription_template_id) == (ORDER_TEMPLATE, None)
    assert message.template_id_sent == ORDER_TEMPLATE


def test_an_auto_campaign_to_listed_non_followers_takes_the_subscription_or_fails_without_a_channel(
    account_a, people, no_broker, django_capture_on_commit_callbacks
):
    campaign = start(
        django_capture_on_commit_callbacks,
        account_a,
        RecipientSpec.openids(people.values()),
        **AUTO,
    )
    result = outcome(campaign)
    no_channel = (Channel.SUBSCRIBE, Message.Status.FAILED, NO_CHANNEL_REASON)
    assert result == {
        people["follower_credit"]: QUEUED_TEMPLATE,
        people["follower_bare"]: QUEUED_TEMPLATE,
        people["left_credit"]: QUEUED_SUBSCRIBE,
        people["stranger_credit"]: QUEUED_SUBSCRIBE,
        people["stranger_long"]: QUEUED_SUBSCRIBE,
        people["stranger_rejected"]: no_channel,
        people["stranger_spent"]: no_channel,
        people["stranger_bare"]: no_channel,
    }
    assert campaign.recipients_with_credit == 4
    hashes = dict(Message.objects.filter(campaign=campaign).values_list("channel", "content_hash").distinct())
    assert len(hashes) == 2  # each channel says its own content


def test_auto_with_data_fitting_only_the_subscription_sends_no_template(
    account_a, people, no_broker, django_capture_on_commit_callbacks
):
    campaign = start(
        django_capture_on_commit_callbacks,
        account_a,
        RecipientSpec.openids([people["follower_bare"], people["stranger_bare"]]),
        **{**AUTO, "subscription_template_id": OTHER, "data": OTHER_DATA},
    )
    # The order template does not fit: a follower without consent to OTHER has no channel, its holder gets it.
    assert outcome(campaign) == {
        people["follower_bare"]: (Channel.SUBSCRIBE, Message.Status.FAILED, NO_CHANNEL_REASON),
        people["stranger_bare"]: QUEUED_SUBSCRIBE,
    }
    assert campaign.subscription_data is None


def test_auto_keeps_subscription_data_of_its_own(account_a, people, no_broker, django_capture_on_commit_callbacks):
    campaign = start(
        django_capture_on_commit_callbacks,
        account_a,
        RecipientSpec.openids([people["stranger_bare"], people["follower_bare"]]),
        **{**AUTO, "subscription_template_id": OTHER, "subscription_data": OTHER_DATA},
    )
    assert outcome(campaign) == {
        people["stranger_bare"]: QUEUED_SUBSCRIBE,
        people["follower_bare"]: QUEUED_TEMPLATE,
    }
    data, _link = campaign.content_for(Channel.SUBSCRIBE)
    assert set(data) == set(OTHER_DATA)


def test_everyone_holding_the_subscription_is_a_recipient_kind(
    account_a, people, no_broker, django_capture_on_commit_callbacks
):
    campaign = start(
        django_capture_on_commit_callbacks,
        account_a,
        RecipientSpec.all_with_credit(),
        **SUBSCRIBE,
    )
    holders = {people[name] for name in ("follower_credit", "left_credit", "stranger_credit", "stranger_long")}
    assert outcome(campaign) == dict.fromkeys(holders, QUEUED_SUBSCRIBE)
    assert (campaign.recipient_count, campaign.recipients_with_credit) == (4, 4)
    follower_ids = dict(Message.objects.filter(campaign=campaign).values_list("touser", "follower_id"))
    assert follower_ids[people["stranger_credit"]] is None
    assert follower_ids[people["follower_credit"]] == Follower.objects.get(openid=people["follower_credit"]).pk


def test_a_template_campaign_is_unchanged(account_a, people, no_broker, django_capture_on_commit_callbacks):
    campaign = start(
        django_capture_on_commit_callbacks,
        account_a,
        RecipientSpec.openids([people["follower_bare"], people["left_credit"]]),
        template_id=ORDER_TEMPLATE,
        data=ORDER_DATA,
    )
    assert campaign.channel == Channel.TEMPLATE and campaign.recipients_with_credit is None
    result = outcome(campaign)
    assert result[people["follower_bare"]] == QUEUED_TEMPLATE
    assert result[people["left_credit"]][:2] == (Channel.TEMPLATE, Message.Status.FAILED)


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"channel": Channel.SUBSCRIBE, "data": ORDER_DATA}, {"subscription_template_id"}),
        (
            {
                "channel": Channel.SUBSCRIBE,
                "subscription_template_id": SHIPPED,
                "data": ORDER_DATA,
                "url": "https://a.example.com",
            },
            {"url"},
        ),
        (
            {
                "channel": Channel.SUBSCRIBE,
                "subscription_template_id": SHIPPED,
                "template_id": ORDER_TEMPLATE,
                "data": ORDER_DATA,
            },
            {"template_id"},
        ),
        ({"channel": Channel.SUBSCRIBE, "subscription_template_id": SHIPPED, "data": OTHER_DATA}, {"data"}),
        (
            {"channel": Channel.SUBSCRIBE, "subscription_template_id": SHIPPED, "data": ORDER_DATA, "page": "ftp://x"},
            {"page"},
        ),
        (
            {
                "channel": Channel.TEMPLATE,
                "template_id": ORDER_TEMPLATE,
                "data": ORDER_DATA,
                "page": "https://a.example.com",
            },
            {"page"},
        ),
        (
            {"template_id": ORDER_TEMPLATE, "data": ORDER_DATA, "subscription_template_id": SHIPPED},
            {"subscription_template_id"},
        ),
        (
            {
                "channel": Channel.AUTO,
                "template_id": ORDER_TEMPLATE,
                "subscription_template_id": OTHER,
                "data": {"nope": "x"},
            },
            {"data", "subscription_data"},
        ),
        (
            {
                "channel": Channel.AUTO,
                "template_id": ORDER_TEMPLATE,
                "subscription_template_id": OTHER,
                "data": ORDER_DATA,
                "subscription_data": ORDER_DATA,
            },
            {"subscription_data"},
        ),
        ({"channel": "fax", "data": ORDER_DATA}, {"channel"}),
    ],
)
def test_bad_combinations_are_field_errors(account_a, people, no_broker, fields, errors):
    with pytest.raises(MessageRejected) as rejected:
        create_campaign(account=account_a, recipients=RecipientSpec.openids([people["stranger_credit"]]), **fields)
    assert set(rejected.value.errors) == errors
    assert not Campaign.objects.exists()


def test_everyone_holding_is_refused_on_channel_template(account_a, people, no_broker):
    with pytest.raises(MessageRejected) as rejected:
        create_campaign(
            account=account_a, recipients=RecipientSpec.all_with_credit(), template_id=ORDER_TEMPLATE, data=ORDER_DATA
        )
    assert set(rejected.value.errors) == {"recipients"}


def test_approval_holds_a_subscribe_campaign_back(
    account_a, people, staff_a, django_user_model, no_broker, django_capture_on_commit_callbacks
):
    ApprovalPolicy.objects.create(account=account_a, recipient_threshold=1)
    campaign = start(
        django_capture_on_commit_callbacks,
        account_a,
        RecipientSpec.openids([people["stranger_credit"], people["stranger_long"]]),
        **SUBSCRIBE,
        created_by=staff_a,
    )
    assert campaign.state == Campaign.State.PENDING_APPROVAL
    assert not no_broker
    assert Message.objects.filter(campaign=campaign, status=Message.Status.QUEUED).count() == 2
    with django_capture_on_commit_callbacks(execute=True):
        approve_campaign(campaign, by=make_admin(django_user_model, "boss"))
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.RUNNING
    assert no_broker


# --- The API ------------------------------------------------------------------------------------------------------


def test_the_api_starts_a_subscribe_campaign_and_shows_the_credit_count(
    api_a, account_a, people, no_broker, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = api_a.post(
            "/api/v1/campaigns/",
            {
                "account": account_a.appid,
                "channel": "subscribe",
                "subscription_template_id": SHIPPED,
                "data": ORDER_DATA,
                "page": "https://shop.example.com/o",
                "recipients": {"openids": [people["stranger_credit"], people["stranger_bare"]]},
            },
            format="json",
        )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["channel"] == "subscribe"
    assert body["template_id"] is None
    assert body["subscription_template_id"] == SHIPPED
    assert body["page"] == "https://shop.example.com/o"
    assert (body["recipient_count"], body["recipients_with_credit"]) == (2, 1)
    assert body["counts"]["failed"] == 1
    detail = api_a.get(f"/api/v1/campaigns/{body['id']}/").json()
    assert detail["recipients_with_credit"] == 1
    listed = api_a.get("/api/v1/campaigns/", {"channel": "subscribe"}).json()
    assert [campaign["id"] for campaign in listed["results"]] == [body["id"]]
    assert listed["results"][0]["subscription_template_id"] == SHIPPED
    assert api_a.get("/api/v1/campaigns/", {"channel": "template"}).json()["results"] == []


def test_the_api_answers_field_errors(api_a, account_a, people, no_broker):
    base = {"account": account_a.appid, "data": ORDER_DATA, "recipients": {"all_with_credit": True}}
    missing = api_a.post("/api/v1/campaigns/", {**base, "channel": "auto"}, format="json")
    assert missing.status_code == 400
    assert set(missing.json()["errors"]) == {"template_id", "subscription_template_id"}
    on_template = api_a.post("/api/v1/campaigns/", {**base, "template_id": ORDER_TEMPLATE}, format="json")
    assert on_template.status_code == 400
    assert set(on_template.json()["errors"]) == {"recipients"}
    both = api_a.post(
        "/api/v1/campaigns/",
        {**base, "recipients": {"all_with_credit": True, "all_subscribed": True}},
        format="json",
    )
    assert both.status_code == 400


def test_the_admin_shows_the_channel_subscription_template_and_credit_count(
    account_a, people, django_user_model, no_broker, django_capture_on_commit_callbacks
):
    campaign = start(
        django_capture_on_commit_callbacks,
        account_a,
        RecipientSpec.openids([people["stranger_credit"]]),
        **SUBSCRIBE,
    )
    boss = django_user_model.objects.create_superuser("root", password="pw-root")
    page = english_client(boss).get(f"/admin/messaging/campaign/{campaign.pk}/change/").content.decode()
    assert "subscription notification" in page
    assert "订单发货提醒" in page
    assert "recipients holding a subscription" in page.lower()
    listed = english_client(boss).get("/admin/messaging/campaign/", {"channel__exact": "subscribe"}).content.decode()
    assert f"/admin/messaging/campaign/{campaign.pk}/change/" in listed


def test_a_scheduled_subscribe_campaign_keeps_its_holders_scheduled(
    account_a, people, no_broker, django_capture_on_commit_callbacks
):
    campaign = start(
        django_capture_on_commit_callbacks,
        account_a,
        RecipientSpec.openids([people["stranger_credit"], people["stranger_bare"]]),
        **SUBSCRIBE,
        send_at=timezone.now() + timedelta(hours=2),
    )
    assert campaign.state == Campaign.State.SCHEDULED
    assert outcome(campaign) == {
        people["stranger_credit"]: (Channel.SUBSCRIBE, Message.Status.SCHEDULED, ""),
        people["stranger_bare"]: (Channel.SUBSCRIBE, Message.Status.FAILED, CONSENT_NO_CREDIT_REASON),
    }


def test_the_duplicate_window_compares_each_channel_with_its_own_content(
    account_a, people, no_broker, django_capture_on_commit_callbacks
):
    account_a.duplicate_window_minutes = 60
    account_a.save()
    recipients = [people["follower_bare"], people["stranger_long"]]
    start(django_capture_on_commit_callbacks, account_a, RecipientSpec.openids(recipients), **AUTO)
    again = start(django_capture_on_commit_callbacks, account_a, RecipientSpec.openids(recipients), **AUTO)
    result = outcome(again)
    assert result[people["follower_bare"]][:2] == (Channel.TEMPLATE, Message.Status.FAILED)
    assert result[people["stranger_long"]][:2] == (Channel.SUBSCRIBE, Message.Status.FAILED)


def test_a_single_notification_and_a_campaign_with_the_same_content_are_duplicates_of_each_other(
    account_a, people, no_broker, django_capture_on_commit_callbacks
):
    """One hash for one content on one channel, whether a single send or a campaign wrote the message."""
    from messaging.reasons import DUPLICATE_REASON
    from messaging.services import send_message

    account_a.duplicate_window_minutes = 60
    account_a.save()
    with django_capture_on_commit_callbacks(execute=True):
        single = send_message(
            account=account_a,
            touser=people["stranger_long"],
            template_id="",
            **SUBSCRIBE,
        ).message
    again = start(
        django_capture_on_commit_callbacks, account_a, RecipientSpec.openids([people["stranger_long"]]), **SUBSCRIBE
    )
    duplicate = Message.objects.get(campaign=again)
    assert duplicate.content_hash == single.content_hash
    assert (duplicate.status, duplicate.errmsg) == (Message.Status.FAILED, DUPLICATE_REASON)
