"""Scheduled sends (``send_at``) and quiet hours: accepted now, stored ``scheduled``, sent by the workers at their
time; cancelled or rescheduled until then; campaign messages wait out the account's quiet hours.

Tasks run inline and the retry waiter's horizon is 0 in the tests, so nothing waits for a clock here: "the time
has come" is written into the rows (send_at / next_attempt_at moved to the past), and the delivery task or the
sweep that runs next releases them, as the waiting task does in production (bench/RESULTS.md measures the
lateness against real clocks).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone, translation

from accounts.models import Follower, OfficialAccount
from accounts.services import announce_quiet_hours_change
from messaging import rules, scheduling
from messaging.models import Campaign, Message
from messaging.selectors import campaign_status_counts
from messaging.services import (
    CampaignActionRefused,
    IdempotencyConflict,
    MessageActionRefused,
    MessageRejected,
    RecipientSpec,
    cancel_campaign,
    cancel_message,
    create_campaign,
    request_fingerprint,
    reschedule_campaign,
    reschedule_message,
    retry_failed,
    send_message,
)
from messaging.tasks import deliver_due_messages, sweep_messages
from sandbox.demo import DEMO_APPID
from tests.factories import ORDER_DATA, ORDER_TEMPLATE, api_client_for, english_client
from wxnotify.wechat.tokens import default_token_manager

SHANGHAI = ZoneInfo("Asia/Shanghai")  # no daylight saving time

# The reasons and refusals are read in English (one test reads them in Chinese).
pytestmark = pytest.mark.usefixtures("english")


@pytest.fixture
def pipeline(transactional_db, sandbox_api, account_a):
    """Account A with five sandbox followers of ours; delivery runs inline on commit."""
    default_token_manager().forget(DEMO_APPID)
    openids = sandbox_api.followers()[:5]
    Follower.objects.bulk_create([Follower(account=account_a, openid=openid) for openid in openids])
    yield account_a
    default_token_manager().forget(DEMO_APPID)


def delivered_to(sandbox_api) -> list[str]:
    return [message["touser"] for message in sandbox_api.messages(DEMO_APPID)]


def single(account: OfficialAccount, touser: str, **overrides):
    return send_message(account=account, template_id=ORDER_TEMPLATE, data=ORDER_DATA, touser=touser, **overrides)


def campaign_to(account: OfficialAccount, openids: list[str], **overrides) -> Campaign:
    return create_campaign(
        account=account,
        template_id=ORDER_TEMPLATE,
        data=ORDER_DATA,
        recipients=RecipientSpec.openids(openids),
        **overrides,
    )


def time_comes(**filters) -> None:
    """The send time of the matching scheduled messages (and their campaigns) has just passed."""
    past = timezone.now() - timedelta(seconds=1)
    Message.objects.filter(status=Message.Status.SCHEDULED, **filters).update(next_attempt_at=past, send_at=past)
    Campaign.objects.filter(state=Campaign.State.SCHEDULED).update(send_at=past)


def quiet_now(account: OfficialAccount) -> datetime:
    """Give the account a quiet window around the present moment (two hours either side, across midnight when the
    local time is near it); returns when it ends."""
    local = timezone.now().astimezone(account.zone)
    account.quiet_start = (local - timedelta(hours=2)).time().replace(second=0, microsecond=0)
    account.quiet_end = (local + timedelta(hours=2)).time().replace(second=0, microsecond=0)
    account.save()
    end = account.quiet_hours_end(timezone.now())
    assert end is not None
    return end


# --- The quiet window on the account's clock ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "expected_end"),
    [
        (datetime(2026, 12, 7, 23, 30), datetime(2026, 12, 8, 8, 0)),  # after the start, before midnight
        (datetime(2026, 12, 8, 0, 0), datetime(2026, 12, 8, 8, 0)),
        (datetime(2026, 12, 8, 7, 59), datetime(2026, 12, 8, 8, 0)),  # after midnight
        (datetime(2026, 12, 7, 22, 0), datetime(2026, 12, 8, 8, 0)),  # the start is inside
        (datetime(2026, 12, 8, 8, 0), None),  # the end is outside
        (datetime(2026, 12, 7, 21, 59), None),
        (datetime(2026, 12, 7, 12, 0), None),
    ],
)
def test_a_quiet_window_across_midnight_in_a_zone_without_dst(local, expected_end):
    account = OfficialAccount(time_zone="Asia/Shanghai", quiet_start=time(22, 0), quiet_end=time(8, 0))
    now = local.replace(tzinfo=SHANGHAI).astimezone(ZoneInfo("UTC"))
    end = account.quiet_hours_end(now)
    assert end == (None if expected_end is None else expected_end.replace(tzinfo=SHANGHAI))


def test_a_daytime_window_and_no_window():
    account = OfficialAccount(time_zone="Asia/Shanghai", quiet_start=time(12, 0), quiet_end=time(14, 0))
    noon = datetime(2026, 12, 7, 13, 0, tzinfo=SHANGHAI)
    assert account.quiet_hours_end(noon) == datetime(2026, 12, 7, 14, 0, tzinfo=SHANGHAI)
    assert account.quiet_hours_end(noon.replace(hour=14)) is None
    assert OfficialAccount(time_zone="Asia/Shanghai").quiet_hours_end(noon) is None


def test_the_window_is_read_on_the_accounts_clock_not_the_servers():
    account = OfficialAccount(time_zone="Europe/London", quiet_start=time(22, 0), quiet_end=time(8, 0))
    # 23:00 in London is 07:00 the next day in Shanghai: quiet in London's window until 08:00 London time.
    now = datetime(2026, 12, 7, 23, 0, tzinfo=ZoneInfo("Europe/London"))
    assert account.quiet_hours_end(now) == datetime(2026, 12, 8, 8, 0, tzinfo=ZoneInfo("Europe/London"))


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [(time(22, 0), None, "quiet_end"), (None, time(8, 0), "quiet_start"), (time(8, 0), time(8, 0), "quiet_end")],
)
def test_a_window_needs_two_different_ends(account_a, start, end, field):
    account_a.quiet_start, account_a.quiet_end = start, end
    with pytest.raises(ValidationError) as raised:
        account_a.clean()
    assert field in raised.value.message_dict


# --- Scheduled single messages ----------------------------------------------------------------------------------


def test_a_scheduled_message_waits_then_goes_at_its_time(pipeline, sandbox_api):
    openid = sandbox_api.followers()[0]
    send_at = timezone.now() + timedelta(hours=3)
    message = single(pipeline, openid, send_at=send_at).message
    message.refresh_from_db()
    assert message.status == Message.Status.SCHEDULED
    assert message.send_at == send_at and message.next_attempt_at == send_at
    assert message.wait_reason == Message.WaitReason.SEND_AT
    local = send_at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")
    assert scheduling.message_wait_text(message) == f"Scheduled for {local} Asia/Shanghai"

    deliver_due_messages()
    sweep_messages()
    assert delivered_to(sandbox_api) == []
    assert Message.objects.get(pk=message.pk).status == Message.Status.SCHEDULED

    time_comes(pk=message.pk)
    deliver_due_messages()
    message.refresh_from_db()
    assert message.status in (Message.Status.SENT, Message.Status.DELIVERED)
    assert message.wait_reason == ""
    assert delivered_to(sandbox_api) == [openid]


def test_the_reason_reads_in_chinese_too(pipeline, sandbox_api):
    end = quiet_now(pipeline)
    message = single(pipeline, sandbox_api.followers()[0], respect_quiet_hours=True).message
    with translation.override("zh-hans"):
        assert scheduling.message_wait_text(message) == f"免打扰时段，至 {end.astimezone(SHANGHAI):%H:%M} Asia/Shanghai"


def test_a_naive_send_time_is_read_in_the_accounts_zone(pipeline, sandbox_api):
    local = (timezone.now() + timedelta(days=1)).astimezone(SHANGHAI).replace(tzinfo=None, microsecond=0)
    message = single(pipeline, sandbox_api.followers()[0], send_at=local).message
    assert message.send_at == local.replace(tzinfo=SHANGHAI)


@pytest.mark.parametrize(
    ("delta", "words"), [(timedelta(seconds=-1), "has passed"), (timedelta(days=31), "at most 30 days")]
)
def test_a_send_time_in_the_past_or_too_far_ahead_is_refused(pipeline, sandbox_api, delta, words):
    with pytest.raises(MessageRejected) as raised:
        single(pipeline, sandbox_api.followers()[0], send_at=timezone.now() + delta)
    assert words in raised.value.errors["send_at"][0]
    assert not Message.objects.exists()


def test_schedule_then_cancel_a_message(pipeline, sandbox_api):
    message = single(pipeline, sandbox_api.followers()[0], send_at=timezone.now() + timedelta(hours=1)).message
    assert rules.can_cancel_message(message)
    cancelled = cancel_message(message)
    assert cancelled.status == Message.Status.FAILED
    assert cancelled.errmsg == "Cancelled before its send time."
    assert cancelled.finished_at is not None
    with pytest.raises(MessageActionRefused):
        cancel_message(cancelled)
    time_comes()
    deliver_due_messages()
    assert delivered_to(sandbox_api) == []


def test_reschedule_a_message_and_refuse_a_past_time(pipeline, sandbox_api):
    message = single(pipeline, sandbox_api.followers()[0], send_at=timezone.now() + timedelta(hours=1)).message
    later = timezone.now() + timedelta(days=2)
    moved = reschedule_message(message, later)
    assert moved.status == Message.Status.SCHEDULED
    assert moved.send_at == later and moved.next_attempt_at == later
    with pytest.raises(MessageRejected) as raised:
        reschedule_message(moved, timezone.now() - timedelta(minutes=1))
    assert "send_at" in raised.value.errors
    assert Message.objects.get(pk=message.pk).send_at == later


def test_the_same_key_with_another_send_time_is_another_request(pipeline, sandbox_api):
    openid = sandbox_api.followers()[0]
    later = timezone.now() + timedelta(hours=1)
    first = single(pipeline, openid, client_msg_id="order-1-reminder", send_at=later)
    again = single(pipeline, openid, client_msg_id="order-1-reminder", send_at=later)
    assert (first.created, again.created, again.message.pk) == (True, False, first.message.pk)
    with pytest.raises(IdempotencyConflict):
        single(pipeline, openid, client_msg_id="order-1-reminder", send_at=later + timedelta(hours=1))
    with pytest.raises(IdempotencyConflict):
        single(pipeline, openid, client_msg_id="order-1-reminder")


def test_a_request_without_a_send_time_hashes_as_before_send_times_existed():
    asked = {"touser": "o1", "template_id": "t", "data": {"k": {"value": "v"}}, "url": "", "miniprogram": None}
    assert (
        request_fingerprint(**asked)
        == hashlib.sha256(
            json.dumps(asked, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
        ).hexdigest()
    )


def test_a_message_already_sent_cannot_be_cancelled_or_rescheduled(pipeline, sandbox_api):
    message = single(pipeline, sandbox_api.followers()[0]).message
    message.refresh_from_db()
    assert message.status in (Message.Status.SENT, Message.Status.DELIVERED)
    with pytest.raises(MessageActionRefused):
        cancel_message(message)
    with pytest.raises(MessageActionRefused):
        reschedule_message(message, timezone.now() + timedelta(hours=1))


# --- Scheduled campaigns ------------------------------------------------------------------------------------------


def test_a_scheduled_campaign_sends_nothing_before_its_time_then_runs(pipeline, sandbox_api):
    openids = sandbox_api.followers()[:3]
    send_at = timezone.now() + timedelta(hours=5)
    campaign = campaign_to(pipeline, openids, send_at=send_at)
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.SCHEDULED and campaign.send_at == send_at
    assert campaign.recipient_count == 3
    assert campaign_status_counts(campaign)[Message.Status.SCHEDULED] == 3
    assert rules.can_cancel(campaign) and rules.can_reschedule(campaign)
    assert scheduling.campaign_wait_text(campaign).startswith("Scheduled for ")

    deliver_due_messages()
    sweep_messages()
    assert delivered_to(sandbox_api) == []
    assert Campaign.objects.get(pk=campaign.pk).state == Campaign.State.SCHEDULED

    time_comes(campaign=campaign)
    sweep_messages()
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.DONE
    assert sorted(delivered_to(sandbox_api)) == sorted(openids)


def test_cancel_a_scheduled_campaign_before_its_time(pipeline, sandbox_api):
    campaign = campaign_to(pipeline, sandbox_api.followers()[:3], send_at=timezone.now() + timedelta(hours=1))
    Follower.objects.filter(openid=sandbox_api.followers()[0]).update(subscribed=False)
    Message.objects.filter(campaign=campaign, touser=sandbox_api.followers()[0]).update(status=Message.Status.FAILED)
    assert not rules.can_retry(campaign, failed=1)
    with pytest.raises(CampaignActionRefused):
        retry_failed(campaign)  # it would send before the campaign's time
    assert cancel_campaign(campaign) == 2
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.CANCELLED
    assert set(campaign.messages.exclude(touser=sandbox_api.followers()[0]).values_list("status", "errmsg")) == {
        (Message.Status.FAILED, "Cancelled with its campaign.")
    }
    with pytest.raises(CampaignActionRefused):
        reschedule_campaign(campaign, timezone.now() + timedelta(hours=2))
    time_comes()
    sweep_messages()
    assert delivered_to(sandbox_api) == []


def test_reschedule_a_campaign_moves_its_messages(pipeline, sandbox_api):
    campaign = campaign_to(pipeline, sandbox_api.followers()[:2], send_at=timezone.now() + timedelta(hours=1))
    later = timezone.now() + timedelta(days=3)
    campaign = reschedule_campaign(campaign, later)
    assert campaign.send_at == later
    assert set(campaign.messages.values_list("next_attempt_at", flat=True)) == {later}
    with pytest.raises(MessageRejected):
        reschedule_campaign(campaign, timezone.now() - timedelta(seconds=5))
    with pytest.raises(MessageRejected):
        reschedule_campaign(campaign, timezone.now() + timedelta(days=40))


def test_an_all_subscribed_campaign_is_expanded_at_once_and_waits(pipeline, sandbox_api):
    campaign = create_campaign(
        account=pipeline,
        template_id=ORDER_TEMPLATE,
        data=ORDER_DATA,
        recipients=RecipientSpec.all_subscribed(),
        send_at=timezone.now() + timedelta(hours=1),
    )
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.SCHEDULED
    assert campaign_status_counts(campaign)[Message.Status.SCHEDULED] == 5
    assert delivered_to(sandbox_api) == []


# --- Quiet hours ------------------------------------------------------------------------------------------------


def test_campaign_messages_wait_out_quiet_hours_and_singles_go_through(pipeline, sandbox_api):
    end = quiet_now(pipeline)
    openids = sandbox_api.followers()[:5]
    campaign = campaign_to(pipeline, openids[:3])
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.RUNNING  # not done: its messages wait
    waiting = list(campaign.messages.all())
    assert {(m.status, m.wait_reason, m.next_attempt_at) for m in waiting} == {
        (Message.Status.SCHEDULED, Message.WaitReason.QUIET_HOURS, end)
    }
    expected = f"Quiet hours until {end.astimezone(pipeline.zone):%H:%M} Asia/Shanghai"
    assert scheduling.message_wait_text(waiting[0]) == expected

    transactional = single(pipeline, openids[3]).message
    transactional.refresh_from_db()
    assert transactional.status in (Message.Status.SENT, Message.Status.DELIVERED)

    polite = single(pipeline, openids[4], respect_quiet_hours=True).message
    assert polite.status == Message.Status.SCHEDULED
    assert polite.wait_reason == Message.WaitReason.QUIET_HOURS and polite.next_attempt_at == end
    assert delivered_to(sandbox_api) == [openids[3]]


def test_a_retry_that_lands_inside_quiet_hours_waits_for_their_end(pipeline, sandbox_api):
    campaign = campaign_to(pipeline, sandbox_api.followers()[:1], send_at=timezone.now() + timedelta(hours=1))
    end = quiet_now(pipeline)
    # Its first attempt failed before the window; the retry's time has come inside it.
    campaign.messages.update(
        status=Message.Status.QUEUED, attempts=1, errmsg="system error", next_attempt_at=timezone.now()
    )
    Campaign.objects.filter(pk=campaign.pk).update(state=Campaign.State.RUNNING)
    deliver_due_messages()
    message = campaign.messages.get()
    assert (message.status, message.wait_reason, message.next_attempt_at) == (
        Message.Status.SCHEDULED,
        Message.WaitReason.QUIET_HOURS,
        end,
    )
    assert message.attempts == 1
    assert delivered_to(sandbox_api) == []


def test_changing_the_window_replans_only_the_messages_waiting_for_it(pipeline, sandbox_api):
    quiet_now(pipeline)
    openids = sandbox_api.followers()[:3]
    waiting_quiet = campaign_to(pipeline, openids[:2])
    send_at = timezone.now() + timedelta(hours=6)
    chosen_time = single(pipeline, openids[2], send_at=send_at).message

    pipeline.quiet_start = pipeline.quiet_end = None
    pipeline.save()
    assert announce_quiet_hours_change(pipeline, ["quiet_start", "quiet_end"])  # runs on commit: autocommit here
    assert not announce_quiet_hours_change(pipeline, ["name"])

    assert Message.objects.get(pk=chosen_time.pk).next_attempt_at == send_at
    deliver_due_messages()
    assert sorted(delivered_to(sandbox_api)) == sorted(openids[:2])
    assert campaign_status_counts(waiting_quiet)[Message.Status.SCHEDULED] == 0
    assert Message.objects.get(pk=chosen_time.pk).status == Message.Status.SCHEDULED


def test_a_moved_window_moves_the_waiting_messages_to_its_new_end(pipeline, sandbox_api):
    quiet_now(pipeline)
    campaign = campaign_to(pipeline, sandbox_api.followers()[:2])
    local = timezone.now().astimezone(pipeline.zone)
    pipeline.quiet_end = (local + timedelta(hours=1)).time().replace(second=0, microsecond=0)
    pipeline.save()
    assert scheduling.replan_quiet_hours(pipeline, timezone.now()) == 2
    new_end = pipeline.quiet_hours_end(timezone.now())
    assert set(campaign.messages.values_list("next_attempt_at", flat=True)) == {new_end}


# --- API ----------------------------------------------------------------------------------------------------------


def api_send(api, account, **fields):
    body = {"account": account.appid, "template_id": ORDER_TEMPLATE, "data": ORDER_DATA, **fields}
    return api.post("/api/v1/messages/", body, format="json")


def test_api_schedules_cancels_and_reschedules_a_message(pipeline, sandbox_api, staff_a):
    api = api_client_for(staff_a)
    openid = sandbox_api.followers()[0]
    send_at = (timezone.now() + timedelta(hours=2)).astimezone(SHANGHAI).replace(microsecond=0)
    response = api_send(api, pipeline, touser=openid, send_at=send_at.isoformat())
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == "scheduled"
    assert body["wait_reason"] == "send_at"
    assert body["wait_description"] == f"Scheduled for {send_at:%Y-%m-%d %H:%M} Asia/Shanghai"
    assert datetime.fromisoformat(body["send_at"]) == send_at

    later = send_at + timedelta(days=1)
    moved = api.post(f"/api/v1/messages/{body['id']}/reschedule/", {"send_at": later.isoformat()}, format="json")
    assert moved.status_code == 200 and datetime.fromisoformat(moved.json()["send_at"]) == later

    cancelled = api.post(f"/api/v1/messages/{body['id']}/cancel/")
    assert cancelled.status_code == 200
    assert (cancelled.json()["status"], cancelled.json()["errmsg"]) == ("failed", "Cancelled before its send time.")
    again = api.post(f"/api/v1/messages/{body['id']}/cancel/")
    assert again.status_code == 409


def test_api_refuses_a_past_send_time_with_a_field_error(pipeline, sandbox_api, staff_a):
    api = api_client_for(staff_a)
    past = (timezone.now() - timedelta(minutes=1)).isoformat()
    response = api_send(api, pipeline, touser=sandbox_api.followers()[0], send_at=past)
    assert response.status_code == 400
    assert "send_at" in response.json()["errors"]
    campaign = api.post(
        "/api/v1/campaigns/",
        {
            "account": pipeline.appid,
            "template_id": ORDER_TEMPLATE,
            "data": ORDER_DATA,
            "recipients": {"openids": sandbox_api.followers()[:2]},
            "send_at": (timezone.now() + timedelta(days=45)).isoformat(),
        },
        format="json",
    )
    assert campaign.status_code == 400 and "send_at" in campaign.json()["errors"]
    assert not Message.objects.exists()


def test_api_scheduled_campaign_shows_its_time_and_can_be_rescheduled(pipeline, sandbox_api, staff_a):
    api = api_client_for(staff_a)
    send_at = (timezone.now() + timedelta(hours=3)).replace(microsecond=0)
    response = api.post(
        "/api/v1/campaigns/",
        {
            "account": pipeline.appid,
            "template_id": ORDER_TEMPLATE,
            "data": ORDER_DATA,
            "recipients": {"openids": sandbox_api.followers()[:2]},
            "send_at": send_at.isoformat(),
        },
        format="json",
    )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["state"] == "scheduled"
    assert body["counts"]["scheduled"] == 2
    assert body["wait_description"].startswith("Scheduled for ")
    later = send_at + timedelta(hours=1)
    moved = api.post(f"/api/v1/campaigns/{body['id']}/reschedule/", {"send_at": later.isoformat()}, format="json")
    assert moved.status_code == 200
    assert datetime.fromisoformat(moved.json()["send_at"]) == later
    listed = api.get("/api/v1/messages/", {"status": "scheduled"}).json()
    assert len(listed["results"]) == 2


# --- Console and admin --------------------------------------------------------------------------------------------


def test_console_schedules_a_campaign_and_shows_when_and_why(pipeline, sandbox_api, staff_a):
    client = english_client(staff_a)
    local = (timezone.now() + timedelta(days=1)).astimezone(SHANGHAI).replace(second=0, microsecond=0)
    body = {
        "account": pipeline.appid,
        "template": pipeline.templates.get(template_id=ORDER_TEMPLATE).pk,
        "action": "send",
        "name": "",
        "link_kind": "none",
        "url": "",
        "miniprogram_appid": "",
        "miniprogram_pagepath": "",
        "recipient_kind": Campaign.RecipientKind.OPENIDS,
        "recipient_list": "\n".join(sandbox_api.followers()[:2]),
        "send_at": local.strftime("%Y-%m-%dT%H:%M"),
        **{f"kw_{name}": value for name, value in ORDER_DATA.items()},
    }
    response = client.post("/console/", body, follow=True)
    assert response.status_code == 200
    campaign = Campaign.objects.get()
    assert campaign.send_at == local  # typed on the account's clock
    page = response.content.decode()
    assert f"Scheduled for {local:%Y-%m-%d %H:%M} Asia/Shanghai" in page
    assert 'id="reschedule-form"' in page and 'id="reschedule-form" hidden' not in page

    later = local + timedelta(hours=2)
    moved = client.post(
        f"/console/campaigns/{campaign.pk}/reschedule/", {"send_at": later.strftime("%Y-%m-%dT%H:%M")}, follow=True
    )
    assert f"Scheduled for {later:%Y-%m-%d %H:%M} Asia/Shanghai" in moved.content.decode()
    past = client.post(
        f"/console/campaigns/{campaign.pk}/reschedule/",
        {"send_at": (local - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")},
        follow=True,
    )
    assert "The send time has passed" in past.content.decode()
    assert Campaign.objects.get().send_at == later

    progress = client.get(f"/console/campaigns/{campaign.pk}/progress/").json()
    assert progress["counts"]["scheduled"] == 2 and not progress["finished"]


def test_console_shows_why_a_running_campaign_waits(pipeline, sandbox_api, staff_a):
    end = quiet_now(pipeline)
    campaign = campaign_to(pipeline, sandbox_api.followers()[:2])
    progress = english_client(staff_a).get(f"/console/campaigns/{campaign.pk}/progress/").json()
    assert progress["wait_text"] == f"Quiet hours until {end.astimezone(pipeline.zone):%H:%M} Asia/Shanghai"


def test_admin_lists_show_the_scheduled_time_and_the_reason(pipeline, sandbox_api, django_user_model):
    admin = django_user_model.objects.create_superuser("root", password="pw")
    client = english_client(admin)
    send_at = timezone.now() + timedelta(hours=4)
    single(pipeline, sandbox_api.followers()[0], send_at=send_at)
    campaign = campaign_to(pipeline, sandbox_api.followers()[1:3], send_at=send_at)
    text = f"Scheduled for {send_at.astimezone(SHANGHAI):%Y-%m-%d %H:%M} Asia/Shanghai"
    messages_page = client.get("/admin/messaging/message/").content.decode()
    assert messages_page.count(text) == 3
    campaign_page = client.get(f"/admin/messaging/campaign/{campaign.pk}/change/").content.decode()
    assert text in campaign_page
    account_page = client.get(f"/admin/accounts/officialaccount/{pipeline.pk}/change/").content.decode()
    assert 'name="quiet_start"' in account_page and 'name="quiet_end"' in account_page


def test_admin_cancels_selected_scheduled_singles_and_leaves_the_rest(pipeline, sandbox_api, django_user_model):
    client = english_client(django_user_model.objects.create_superuser("root", password="pw"))
    followers = sandbox_api.followers()
    later = timezone.now() + timedelta(hours=2)
    scheduled = single(pipeline, followers[0], send_at=later).message
    queued = single(pipeline, followers[1]).message
    in_campaign = Message.objects.get(campaign=campaign_to(pipeline, followers[2:3], send_at=later))

    response = client.post(
        "/admin/messaging/message/",
        {"action": "cancel_scheduled", "_selected_action": [scheduled.pk, queued.pk, in_campaign.pk]},
        follow=True,
    )

    shown = [str(message) for message in response.context["messages"]]
    assert shown == [
        "Cancelled 1 scheduled message.",
        "2 messages were not cancelled: only single messages still scheduled can be.",
    ]
    scheduled.refresh_from_db()
    assert (scheduled.status, scheduled.errmsg) == (Message.Status.FAILED, "Cancelled before its send time.")
    assert Message.objects.get(pk=in_campaign.pk).status == Message.Status.SCHEDULED
    assert Message.objects.get(pk=queued.pk).status != Message.Status.FAILED


def test_saving_new_quiet_hours_in_the_admin_replans(pipeline, sandbox_api, django_user_model, monkeypatch):
    quiet_now(pipeline)
    campaign_to(pipeline, sandbox_api.followers()[:1])
    replanned: list[int] = []
    monkeypatch.setattr(scheduling, "replan_quiet_hours", lambda account, now: replanned.append(account.pk) or 0)
    admin = django_user_model.objects.create_superuser("root", password="pw")
    client = english_client(admin)
    data = {
        "name": pipeline.name,
        "appid": pipeline.appid,
        "is_active": "on",
        "app_secret": "",
        "token_endpoint": pipeline.token_endpoint,
        "token": pipeline.token,
        "message_mode": pipeline.message_mode,
        "encoding_aes_key": "",
        "operators": [],
        "send_rate_limit": "",
        "time_zone": "Asia/Shanghai",
        "quiet_start": "",
        "quiet_end": "",
        "welcome_reply": "",
    }
    response = client.post(f"/admin/accounts/officialaccount/{pipeline.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert replanned == [pipeline.pk]
