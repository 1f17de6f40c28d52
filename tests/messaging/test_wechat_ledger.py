"""WeChat's ledger against the sandbox: the quota numbers, clear_quota's monthly limit, rid look-ups (masked, and
not asked after 7 days), intercepted messages failed with -9005, and campaign warnings."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone, translation

from accounts.models import QuotaClear
from accounts.services import QuotaClearRefused, clear_quota, poll_quota, poll_quotas
from messaging import ratelimit
from messaging.models import InterceptedMessage, Message
from messaging.services import RecipientSpec, create_campaign, poll_intercepted, quota_warnings, wechat_record
from operations.metrics import render
from sandbox.demo import DEMO_APPID
from tests.factories import ORDER_DATA, ORDER_TEMPLATE
from tests.messaging import test_pipeline
from wxnotify.wechat.errors import INTERCEPTED_ERRCODE, WeChatError

pipeline = test_pipeline.pipeline
send = test_pipeline.send
refreshed = test_pipeline.refreshed


def test_quota_numbers_follow_the_sandboxs_sends(pipeline, sandbox_api) -> None:
    sandbox_api.update_account(DEMO_APPID, daily_quota=5)
    followers = sandbox_api.followers()
    for openid in followers[:3]:
        send(pipeline, touser=openid)
    reading = poll_quota(pipeline)
    assert (reading.daily_limit, reading.used, reading.remain) == (5, 3, 2)
    assert sandbox_api.requests("/cgi-bin/openapi/quota/get")[-1].json() == {
        "cgi_path": "/cgi-bin/message/template/send"
    }
    body = render(None)[0].decode()
    assert f'wxnotify_wechat_quota_remain{{account="{DEMO_APPID}"}} 2.0' in body
    assert f'wxnotify_wechat_quota_daily_limit{{account="{DEMO_APPID}"}} 5.0' in body


def test_sends_past_the_quota_are_held_until_midnight_beijing(pipeline, sandbox_api) -> None:
    sandbox_api.update_account(DEMO_APPID, daily_quota=1)
    first, second = sandbox_api.followers()[:2]
    assert refreshed(send(pipeline, touser=first).message).status == Message.Status.SENT
    held = refreshed(send(pipeline, touser=second).message)
    assert held.status == Message.Status.QUEUED
    assert ratelimit.held_until(pipeline.pk) is not None
    with translation.override("en"):
        warnings = quota_warnings(pipeline, recipients=1)
    assert any("on hold until" in warning for warning in warnings)


def test_a_campaign_above_todays_quota_is_accepted_with_a_warning(pipeline, sandbox_api) -> None:
    sandbox_api.update_account(DEMO_APPID, daily_quota=2)
    poll_quota(pipeline)
    openids = sandbox_api.followers()[:3]
    campaign = create_campaign(
        account=pipeline,
        template_id=ORDER_TEMPLATE,
        data=ORDER_DATA,
        recipients=RecipientSpec(kind="openids", values=openids),
    )
    with translation.override("en"):
        warnings = quota_warnings(pipeline, recipients=campaign.recipient_count)
    assert "3 recipients, but WeChat allows only 2 more" in warnings[0]


def test_clear_quota_lifts_the_hold_and_stops_at_ten_a_month(pipeline, sandbox_api) -> None:
    sandbox_api.update_account(DEMO_APPID, daily_quota=1)
    first, second = sandbox_api.followers()[:2]
    send(pipeline, touser=first)
    held = send(pipeline, touser=second).message
    reading = clear_quota(pipeline, cleared_by=None)
    assert reading is not None and reading.used == 0
    assert ratelimit.held_until(pipeline.pk) is None
    held.refresh_from_db()
    assert held.next_attempt_at <= timezone.now()
    for _ in range(9):
        clear_quota(pipeline, cleared_by=None)
    calls = len(sandbox_api.requests("/cgi-bin/clear_quota"))
    with pytest.raises(QuotaClearRefused):
        clear_quota(pipeline, cleared_by=None)
    assert len(sandbox_api.requests("/cgi-bin/clear_quota")) == calls == 10
    assert QuotaClear.objects.filter(account=pipeline, succeeded=True).count() == 10


def test_wechats_own_clear_limit_48006_is_recorded(pipeline, sandbox_api) -> None:
    sandbox_api.add_api_fault("/cgi-bin/clear_quota", errcode=48006)
    with pytest.raises(WeChatError) as raised:
        clear_quota(pipeline, cleared_by=None)
    assert raised.value.errcode == 48006
    record = QuotaClear.objects.get(account=pipeline)
    assert not record.succeeded and "48006" in record.error


def test_a_failed_send_keeps_its_rid_and_wechats_record_is_masked(pipeline, sandbox_api) -> None:
    message = send(pipeline, touser="o-not-a-follower-of-this-account").message
    message.refresh_from_db()
    assert message.status == Message.Status.FAILED and message.errcode == 40003
    assert message.wechat_rid and message.wechat_rid in message.errmsg
    lookup = wechat_record(message)
    assert lookup.state == "found"
    assert lookup.record["request_url"].startswith("access_token=***")
    assert "40003" in lookup.record["response_body"]
    token = sandbox_api.requests("/cgi-bin/message/template/send")[-1].query["access_token"]
    assert token not in str(lookup.record)


def test_a_rid_older_than_seven_days_is_not_asked(pipeline, sandbox_api) -> None:
    message = send(pipeline, touser="o-not-a-follower-of-this-account").message
    Message.objects.filter(pk=message.pk).update(wechat_rid_at=timezone.now() - timedelta(days=8))
    message.refresh_from_db()
    lookup = wechat_record(message)
    assert lookup.state == "expired"
    assert sandbox_api.requests("/cgi-bin/openapi/rid/get") == []


def test_wechat_forgets_rids_after_seven_days(pipeline, sandbox_api) -> None:
    message = send(pipeline, touser="o-not-a-follower-of-this-account").message
    message.refresh_from_db()
    sandbox_api.state.failed_calls[message.wechat_rid].time -= 8 * 86400
    assert wechat_record(message).state == "expired"


def test_an_intercepted_message_fails_with_its_reason(pipeline, sandbox_api) -> None:
    openid = sandbox_api.followers()[0]
    message = send(pipeline, touser=openid).message
    message.refresh_from_db()
    sandbox_api.state.block_message(DEMO_APPID, message.msgid)
    result = poll_intercepted(pipeline)
    assert (result.found, result.matched) == (1, 1)
    message.refresh_from_db()
    assert message.status == Message.Status.FAILED
    assert message.errcode == INTERCEPTED_ERRCODE
    assert message.errmsg.startswith("intercepted by WeChat")
    assert poll_intercepted(pipeline).found == 0
    assert InterceptedMessage.objects.get().message == message


def test_a_failing_quota_read_keeps_the_other_accounts_going(pipeline, sandbox_api) -> None:
    sandbox_api.add_api_fault("/cgi-bin/openapi/quota/get", errcode=-1)
    assert poll_quotas() == 0
    assert poll_quotas() == 1
