"""The REST API: auth, sending, idempotency, lists, campaigns, per-account boundaries, errors and throttling.

Sends go to the sandbox WeChat server; tasks run inline in tests, so a 202 answer already carries the outcome.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.db import connection
from django.http import HttpRequest
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.models import Follower, OfficialAccount
from messaging.api.parsers import BulkJSONParser
from messaging.models import Campaign, Message
from sandbox.demo import DEMO_ACCOUNT, DEMO_APPID, DEMO_TEMPLATES
from templates_app.models import MessageTemplate
from tests.factories import ORDER_DATA, OTHER_APPID, api_client_for
from wxnotify.wechat.errors import OUTCOME_UNKNOWN_ERRCODE
from wxnotify.wechat.tokens import default_token_manager

SHIPPED = DEMO_TEMPLATES[0]["template_id"]  # character_string1, thing2, time3, amount4
TICKET = DEMO_TEMPLATES[2]["template_id"]  # thing1, character_string2, time3
SHIPPED_DATA = ORDER_DATA
MESSAGES = "/api/v1/messages/"
CAMPAIGNS = "/api/v1/campaigns/"
BIG_MSGID = 3487542469355618313  # > 2**53: JavaScript would round it

# Tests whose requests really send: delivery is queued on commit, so they run in autocommit like production and
# the (inline) task has run when the response comes back.
sends = pytest.mark.django_db(transaction=True)


def _send_body(openid: str, **overrides: Any) -> dict[str, Any]:
    return {"account": DEMO_APPID, "touser": openid, "template_id": SHIPPED, "data": SHIPPED_DATA, **overrides}


def _make_message(account: OfficialAccount, touser: str, **fields: Any) -> Message:
    template = account.templates.get(template_id=fields.pop("template_id", SHIPPED))
    fields.setdefault("client_msg_id", f"test-{Message.objects.count()}-{touser}")
    return Message.objects.create(
        account=account, template=template, template_id_sent=template.template_id, touser=touser, **fields
    )


def assert_error(response, status_code: int, code: str) -> dict[str, Any]:
    assert response.status_code == status_code, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["status"] == status_code
    assert body["code"] == code
    assert body["detail"]
    assert isinstance(body["errors"], dict)
    return body


# --- Authentication ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_requests_without_credentials_get_401_json_with_challenge(client):
    response = client.get(MESSAGES)
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.django_db
def test_wrong_token_gets_401():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert_error(client.get(MESSAGES), 401, "authentication_failed")


def test_drf_create_token_command_makes_a_working_token(staff_a):
    out = StringIO()
    call_command("drf_create_token", "staff_a", stdout=out)
    key = Token.objects.get(user=staff_a).key
    assert key in out.getvalue()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    response = client.get(MESSAGES)
    assert response.status_code == 200
    assert response.json()["results"] == []


def test_session_auth_reads_and_enforces_csrf_on_writes(staff_a, account_a):
    client = APIClient(enforce_csrf_checks=True)
    # Sign-in throttling (django-axes) needs the request an authentication comes with.
    assert client.login(request=HttpRequest(), username="staff_a", password="pw-staff_a")
    assert client.get(MESSAGES).status_code == 200
    response = client.post(MESSAGES, _send_body("oX"), format="json")
    body = assert_error(response, 403, "permission_denied")
    assert "CSRF" in body["detail"]


# --- Sending ------------------------------------------------------------------------------------------------------


@sends
def test_send_plain_values_is_accepted_and_delivered(api_a, followers_a, sandbox_api):
    openid = followers_a[1].openid
    response = api_a.post(MESSAGES, _send_body(openid), format="json", HTTP_X_REQUEST_ID="trace-send-1")

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == Message.Status.SENT
    assert body["account"] == DEMO_APPID
    assert body["touser"] == openid
    assert body["template_id"] == SHIPPED
    assert body["attempts"] == 1
    assert body["trace_id"] == "trace-send-1"
    assert response["X-Request-ID"] == "trace-send-1"
    assert body["client_msg_id"]
    delivered = sandbox_api.messages(DEMO_APPID)
    assert len(delivered) == 1
    assert body["msgid"] == str(delivered[0]["msgid"])
    assert isinstance(body["msgid"], str)
    assert delivered[0]["data"] == {key: {"value": value} for key, value in SHIPPED_DATA.items()}
    assert delivered[0]["client_msg_id"] == body["client_msg_id"]


@sends
def test_send_wechat_value_shape_with_link_and_miniprogram(api_a, followers_a, sandbox_api):
    data = {key: {"value": value} for key, value in SHIPPED_DATA.items()}
    miniprogram = {"appid": "wx1234567890abcdef", "pagepath": "pages/order?id=1"}
    response = api_a.post(
        MESSAGES,
        _send_body(followers_a[1].openid, data=data, url="https://example.com/o/1", miniprogram=miniprogram),
        format="json",
    )
    assert response.status_code == 202, response.content
    assert response.json()["status"] == Message.Status.SENT
    (delivered,) = sandbox_api.messages(DEMO_APPID)
    assert delivered["data"] == data
    assert delivered["url"] == "https://example.com/o/1"
    assert delivered["miniprogram"] == miniprogram


@sends
def test_send_to_a_user_goes_to_the_bound_follower(api_a, followers_a, sandbox_api):
    body = _send_body("", user="alice")
    del body["touser"]
    response = api_a.post(MESSAGES, body, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["touser"] == followers_a[0].openid
    assert [item["touser"] for item in sandbox_api.messages(DEMO_APPID)] == [followers_a[0].openid]


def test_send_to_an_unbound_user_is_refused_without_telling_whether_the_user_exists(
    api_a, followers_a, sandbox_api, django_user_model
):
    django_user_model.objects.create_user("bob")
    answers = []
    for username in ("bob", "nobody-by-this-name"):
        body = _send_body("", user=username)
        del body["touser"]
        answers.append(assert_error(api_a.post(MESSAGES, body, format="json"), 400, "invalid")["errors"])
    assert answers[0] == answers[1] == {"user": ["No follower of this account is bound to this user."]}
    assert sandbox_api.messages() == []


@pytest.mark.parametrize(
    ("change", "error_path"),
    [
        pytest.param({"data": {**SHIPPED_DATA, "thing2": None}}, ("data", "thing2"), id="null-value"),
        pytest.param(
            {"data": {k: v for k, v in SHIPPED_DATA.items() if k != "amount4"}}, ("data", "amount4"), id="missing"
        ),
        pytest.param({"data": {**SHIPPED_DATA, "thing2": "键" * 21}}, ("data", "thing2"), id="thing-over-20"),
        pytest.param({"data": {**SHIPPED_DATA, "thing9": "x"}}, ("data", "thing9"), id="unknown-keyword"),
        pytest.param({"data": "not an object"}, ("data",), id="data-not-object"),
        pytest.param({"url": "javascript:alert(1)"}, ("url",), id="bad-url"),
        pytest.param({"url": "not a url"}, ("url",), id="url-not-a-url"),
        pytest.param({"user": "alice"}, ("touser",), id="touser-and-user"),
        pytest.param({"touser": None}, ("touser",), id="touser-null"),
        pytest.param({"template_id": "no-such-template"}, ("template_id",), id="unknown-template"),
        pytest.param({"miniprogram": {"pagepath": "x"}}, ("miniprogram", "appid"), id="miniprogram-without-appid"),
        pytest.param({"miniprogram": {"appid": "wxmini", "pagepath": "x"}}, ("miniprogram",), id="miniprogram-appid"),
        pytest.param(
            {"miniprogram": {"appid": "wx0123456789abcdef", "pagepath": "a\x00b"}},
            ("miniprogram",),
            id="miniprogram-pagepath-nul",
        ),
        pytest.param({"url": "https://"}, ("url",), id="url-without-host"),
        pytest.param({"client_msg_id": "has space"}, ("client_msg_id",), id="client-msg-id-space"),
        pytest.param({"client_msg_id": "x" * 65}, ("client_msg_id",), id="client-msg-id-long"),
        pytest.param({"account": None}, ("account",), id="account-null"),
    ],
)
def test_invalid_sends_get_field_errors_and_send_nothing(api_a, followers_a, sandbox_api, change, error_path):
    body = {**_send_body(followers_a[1].openid), **change}
    body = {key: value for key, value in body.items() if value is not None or key == "data"}
    response = api_a.post(MESSAGES, body, format="json")
    node = assert_error(response, 400, "invalid")["errors"]
    for key in error_path:
        node = node[key]
    assert node and all(isinstance(message, str) and message for message in node)
    assert sandbox_api.messages() == []
    assert not Message.objects.exists()


def test_malformed_json_gets_400_json(api_a, account_a):
    response = api_a.post(MESSAGES, "{not json", content_type="application/json")
    assert_error(response, 400, "parse_error")


# --- Idempotency --------------------------------------------------------------------------------------------------


@sends
def test_repeated_client_msg_id_answers_the_first_message_and_sends_once(api_a, followers_a, sandbox_api):
    body = _send_body(followers_a[1].openid, client_msg_id="order-1001-shipped")
    first = api_a.post(MESSAGES, body, format="json")
    again = api_a.post(MESSAGES, body, format="json")

    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["client_msg_id"] == "order-1001-shipped"
    assert again["X-Wxnotify-Replay"] == "idempotency-key"
    assert "X-Wxnotify-Replay" not in first
    assert len(sandbox_api.messages()) == 1
    assert Message.objects.count() == 1


@sends
def test_client_msg_id_reused_with_another_body_is_422(api_a, followers_a, sandbox_api):
    body = _send_body(followers_a[1].openid, client_msg_id="order-1002")
    assert api_a.post(MESSAGES, body, format="json").status_code == 202
    changed = {**body, "data": {**SHIPPED_DATA, "thing2": "鼠标"}}
    assert_error(api_a.post(MESSAGES, changed, format="json"), 422, "idempotency_conflict")
    assert len(sandbox_api.messages()) == 1


@sends
def test_idempotency_key_header_works_like_client_msg_id(api_a, followers_a, sandbox_api):
    body = _send_body(followers_a[1].openid)
    first = api_a.post(MESSAGES, body, format="json", HTTP_IDEMPOTENCY_KEY="hdr-key-1")
    again = api_a.post(MESSAGES, body, format="json", HTTP_IDEMPOTENCY_KEY="hdr-key-1")
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["client_msg_id"] == "hdr-key-1"
    assert again.json()["id"] == first.json()["id"]
    assert len(sandbox_api.messages()) == 1

    mismatch = api_a.post(MESSAGES, {**body, "client_msg_id": "other"}, format="json", HTTP_IDEMPOTENCY_KEY="hdr-key-2")
    assert assert_error(mismatch, 400, "invalid")["errors"]["client_msg_id"]


@sends
def test_two_racing_requests_with_one_key_make_one_message(staff_a, followers_a, sandbox_api):
    body = _send_body(followers_a[1].openid, client_msg_id="race-key-1")
    barrier = threading.Barrier(2)
    responses: list[Any] = []

    def send() -> None:
        client = api_client_for(staff_a)
        barrier.wait()
        try:
            responses.append(client.post(MESSAGES, body, format="json"))
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(response.status_code for response in responses) == [200, 202]
    assert len({response.json()["id"] for response in responses}) == 1
    assert Message.objects.count() == 1
    assert len(sandbox_api.messages()) == 1


# --- Reading messages ---------------------------------------------------------------------------------------------


def test_message_detail_has_status_attempts_errors_and_msgid_as_string(api_a, account_a):
    message = _make_message(
        account_a, "oFailed", status=Message.Status.FAILED, attempts=2, errcode=43004, errmsg="require subscribe"
    )
    sent = _make_message(account_a, "oSent", status=Message.Status.SENT, attempts=1, msgid=BIG_MSGID)

    failed_body = api_a.get(f"{MESSAGES}{message.pk}/").json()
    assert failed_body["status"] == "failed"
    assert failed_body["attempts"] == 2
    assert failed_body["errcode"] == 43004
    assert failed_body["errmsg"] == "require subscribe"
    assert failed_body["error_description"] == "Recipient does not follow the account."
    assert failed_body["msgid"] is None

    response = api_a.get(f"{MESSAGES}{sent.pk}/")
    assert response.json()["msgid"] == str(BIG_MSGID)
    assert f'"msgid":"{BIG_MSGID}"' in response.content.decode()
    for field in ("created_at", "updated_at", "sent_at", "finished_at", "next_attempt_at"):
        assert field in response.json()


def test_message_list_filters(api_a, account_a):
    old = _make_message(account_a, "oAlpha", status=Message.Status.SENT)
    Message.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))
    failed = _make_message(account_a, "oBeta", status=Message.Status.FAILED)
    ticket = _make_message(account_a, "oAlpha", template_id=TICKET)
    campaign = Campaign.objects.create(
        account=account_a,
        template=ticket.template,
        data={},
        recipient_kind=Campaign.RecipientKind.OPENIDS,
        state=Campaign.State.RUNNING,
    )
    in_campaign = _make_message(account_a, "oGamma", campaign=campaign)

    def ids(**params: Any) -> set[int]:
        response = api_a.get(MESSAGES, params)
        assert response.status_code == 200, response.content
        return {item["id"] for item in response.json()["results"]}

    assert ids() == {old.pk, failed.pk, ticket.pk, in_campaign.pk}
    assert ids(status="failed") == {failed.pk}
    assert ids(status="", openid="") == {old.pk, failed.pk, ticket.pk, in_campaign.pk}
    assert ids(openid="oAlpha") == {old.pk, ticket.pk}
    assert ids(template=TICKET) == {ticket.pk}
    assert ids(account=DEMO_APPID) == {old.pk, failed.pk, ticket.pk, in_campaign.pk}
    assert ids(account=OTHER_APPID) == set()
    assert ids(campaign=campaign.pk) == {in_campaign.pk}
    yesterday = (timezone.now() - timedelta(days=1)).isoformat()
    assert ids(created_before=yesterday) == {old.pk}
    assert ids(created_after=yesterday) == {failed.pk, ticket.pk, in_campaign.pk}

    errors = assert_error(api_a.get(MESSAGES, {"status": "lost", "campaign": "x"}), 400, "invalid")["errors"]
    assert set(errors) == {"status", "campaign"}


def test_message_list_is_cursor_paginated_newest_first(api_a, account_a):
    made = [_make_message(account_a, f"oPage{index}") for index in range(5)]
    seen: list[int] = []
    url = f"{MESSAGES}?page_size=2"
    while url:
        body = api_a.get(url).json()
        assert len(body["results"]) <= 2
        seen.extend(item["id"] for item in body["results"])
        url = body["next"]
    assert seen == [message.pk for message in reversed(made)]

    capped = api_a.get(MESSAGES, {"page_size": 100_000})
    assert capped.status_code == 200


# --- Per-account boundaries and permissions -----------------------------------------------------------------------


def test_staff_of_b_cannot_see_or_send_for_a(api_a, api_b, account_a, account_b, followers_a, sandbox_api):
    message_a = _make_message(account_a, "oOnlyA", status=Message.Status.SENT)
    message_b = _make_message(account_b, "oOnlyB", status=Message.Status.SENT)

    assert [item["id"] for item in api_b.get(MESSAGES).json()["results"]] == [message_b.pk]
    assert [item["id"] for item in api_a.get(MESSAGES).json()["results"]] == [message_a.pk]
    assert api_b.get(MESSAGES, {"account": DEMO_APPID}).json()["results"] == []
    assert_error(api_b.get(f"{MESSAGES}{message_a.pk}/"), 404, "not_found")
    assert api_a.get(f"{MESSAGES}{message_a.pk}/").status_code == 200

    refused = api_b.post(MESSAGES, _send_body(followers_a[1].openid), format="json")
    errors = assert_error(refused, 400, "invalid")["errors"]
    assert errors["account"] == [f"Unknown account “{DEMO_APPID}”."]
    nonexistent = api_b.post(MESSAGES, _send_body(followers_a[1].openid, account="wx0123456789abcdef"), format="json")
    assert assert_error(nonexistent, 400, "invalid")["errors"]["account"] == ["Unknown account “wx0123456789abcdef”."]
    assert sandbox_api.messages() == []
    assert Message.objects.count() == 2


def test_user_without_group_is_forbidden(django_user_model, account_a):
    outsider = api_client_for(django_user_model.objects.create_user("outsider"))
    assert_error(outsider.get(MESSAGES), 403, "permission_denied")
    assert_error(outsider.post(MESSAGES, _send_body("oX"), format="json"), 403, "permission_denied")


def test_viewing_without_add_permission_cannot_send(
    django_user_model, account_a, followers_a, sandbox_api, staff_group
):
    staff_group.permissions.remove(*Permission.objects.filter(codename="add_message"))
    viewer = django_user_model.objects.create_user("viewer")
    viewer.groups.add(staff_group)
    account_a.operators.add(viewer)
    client = api_client_for(viewer)
    assert client.get(MESSAGES).status_code == 200
    assert_error(client.post(MESSAGES, _send_body(followers_a[1].openid), format="json"), 403, "permission_denied")
    assert sandbox_api.messages() == []


def test_superuser_sees_every_account(admin_user, account_a, account_b):
    _make_message(account_a, "oA")
    _make_message(account_b, "oB")
    assert len(api_client_for(admin_user).get(MESSAGES).json()["results"]) == 2


# --- Campaigns ----------------------------------------------------------------------------------------------------


def _campaign_body(recipients: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {
        "account": DEMO_APPID,
        "template_id": SHIPPED,
        "data": SHIPPED_DATA,
        "recipients": recipients,
        "name": "双十一发货",
        **overrides,
    }


@sends
def test_campaign_to_openids_runs_and_reports_counts(api_a, followers_a, sandbox_api):
    openids = [follower.openid for follower in followers_a[1:4]]
    response = api_a.post(CAMPAIGNS, _campaign_body({"openids": openids}), format="json")
    assert response.status_code == 202, response.content
    campaign_id = response.json()["id"]

    detail = api_a.get(f"{CAMPAIGNS}{campaign_id}/").json()
    assert detail["name"] == "双十一发货"
    assert detail["account"] == DEMO_APPID
    assert detail["recipient_kind"] == "openids"
    assert detail["recipient_count"] == 3
    assert detail["counts"] == {"scheduled": 0, "queued": 0, "sending": 0, "sent": 3, "delivered": 0, "failed": 0}
    assert detail["progress"] == 100.0
    assert detail["state"] == "done"
    assert sorted(item["touser"] for item in sandbox_api.messages()) == sorted(openids)
    listed = api_a.get(CAMPAIGNS).json()["results"]
    assert [item["id"] for item in listed] == [campaign_id]
    assert listed[0]["counts"]["sent"] == 3
    messages = api_a.get(MESSAGES, {"campaign": campaign_id}).json()["results"]
    assert len(messages) == 3


@sends
def test_campaign_to_all_subscribed_and_to_usernames(api_a, followers_a, sandbox_api):
    everyone = api_a.post(CAMPAIGNS, _campaign_body({"all_subscribed": True}), format="json")
    assert everyone.status_code == 202, everyone.content
    assert everyone.json()["recipient_kind"] == "all_subscribed"
    assert api_a.get(f"{CAMPAIGNS}{everyone.json()['id']}/").json()["counts"]["sent"] == len(followers_a)

    by_name = api_a.post(CAMPAIGNS, _campaign_body({"usernames": ["alice"]}), format="json")
    assert by_name.status_code == 202, by_name.content
    assert by_name.json()["recipient_kind"] == "usernames"
    detail = api_a.get(f"{CAMPAIGNS}{by_name.json()['id']}/").json()
    assert detail["recipient_count"] == 1
    assert sandbox_api.messages()[-1]["touser"] == followers_a[0].openid


@pytest.mark.parametrize(
    ("recipients", "error_key"),
    [
        pytest.param({}, "non_field_errors", id="none"),
        pytest.param({"openids": ["o1"], "usernames": ["alice"]}, "non_field_errors", id="two-kinds"),
        pytest.param({"openids": []}, "openids", id="empty-list"),
        pytest.param({"openids": "o1"}, "openids", id="not-a-list"),
        pytest.param({"openids": ["o1", 7]}, "openids", id="not-strings"),
        pytest.param({"all_subscribed": False}, "all_subscribed", id="all-false"),
    ],
)
def test_campaign_recipient_shapes_are_checked(api_a, account_a, recipients, error_key):
    response = api_a.post(CAMPAIGNS, _campaign_body(recipients), format="json")
    errors = assert_error(response, 400, "invalid")["errors"]
    assert errors["recipients"][error_key]
    assert not Campaign.objects.exists()


def test_campaign_bodies_may_exceed_djangos_upload_cap_up_to_their_own(api_a, account_a, monkeypatch, settings):
    """100,000 openids (about 3.3 MB) are more than DATA_UPLOAD_MAX_MEMORY_SIZE; campaign creation reads them."""
    openids = [f"o{index:027d}" for index in range(100_000)]
    body = json.dumps(_campaign_body({"openids": openids}, template_id="not-a-template"))
    assert len(body) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    response = api_a.post(CAMPAIGNS, body, content_type="application/json")
    assert set(assert_error(response, 400, "invalid")["errors"]) == {"template_id"}

    too_many = json.dumps(_campaign_body({"openids": [*openids, "o-one-more"]}))
    assert assert_error(api_a.post(CAMPAIGNS, too_many, content_type="application/json"), 400, "invalid")

    monkeypatch.setattr(BulkJSONParser, "max_bytes", 1000)
    assert_error(api_a.post(CAMPAIGNS, body, content_type="application/json"), 413, "request_too_large")


def test_other_bodies_over_djangos_upload_cap_get_413_json(api_a, account_a, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = _send_body("oX", data={"thing2": "x" * 2000})
    assert_error(api_a.post(MESSAGES, body, format="json"), 413, "request_too_large")


def test_campaign_data_errors_are_per_keyword(api_a, account_a):
    body = _campaign_body({"openids": ["o1"]}, data={**SHIPPED_DATA, "thing2": "键" * 21})
    errors = assert_error(api_a.post(CAMPAIGNS, body, format="json"), 400, "invalid")["errors"]
    assert errors["data"]["thing2"]


def test_cancel_campaign_fails_queued_messages(api_a, account_a):
    template = account_a.templates.get(template_id=SHIPPED)
    campaign = Campaign.objects.create(
        account=account_a,
        template=template,
        data={key: {"value": value} for key, value in SHIPPED_DATA.items()},
        recipient_kind=Campaign.RecipientKind.OPENIDS,
        recipient_count=2,
        state=Campaign.State.RUNNING,
    )
    for openid in ("oQ1", "oQ2"):
        _make_message(account_a, openid, campaign=campaign, data=None)

    response = api_a.post(f"{CAMPAIGNS}{campaign.pk}/cancel/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["state"] == "cancelled"
    assert body["counts"]["failed"] == 2
    assert body["counts"]["queued"] == 0
    assert body["progress"] == 100.0
    assert body["cancelled_at"]


@sends
def test_retry_failed_requeues_a_campaigns_failed_messages(api_a, followers_a, sandbox_api):
    template = followers_a[0].account.templates.get(template_id=SHIPPED)
    campaign = Campaign.objects.create(
        account=followers_a[0].account,
        template=template,
        data={key: {"value": value} for key, value in SHIPPED_DATA.items()},
        recipient_kind=Campaign.RecipientKind.OPENIDS,
        recipient_count=1,
        state=Campaign.State.DONE,
    )
    _make_message(
        followers_a[0].account,
        followers_a[2].openid,
        campaign=campaign,
        data=None,
        status=Message.Status.FAILED,
        errcode=-1,
        errmsg="system error",
        attempts=5,
    )
    _make_message(
        followers_a[0].account,
        followers_a[3].openid,
        campaign=campaign,
        data=None,
        status=Message.Status.FAILED,
        errcode=OUTCOME_UNKNOWN_ERRCODE,
        errmsg="may have been delivered",
        attempts=2,
    )
    response = api_a.post(f"{CAMPAIGNS}{campaign.pk}/retry-failed/")
    assert response.status_code == 202, response.content
    assert (response.json()["retried"], response.json()["left_unknown"]) == (1, 1)
    assert response.json()["campaign"]["id"] == campaign.pk

    response = api_a.post(f"{CAMPAIGNS}{campaign.pk}/retry-failed/", {"include_unknown": True}, format="json")
    assert response.status_code == 202, response.content
    assert (response.json()["retried"], response.json()["left_unknown"]) == (1, 0)
    assert Message.objects.filter(campaign=campaign, status=Message.Status.SENT).count() == 2
    assert_error(
        api_a.post(f"{CAMPAIGNS}{campaign.pk}/retry-failed/", {"include_unknown": "maybe"}, format="json"),
        400,
        "invalid",
    )


def test_a_message_failed_with_an_unknown_outcome_says_so_in_words(api_a, followers_a, english):
    message = _make_message(
        followers_a[0].account,
        followers_a[1].openid,
        status=Message.Status.FAILED,
        errcode=OUTCOME_UNKNOWN_ERRCODE,
        errmsg="No answer from WeChat",
    )
    body = api_a.get(f"{MESSAGES}{message.pk}/").json()
    assert body["errcode"] == OUTCOME_UNKNOWN_ERRCODE
    assert "may have been delivered" in body["error_description"]


def test_the_campaign_key_namespace_is_refused_with_a_field_error(api_a, followers_a):
    response = api_a.post(MESSAGES, _send_body(followers_a[1].openid, client_msg_id="c12-o123"), format="json")
    assert response.status_code == 400, response.content
    assert "client_msg_id" in str(response.json())
    response = api_a.post(
        MESSAGES, _send_body(followers_a[1].openid), format="json", HTTP_IDEMPOTENCY_KEY="c99-anything"
    )
    assert response.status_code == 400, response.content


@pytest.mark.parametrize(
    ("state", "action"),
    [(Campaign.State.DONE, "cancel"), (Campaign.State.CANCELLED, "cancel"), (Campaign.State.CANCELLED, "retry-failed")],
)
def test_campaign_actions_the_state_does_not_allow_answer_409(api_a, account_a, state, action):
    campaign = Campaign.objects.create(
        account=account_a,
        template=account_a.templates.get(template_id=SHIPPED),
        data={},
        recipient_kind=Campaign.RecipientKind.OPENIDS,
        state=state,
    )
    body = assert_error(api_a.post(f"{CAMPAIGNS}{campaign.pk}/{action}/"), 409, "conflict")
    assert body["detail"]
    campaign.refresh_from_db()
    assert campaign.state == state


def test_campaigns_of_other_accounts_are_invisible(api_a, api_b, account_a, account_b):
    campaign = Campaign.objects.create(
        account=account_a,
        template=account_a.templates.get(template_id=SHIPPED),
        data={},
        recipient_kind=Campaign.RecipientKind.OPENIDS,
        state=Campaign.State.RUNNING,
    )
    assert api_b.get(CAMPAIGNS).json()["results"] == []
    assert_error(api_b.get(f"{CAMPAIGNS}{campaign.pk}/"), 404, "not_found")
    assert_error(api_b.post(f"{CAMPAIGNS}{campaign.pk}/cancel/"), 404, "not_found")
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.RUNNING
    refused = api_b.post(CAMPAIGNS, _campaign_body({"all_subscribed": True}), format="json")
    assert assert_error(refused, 400, "invalid")["errors"]["account"]


# --- Followers and templates --------------------------------------------------------------------------------------


def test_followers_list_and_filters(api_a, api_b, followers_a):
    Follower.objects.filter(pk=followers_a[4].pk).update(subscribed=False)

    def openids(**params: Any) -> list[str]:
        response = api_a.get("/api/v1/followers/", params)
        assert response.status_code == 200, response.content
        return sorted(item["openid"] for item in response.json()["results"])

    everyone = sorted(follower.openid for follower in followers_a)
    assert openids() == everyone
    assert openids(account=DEMO_APPID) == everyone
    assert openids(subscribed="false") == [followers_a[4].openid]
    assert len(openids(subscribed="true")) == 4
    assert openids(openid=followers_a[2].openid) == [followers_a[2].openid]
    assert openids(username="alice") == [followers_a[0].openid]
    first = api_a.get("/api/v1/followers/", {"username": "alice"}).json()["results"][0]
    assert first["username"] == "alice"
    assert first["account"] == DEMO_APPID
    assert api_b.get("/api/v1/followers/").json()["results"] == []
    assert api_b.get("/api/v1/followers/").json()["count"] == 0


def test_templates_list_with_keyword_rules_and_filters(api_a, api_b, account_a, account_b):
    MessageTemplate.objects.filter(account=account_a, template_id=TICKET).update(is_active=False)
    body = api_a.get("/api/v1/templates/").json()
    assert body["count"] == len(DEMO_TEMPLATES)
    shipped = next(item for item in body["results"] if item["template_id"] == SHIPPED)
    assert [keyword["name"] for keyword in shipped["keywords"]] == ["character_string1", "thing2", "time3", "amount4"]
    thing = shipped["keywords"][1]
    assert thing["type"] == "thing"
    assert thing["type_label"] == "thing"
    assert thing["label"] == "商品名称"
    assert thing["max_length"] == 20
    assert thing["help"]

    inactive = api_a.get("/api/v1/templates/", {"active": "false"}).json()["results"]
    assert [item["template_id"] for item in inactive] == [TICKET]
    assert len(api_a.get("/api/v1/templates/", {"active": "true"}).json()["results"]) == len(DEMO_TEMPLATES) - 1
    assert api_a.get("/api/v1/templates/", {"account": OTHER_APPID}).json()["results"] == []
    other = api_b.get("/api/v1/templates/").json()["results"]
    assert [item["account"] for item in other] == [OTHER_APPID]

    chinese = api_a.get("/api/v1/templates/", {"active": "true"}, HTTP_ACCEPT_LANGUAGE="zh-hans").json()["results"]
    shipped = next(item for item in chinese if item["template_id"] == SHIPPED)
    assert [(keyword["type"], keyword["type_label"]) for keyword in shipped["keywords"]] == [
        ("character_string", "字符串"),
        ("thing", "事物"),
        ("time", "时间"),
        ("amount", "金额"),
    ]


def test_page_number_lists_cap_the_page_size(api_a, account_a):
    response = api_a.get("/api/v1/templates/", {"page_size": 1})
    body = response.json()
    assert len(body["results"]) == 1
    assert body["next"]
    assert api_a.get("/api/v1/templates/", {"page": 99}).status_code == 404


# --- Errors and secrets -------------------------------------------------------------------------------------------


def test_unknown_api_urls_and_methods_answer_json(api_a, account_a):
    assert_error(api_a.get("/api/v1/nothing-here/"), 404, "not_found")
    assert_error(api_a.get("/api/v2/messages/"), 404, "not_found")
    assert_error(api_a.delete(MESSAGES), 405, "method_not_allowed")
    assert_error(api_a.put(f"{MESSAGES}1/", {}, format="json"), 405, "method_not_allowed")
    assert_error(api_a.get(f"{MESSAGES}999999/"), 404, "not_found")
    assert_error(api_a.post(MESSAGES, {"account": DEMO_APPID}), 415, "unsupported_media_type")


@sends
def test_responses_never_contain_secrets(admin_user, account_a, followers_a, sandbox_api):
    client = api_client_for(admin_user)
    send = client.post(MESSAGES, _send_body(followers_a[1].openid), format="json")
    assert send.status_code == 202
    pages = [
        send,
        client.get(MESSAGES),
        client.get(f"{MESSAGES}{send.json()['id']}/"),
        client.post(CAMPAIGNS, _campaign_body({"openids": [followers_a[2].openid]}), format="json"),
        client.get(CAMPAIGNS),
        client.get("/api/v1/followers/"),
        client.get("/api/v1/templates/"),
        client.get("/api/schema/"),
    ]
    held_token = default_token_manager().peek(DEMO_APPID).value
    for response in pages:
        content = response.content.decode()
        for secret in (DEMO_ACCOUNT["secret"], DEMO_ACCOUNT["encoding_aes_key"], DEMO_ACCOUNT["token"], held_token):
            assert secret not in content
        if response is not pages[-1]:  # the schema documents the token API, and with it the word
            assert "access_token" not in content


def test_error_answers_keep_one_shape_for_service_errors(api_a, followers_a, sandbox_api):
    body = _send_body(followers_a[1].openid, data={"thing2": "键" * 21})
    errors = assert_error(api_a.post(MESSAGES, body, format="json"), 400, "invalid")["errors"]
    assert set(errors["data"]) >= {"character_string1", "thing2", "time3", "amount4"}
    assert all(isinstance(messages, list) for messages in errors["data"].values())
    json.dumps(errors)
