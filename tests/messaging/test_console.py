"""The staff send console (/console/) through Django's test client: access, per-account boundaries, the JSON
endpoints (validation, recipient count, follower search, progress), preview, send, cancel, retry and history.

Sends go to the sandbox WeChat server; tasks run inline in tests, so a campaign is finished when the send
request returns.  Pages are asked for in English so assertions hold whatever translations ship; one test checks
the Chinese UI.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.utils import timezone

from accounts.models import Follower, OfficialAccount
from accounts.selectors import ADMINS_GROUP
from messaging import services
from messaging.models import Campaign, Message
from sandbox.demo import DEMO_APPID
from tests.factories import ORDER_DATA, ORDER_TEMPLATE, OTHER_APPID, english_client
from wxnotify.wechat.errors import describe_errcode

TOO_LONG_THING = "超长的商品名称" * 3  # 21 characters: one over the thing limit of 20

# Sending tests run in autocommit like production: delivery is queued on commit and has run (inline) when the
# response comes back.
sends = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client_a(staff_a) -> Client:
    return english_client(staff_a)


@pytest.fixture
def client_b(staff_b) -> Client:
    return english_client(staff_b)


@pytest.fixture
def followers_a(account_a, django_user_model) -> list[Follower]:
    """Four followers of A: three subscribed (the first bound to "alice", remark on the second), one who left."""
    alice = django_user_model.objects.create_user("alice")
    now = timezone.now()
    followers = [
        Follower.objects.create(account=account_a, openid=f"oFollower{index:02d}", subscribed_at=now)
        for index in range(4)
    ]
    followers[0].user = alice
    followers[0].save()
    followers[1].remark = "VIP 张三"
    followers[1].save()
    followers[3].subscribed = False
    followers[3].save()
    return followers


@pytest.fixture
def sandbox_followers_a(account_a, sandbox_api, fresh_demo_token) -> list[Follower]:
    """The first five sandbox followers of A, as followers in our database (the sandbox starts afresh)."""
    return [
        Follower.objects.create(account=account_a, openid=openid, subscribed_at=timezone.now())
        for openid in sandbox_api.followers()[:5]
    ]


def _template_pk(account: OfficialAccount, template_id: str = ORDER_TEMPLATE) -> int:
    return account.templates.get(template_id=template_id).pk


def _compose_body(account: OfficialAccount, action: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "account": account.appid,
        "template": _template_pk(account),
        "action": action,
        "name": "",
        "link_kind": "none",
        "url": "",
        "miniprogram_appid": "",
        "miniprogram_pagepath": "",
        "recipient_kind": Campaign.RecipientKind.ALL_SUBSCRIBED,
        "recipient_list": "",
        **{f"kw_{name}": value for name, value in ORDER_DATA.items()},
    }
    body.update(overrides)
    return body


def _post_json(client: Client, url: str, body: Any):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def _campaign_with_messages(account: OfficialAccount, statuses: list[str], **fields: Any) -> Campaign:
    """A campaign written straight to the database, its messages in the given statuses (no delivery runs)."""
    template = account.templates.get(template_id=ORDER_TEMPLATE)
    campaign = Campaign.objects.create(
        account=account,
        template=template,
        data={name: {"value": value} for name, value in ORDER_DATA.items()},
        recipient_kind=Campaign.RecipientKind.OPENIDS,
        recipient_count=len(statuses),
        state=fields.pop("state", Campaign.State.RUNNING),
        **fields,
    )
    for index, status in enumerate(statuses):
        Message.objects.create(
            account=account,
            template=template,
            template_id_sent=template.template_id,
            touser=f"oRecipient{index:03d}",
            client_msg_id=f"c{campaign.pk}-{index}",
            campaign=campaign,
            status=status,
            errcode=43004 if status == Message.Status.FAILED else None,
        )
    return campaign


# --- Access -------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/console/", "/console/history/", "/console/campaigns/1/"])
def test_anonymous_visitors_are_sent_to_the_console_login(path):
    response = english_client().get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/console/login/?next=")


@pytest.mark.django_db
def test_users_outside_the_groups_get_403(django_user_model, account_a):
    campaign = _campaign_with_messages(account_a, [Message.Status.SENT])
    client = english_client(django_user_model.objects.create_user("nobody"))
    for path in ("/console/", "/console/history/", f"/console/campaigns/{campaign.pk}/"):
        assert client.get(path).status_code == 403, path
    assert _post_json(client, "/console/validate/", {}).status_code == 403
    assert client.post(f"/console/campaigns/{campaign.pk}/cancel/").status_code == 403


@pytest.mark.django_db
def test_wxnotify_admins_see_every_account(django_user_model, account_a, account_b):
    admin = django_user_model.objects.create_user("ops")
    admin.groups.add(Group.objects.get(name=ADMINS_GROUP))
    page = english_client(admin).get("/console/").content.decode()
    assert DEMO_APPID in page
    assert OTHER_APPID in page


@pytest.mark.django_db
def test_business_staff_sign_in_on_the_console_login_page(staff_a):
    client = english_client()
    page = client.get("/console/login/")
    assert page.status_code == 200
    assert b'name="csrfmiddlewaretoken"' in page.content
    response = client.post("/console/login/", {"username": "staff_a", "password": "pw-staff_a"})
    assert response.status_code == 302
    assert response["Location"] == "/console/"
    assert client.get("/console/").status_code == 200


@pytest.mark.django_db
def test_the_console_login_refuses_a_wrong_password(staff_a):
    response = english_client().post("/console/login/", {"username": "staff_a", "password": "wrong"})
    assert response.status_code == 200
    assert b'role="alert"' in response.content


@pytest.mark.django_db
def test_logout_is_a_post_and_ends_the_session(client_a):
    response = client_a.post("/console/logout/")
    assert response.status_code == 302
    assert client_a.get("/console/").status_code == 302


# --- Compose ------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_compose_offers_only_the_users_accounts(client_a, account_b):
    page = client_a.get("/console/").content.decode()
    assert DEMO_APPID in page
    assert OTHER_APPID not in page
    assert client_a.get("/console/", {"account": OTHER_APPID}).status_code == 404


@pytest.mark.django_db
def test_a_template_of_another_account_is_404(client_a, account_b):
    response = client_a.get("/console/", {"account": DEMO_APPID, "template": _template_pk(account_b)})
    assert response.status_code == 404


@pytest.mark.django_db
def test_compose_shows_one_labelled_input_per_keyword_with_type_and_limit(client_a, account_a):
    response = client_a.get("/console/", {"account": DEMO_APPID, "template": _template_pk(account_a)})
    assert response.status_code == 200
    page = response.content.decode()
    template = account_a.templates.get(template_id=ORDER_TEMPLATE)
    assert template.content in page
    for name in ORDER_DATA:
        assert f'id="id_kw_{name}"' in page
        assert f'<label for="id_kw_{name}">' in page
    assert "商品名称" in page
    assert 'thing2 · <span title="thing">thing</span>' in page
    assert 'character_string1 · <span title="character_string">character string</span>' in page
    assert 'data-max-length="20"' in page
    assert "0 / 20 characters" in page
    rules = json.loads(page.split('id="console-strings" type="application/json">')[1].split("</script>")[0])
    assert rules["counter"] == "%(count)s / %(limit)s characters"


@pytest.mark.django_db
def test_compose_needs_the_send_permission(django_user_model, account_a):
    viewer = django_user_model.objects.create_user("viewer")
    viewer.user_permissions.add(Permission.objects.get(codename="view_campaign"))
    client = english_client(viewer)
    assert client.get("/console/").status_code == 403
    assert client.get("/console/history/").status_code == 200


# --- Validation endpoint ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_validation_endpoint_reports_an_over_long_value(client_a, account_a):
    data = {**ORDER_DATA, "thing2": TOO_LONG_THING}
    response = _post_json(
        client_a, "/console/validate/", {"account": DEMO_APPID, "template": _template_pk(account_a), "data": data}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["valid"] is False
    assert body["errors"] == {"thing2": ["At most 20 characters (this has 21)."]}


@pytest.mark.django_db
def test_validation_endpoint_accepts_valid_values_and_reports_missing_ones(client_a, account_a):
    url, template = "/console/validate/", _template_pk(account_a)
    valid = _post_json(client_a, url, {"account": DEMO_APPID, "template": template, "data": ORDER_DATA}).json()
    assert valid == {"valid": True, "errors": {}, "warnings": {}}
    partial = _post_json(client_a, url, {"account": DEMO_APPID, "template": template, "data": {"thing2": "键盘"}})
    assert set(partial.json()["errors"]) == {"character_string1", "time3", "amount4"}


@pytest.mark.django_db
def test_validation_endpoint_keeps_to_the_users_accounts(client_a, account_b):
    response = _post_json(
        client_a, "/console/validate/", {"account": OTHER_APPID, "template": _template_pk(account_b), "data": {}}
    )
    assert response.status_code == 404


@pytest.mark.django_db
def test_validation_endpoint_refuses_what_is_not_json(client_a):
    response = client_a.post("/console/validate/", data="not json", content_type="application/json")
    assert response.status_code == 400
    assert client_a.get("/console/validate/").status_code == 405


@pytest.mark.django_db
def test_validation_endpoint_needs_the_csrf_token(staff_a, account_a):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_a)
    body = {"account": DEMO_APPID, "template": _template_pk(account_a), "data": ORDER_DATA}
    assert _post_json(client, "/console/validate/", body).status_code == 403


# --- Recipients: count and search ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_count_of_all_subscribed_followers(client_a, followers_a):
    body = _post_json(client_a, "/console/recipients/count/", {"account": DEMO_APPID, "kind": "all_subscribed"}).json()
    assert body["count"] == 3
    assert body["unsubscribed"] == 0


@pytest.mark.django_db
def test_count_of_a_pasted_openid_list(client_a, followers_a):
    pasted = "oFollower00\noFollower01, oFollower00；oFollower03  oStranger"
    body = _post_json(
        client_a, "/console/recipients/count/", {"account": DEMO_APPID, "kind": "openids", "list": pasted}
    ).json()
    assert body["count"] == 4  # the repeated openid is sent once
    assert body["unsubscribed"] == 1
    assert body["unknown"] == {"shown": ["oStranger"], "total": 1}


@pytest.mark.django_db
def test_count_of_a_pasted_username_list(client_a, followers_a):
    body = _post_json(
        client_a, "/console/recipients/count/", {"account": DEMO_APPID, "kind": "usernames", "list": "alice\nbob"}
    ).json()
    assert body["count"] == 1
    assert body["unbound"] == {"shown": ["bob"], "total": 1}


@pytest.mark.django_db
def test_count_matches_what_create_campaign_creates(client_a, followers_a, account_a):
    pasted = "oFollower00 oFollower01 oFollower00 oFollower03 oStranger"
    counted = _post_json(
        client_a, "/console/recipients/count/", {"account": DEMO_APPID, "kind": "openids", "list": pasted}
    ).json()["count"]
    campaign = services.create_campaign(
        account=account_a,
        template_id=ORDER_TEMPLATE,
        data=ORDER_DATA,
        recipients=services.RecipientSpec.openids(pasted.split()),
    )
    assert campaign.recipient_count == counted


@pytest.mark.django_db
def test_count_refuses_unknown_kinds_and_other_accounts(client_a, account_b):
    url = "/console/recipients/count/"
    assert _post_json(client_a, url, {"account": DEMO_APPID, "kind": "everyone"}).status_code == 400
    assert _post_json(client_a, url, {"account": OTHER_APPID, "kind": "all_subscribed"}).status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "expected"),
    [("follower01", ["oFollower01"]), ("张三", ["oFollower01"]), ("ALI", ["oFollower00"])],
)
def test_follower_search_by_openid_remark_or_username(client_a, followers_a, query, expected):
    response = client_a.get("/console/followers/", {"account": DEMO_APPID, "q": query})
    assert response.status_code == 200
    assert [row["openid"] for row in response.json()["results"]] == expected


@pytest.mark.django_db
def test_follower_search_lists_subscribed_first_with_bound_usernames(client_a, followers_a):
    results = client_a.get("/console/followers/", {"account": DEMO_APPID, "q": ""}).json()["results"]
    assert [row["openid"] for row in results] == ["oFollower00", "oFollower01", "oFollower02", "oFollower03"]
    assert results[0]["username"] == "alice"
    assert results[-1]["subscribed"] is False


@pytest.mark.django_db
def test_follower_search_keeps_to_the_users_accounts(client_b, followers_a):
    assert client_b.get("/console/followers/", {"account": DEMO_APPID, "q": "o"}).status_code == 404


# --- Preview and send ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_preview_renders_the_phone_card_and_sends_nothing(client_a, account_a):
    body = _compose_body(account_a, "preview", link_kind="url", url="https://example.com/orders/1")
    response = client_a.post("/console/", body)
    assert response.status_code == 200
    card = response.content.decode().split('data-testid="preview-card"')[1].split("</article>")[0]
    assert "订单发货通知" in card
    assert '<span class="card-label">商品名称</span><span class="card-value">机械键盘</span>' in card
    assert '<span class="card-label">订单金额</span><span class="card-value">¥399.00</span>' in card
    assert "详情" in card
    assert not Campaign.objects.exists()


@pytest.mark.django_db
def test_preview_without_a_link_has_no_details_row(client_a, account_a):
    response = client_a.post("/console/", _compose_body(account_a, "preview"))
    card = response.content.decode().split('data-testid="preview-card"')[1].split("</article>")[0]
    assert "详情" not in card


@pytest.mark.django_db
def test_preview_shows_what_was_typed_and_the_validators_error(client_a, account_a):
    response = client_a.post("/console/", _compose_body(account_a, "preview", kw_thing2=TOO_LONG_THING))
    page = response.content.decode()
    assert TOO_LONG_THING in page.split('data-testid="preview-card"')[1]
    assert "At most 20 characters (this has 21)." in page
    assert "21 / 20 characters" in page


@pytest.mark.django_db
def test_send_with_an_invalid_value_is_refused_with_the_field_error(client_a, account_a, followers_a):
    response = client_a.post("/console/", _compose_body(account_a, "send", kw_thing2=TOO_LONG_THING))
    assert response.status_code == 200
    assert "At most 20 characters (this has 21)." in response.content.decode()
    assert not Campaign.objects.exists()


@pytest.mark.django_db
def test_send_checks_the_link_of_the_chosen_kind(client_a, account_a, followers_a):
    response = client_a.post("/console/", _compose_body(account_a, "send", link_kind="url", url="ftp://example.com"))
    assert "Enter a valid http:// or https:// URL." in response.content.decode()
    response = client_a.post("/console/", _compose_body(account_a, "send", link_kind="miniprogram"))
    assert "Enter the mini-program&#x27;s AppID" in response.content.decode()
    assert not Campaign.objects.exists()


@pytest.mark.django_db
def test_send_to_unbound_usernames_shows_the_services_error(client_a, account_a, followers_a):
    body = _compose_body(account_a, "send", recipient_kind="usernames", recipient_list="alice\nnobody")
    response = client_a.post("/console/", body)
    assert response.status_code == 200
    assert "These users have not bound their WeChat to this account: nobody." in response.content.decode()
    assert not Campaign.objects.exists()


@pytest.mark.django_db
def test_send_with_an_empty_list_asks_for_recipients(client_a, account_a):
    response = client_a.post("/console/", _compose_body(account_a, "send", recipient_kind="openids"))
    assert "Paste at least one openid or username" in response.content.decode()


@pytest.mark.django_db
def test_send_to_another_accounts_template_is_404(client_a, account_b):
    body = {**_compose_body(account_b, "send"), "account": DEMO_APPID}
    assert client_a.post("/console/", body).status_code == 404
    assert not Campaign.objects.exists()


@sends
def test_send_creates_a_campaign_delivered_through_the_sandbox(client_a, account_a, sandbox_followers_a, sandbox_api):
    body = _compose_body(
        account_a,
        "send",
        name="Shipping notice",
        link_kind="miniprogram",
        miniprogram_appid="wx0123456789abcdef",
        miniprogram_pagepath="pages/order?id=1",
    )
    response = client_a.post("/console/", body)
    campaign = Campaign.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/console/campaigns/{campaign.pk}/"
    assert campaign.name == "Shipping notice"
    assert campaign.created_by.username == "staff_a"
    assert campaign.miniprogram == {"appid": "wx0123456789abcdef", "pagepath": "pages/order?id=1"}
    assert campaign.data == {name: {"value": value} for name, value in ORDER_DATA.items()}
    assert campaign.recipient_count == 5
    delivered = sandbox_api.messages(DEMO_APPID)
    assert sorted(message["touser"] for message in delivered) == sorted(f.openid for f in sandbox_followers_a)
    assert delivered[0]["data"]["thing2"]["value"] == "机械键盘"

    page = client_a.get(response["Location"])
    assert page.status_code == 200
    assert "Campaign accepted: 5 message(s) queued." in page.content.decode()
    progress = client_a.get(f"/console/campaigns/{campaign.pk}/progress/").json()
    assert progress["percent"] == 100.0
    assert progress["finished"] is True
    assert progress["counts"]["sent"] == Message.objects.filter(campaign=campaign, status="sent").count() == 5


@sends
def test_send_to_a_pasted_list_reaches_exactly_those_followers(client_a, account_a, sandbox_followers_a, sandbox_api):
    chosen = [follower.openid for follower in sandbox_followers_a[:2]]
    body = _compose_body(account_a, "send", recipient_kind="openids", recipient_list="\n".join(chosen))
    assert client_a.post("/console/", body).status_code == 302
    assert sorted(message["touser"] for message in sandbox_api.messages(DEMO_APPID)) == sorted(chosen)


# --- Campaign page, progress, cancel, retry -----------------------------------------------------------------------


@pytest.mark.django_db
def test_campaign_page_shows_progress_counts_and_failures_in_words(client_a, account_a):
    statuses = [Message.Status.SENT, Message.Status.DELIVERED, Message.Status.QUEUED, Message.Status.FAILED]
    campaign = _campaign_with_messages(account_a, statuses)
    page = client_a.get(f"/console/campaigns/{campaign.pk}/").content.decode()
    assert 'aria-valuenow="75"' in page
    assert 'style="width: 75%"' in page
    assert f"43004: {describe_errcode(43004)}" in page
    assert 'data-finished="false"' in page
    assert 'id="cancel-form"' in page


@pytest.mark.django_db
def test_progress_json_matches_the_database(client_a, account_a):
    statuses = [Message.Status.SENT, Message.Status.SENT, Message.Status.SENDING, Message.Status.FAILED]
    campaign = _campaign_with_messages(account_a, statuses)
    body = client_a.get(f"/console/campaigns/{campaign.pk}/progress/").json()
    assert body["counts"] == {"scheduled": 0, "queued": 0, "sending": 1, "sent": 2, "delivered": 0, "failed": 1}
    assert body["total"] == 4
    assert body["done"] == 3
    assert body["percent"] == 75.0
    assert body["finished"] is False
    assert body["can_retry"] is True
    assert body["failures"] == [
        {
            "id": campaign.messages.get(status="failed").pk,
            "touser": "oRecipient003",
            "errcode": 43004,
            "reason": f"43004: {describe_errcode(43004)}",
        }
    ]


@pytest.mark.django_db
def test_progress_of_a_finished_campaign_says_finished(client_a, account_a):
    campaign = _campaign_with_messages(account_a, [Message.Status.SENT] * 3, state=Campaign.State.DONE)
    body = client_a.get(f"/console/campaigns/{campaign.pk}/progress/").json()
    assert body["finished"] is True
    assert body["percent"] == 100.0
    assert body["can_cancel"] is False
    assert body["can_retry"] is False


@pytest.mark.django_db
def test_progress_keeps_polling_until_the_pipeline_marks_the_campaign_done(client_a, account_a):
    campaign = _campaign_with_messages(account_a, [Message.Status.SENT, Message.Status.DELIVERED])
    url = f"/console/campaigns/{campaign.pk}/progress/"
    assert client_a.get(url).json()["finished"] is False
    services.finish_campaigns([campaign.pk])
    body = client_a.get(url).json()
    assert (body["finished"], body["state"], body["state_label"]) == (True, "done", "Done")


@pytest.mark.django_db
def test_another_accounts_campaign_is_404_everywhere(client_b, account_a):
    campaign = _campaign_with_messages(account_a, [Message.Status.QUEUED, Message.Status.FAILED])
    for path in (f"/console/campaigns/{campaign.pk}/", f"/console/campaigns/{campaign.pk}/progress/"):
        assert client_b.get(path).status_code == 404, path
    assert client_b.post(f"/console/campaigns/{campaign.pk}/cancel/").status_code == 404
    assert client_b.post(f"/console/campaigns/{campaign.pk}/retry-failed/").status_code == 404
    assert campaign.messages.filter(status="queued").count() == 1


@pytest.mark.django_db
def test_cancel_fails_the_queued_messages(client_a, account_a):
    campaign = _campaign_with_messages(account_a, [Message.Status.QUEUED, Message.Status.QUEUED, Message.Status.SENT])
    assert client_a.get(f"/console/campaigns/{campaign.pk}/cancel/").status_code == 405
    response = client_a.post(f"/console/campaigns/{campaign.pk}/cancel/", follow=True)
    assert response.redirect_chain == [(f"/console/campaigns/{campaign.pk}/", 302)]
    assert "Campaign cancelled: 2 queued message(s) will not be sent." in response.content.decode()
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.CANCELLED
    assert campaign.messages.filter(status="failed", errmsg=services.CANCELLED_REASON).count() == 2
    progress = client_a.get(f"/console/campaigns/{campaign.pk}/progress/").json()
    assert progress["finished"] is True
    assert progress["can_retry"] is False


@pytest.mark.django_db
def test_cancel_needs_the_csrf_token(staff_a, account_a):
    campaign = _campaign_with_messages(account_a, [Message.Status.QUEUED])
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_a)
    assert client.post(f"/console/campaigns/{campaign.pk}/cancel/").status_code == 403
    assert campaign.messages.get().status == Message.Status.QUEUED


@pytest.mark.django_db
def test_retry_failed_queues_them_again(client_a, account_a):
    campaign = _campaign_with_messages(
        account_a, [Message.Status.FAILED, Message.Status.FAILED, Message.Status.SENT], state=Campaign.State.DONE
    )
    response = client_a.post(f"/console/campaigns/{campaign.pk}/retry-failed/", follow=True)
    assert "2 failed message(s) queued again." in response.content.decode()
    assert campaign.messages.filter(status="queued", errcode__isnull=True).count() == 2
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.RUNNING


@pytest.mark.django_db
def test_retry_of_a_cancelled_campaign_is_refused(client_a, account_a):
    campaign = _campaign_with_messages(account_a, [Message.Status.FAILED], state=Campaign.State.CANCELLED)
    response = client_a.post(f"/console/campaigns/{campaign.pk}/retry-failed/", follow=True)
    assert "A cancelled campaign is not retried." in response.content.decode()
    assert campaign.messages.get().status == Message.Status.FAILED


@sends
def test_retry_failed_resends_through_the_sandbox(client_a, account_a, sandbox_followers_a, sandbox_api):
    campaign = _campaign_with_messages(account_a, [], state=Campaign.State.DONE)
    follower = sandbox_followers_a[0]
    Message.objects.create(
        account=account_a,
        template=campaign.template,
        template_id_sent=ORDER_TEMPLATE,
        touser=follower.openid,
        follower=follower,
        client_msg_id=f"c{campaign.pk}-retry",
        campaign=campaign,
        status=Message.Status.FAILED,
        errcode=45009,
    )
    client_a.post(f"/console/campaigns/{campaign.pk}/retry-failed/")
    assert [message["touser"] for message in sandbox_api.messages(DEMO_APPID)] == [follower.openid]
    assert client_a.get(f"/console/campaigns/{campaign.pk}/progress/").json()["counts"]["sent"] == 1


# --- History ------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_history_lists_only_the_users_campaigns(client_a, account_a, account_b):
    mine = _campaign_with_messages(account_a, [Message.Status.SENT], name="Mine")
    theirs = _campaign_with_messages(account_b, [Message.Status.SENT], name="Theirs")
    page = client_a.get("/console/history/").content.decode()
    assert f"/console/campaigns/{mine.pk}/" in page
    assert f"/console/campaigns/{theirs.pk}/" not in page
    assert "Theirs" not in page


@pytest.mark.django_db
def test_history_filters_campaigns_by_state_and_date(client_a, account_a):
    done = _campaign_with_messages(account_a, [Message.Status.SENT], name="Done one", state=Campaign.State.DONE)
    running = _campaign_with_messages(account_a, [Message.Status.QUEUED], name="Running one")
    old = _campaign_with_messages(account_a, [Message.Status.SENT], name="Old one", state=Campaign.State.DONE)
    Campaign.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=30))

    by_state = client_a.get("/console/history/", {"state": "done"}).content.decode()
    assert "Done one" in by_state
    assert "Old one" in by_state
    assert "Running one" not in by_state
    since = (timezone.localdate() - timedelta(days=1)).isoformat()
    by_date = client_a.get("/console/history/", {"date_from": since}).content.decode()
    assert "Done one" in by_date
    assert "Running one" in by_date
    assert "Old one" not in by_date
    assert running.pk != done.pk


@pytest.mark.django_db
def test_history_filters_messages_by_account_and_status(client_a, account_a, django_user_model, account_b):
    _campaign_with_messages(account_a, [Message.Status.SENT, Message.Status.FAILED])
    failed = client_a.get("/console/history/", {"view": "messages", "status": "failed"}).content.decode()
    assert "oRecipient001" in failed
    assert "oRecipient000" not in failed
    assert f"43004: {describe_errcode(43004)}" in failed
    assert client_a.get("/console/history/", {"view": "messages", "account": OTHER_APPID}).status_code == 200
    other = client_a.get("/console/history/", {"view": "messages", "account": OTHER_APPID}).context["rows"]
    assert len(other) == 2  # an account the user may not use is not a valid filter: nothing is filtered away


@pytest.mark.django_db
def test_history_is_paginated(client_a, account_a):
    _campaign_with_messages(account_a, [Message.Status.SENT] * 25)
    first = client_a.get("/console/history/", {"view": "messages", "status": "sent"})
    assert len(first.context["rows"]) == 20
    assert "Page 1 of 2" in first.content.decode()
    assert "page=2" in first.content.decode()
    second = client_a.get("/console/history/", {"view": "messages", "status": "sent", "page": 2})
    assert len(second.context["rows"]) == 5


# --- Languages ----------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_console_speaks_chinese_by_default_and_english_on_request(staff_a, account_a):
    client = Client()
    client.force_login(staff_a)
    page = client.get("/console/", {"template": _template_pk(account_a)}).content.decode()
    assert '<html lang="zh-hans">' in page
    assert "发送" in page
    assert "0 / 20 个字符" in page
    assert 'thing2 · <span title="thing">事物</span>' in page
    assert 'character_string1 · <span title="character_string">字符串</span>' in page
    response = client.post("/i18n/setlang/", {"language": "en", "next": "/console/"})
    assert response.status_code == 302
    english = client.get("/console/", {"template": _template_pk(account_a)}).content.decode()
    assert '<html lang="en">' in english
    assert "Send a template message" in english


@pytest.mark.django_db
def test_the_chinese_console_keeps_its_own_words_where_earlier_apps_translate_the_same_english(staff_a, account_a):
    """The admin, DRF and django_q come first in INSTALLED_APPS and translate Filter, Created, History, Log out,
    Failures and Add their own way (过滤器, 已创建, 历史, 注销, 失败, 增加); the console's strings carry a context."""
    client = Client()
    client.force_login(staff_a)
    campaign = _campaign_with_messages(account_a, [Message.Status.FAILED])

    history = client.get("/console/history/").content.decode()
    assert '<html lang="zh-hans">' in history
    assert 'aria-label="筛选"' in history
    assert ">筛选</button>" in history
    assert "过滤器" not in history
    assert ">创建时间</th>" in history
    assert "已创建" not in history
    assert ">历史记录</a>" in history
    assert ">历史<" not in history
    assert ">退出登录</button>" in history
    assert "注销" not in history

    page = client.get(f"/console/campaigns/{campaign.pk}/").content.decode()
    assert ">失败明细</h2>" in page
    assert ">失败</h2>" not in page

    compose = client.get("/console/", {"template": _template_pk(account_a)})
    assert compose.context["js_strings"]["add"] == "添加"
