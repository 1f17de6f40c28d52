"""The admin-only "Clear quota at WeChat" action (a confirmation page, then the clear against the sandbox), and the
wechat-record API endpoint for one message."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from accounts.models import QuotaClear
from messaging.models import Message
from sandbox.demo import DEMO_APPID
from tests.factories import api_client_for, english_client
from tests.messaging import test_pipeline

pipeline = test_pipeline.pipeline
send = test_pipeline.send
CHANGELIST = reverse("admin:accounts_officialaccount_changelist")


def post_clear(client, account, **extra):
    return client.post(CHANGELIST, {"action": "clear_quota", "_selected_action": [account.pk], **extra})


def test_clear_quota_asks_to_confirm_then_clears(pipeline, sandbox_api) -> None:
    client = english_client(get_user_model().objects.create_superuser("root", password="pw"))
    page = post_clear(client, pipeline)
    assert page.status_code == 200
    assert b"Clears this month" in page.content and b"0 of 10" in page.content
    assert sandbox_api.requests("/cgi-bin/clear_quota") == []
    done = post_clear(client, pipeline, confirm="yes")
    assert done.status_code == 302
    assert sandbox_api.requests("/cgi-bin/clear_quota")[0].json() == {"appid": DEMO_APPID}
    assert QuotaClear.objects.get().succeeded


def test_business_staff_get_no_clear_quota_action(pipeline, sandbox_api, staff_group) -> None:
    staff = get_user_model().objects.create_user("staff", password="pw", is_staff=True)
    staff.groups.add(staff_group)
    pipeline.operators.add(staff)
    client = english_client(staff)
    changelist = client.get(CHANGELIST)
    assert changelist.status_code == 200
    assert b'value="clear_quota"' not in changelist.content
    post_clear(client, pipeline, confirm="yes")
    assert sandbox_api.requests("/cgi-bin/clear_quota") == []


@pytest.mark.parametrize("failed", [True, False])
def test_wechat_record_endpoint(pipeline, sandbox_api, failed) -> None:
    user = get_user_model().objects.create_superuser("root", password="pw")
    touser = "o-not-a-follower-of-this-account" if failed else sandbox_api.followers()[0]
    message = send(pipeline, touser=touser).message
    answer = api_client_for(user).get(f"/api/v1/messages/{message.pk}/wechat-record/")
    assert answer.status_code == 200
    body = answer.json()
    if failed:
        assert body["state"] == "found"
        assert body["rid"] == Message.objects.get(pk=message.pk).wechat_rid
        assert body["record"]["request_url"].startswith("access_token=***")
    else:
        assert body["state"] == "none"
        assert sandbox_api.requests("/cgi-bin/openapi/rid/get") == []
