"""Campaign approval (issue 14): an account's policy holds campaigns back until a wxnotify admin other than their
creator approves or rejects them, in the API, the console and the admin; nothing is sent before.

Most tests run the pipeline's tasks inline through ``django_capture_on_commit_callbacks(execute=True)`` or record
them with ``no_broker``; the ones that really send go to the sandbox.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission
from django.urls import reverse
from django.utils import timezone

from accounts.models import Follower, OfficialAccount
from accounts.selectors import ADMINS_GROUP
from messaging import rules, selectors
from messaging.delivery import run_delivery
from messaging.models import ApprovalPolicy, Campaign, Message
from messaging.services import (
    CANCELLED_REASON,
    REJECTED_REASON,
    ApprovalRefused,
    CampaignActionRefused,
    MessageRejected,
    RecipientSpec,
    approve_campaign,
    cancel_campaign,
    create_campaign,
    expand_all_subscribed,
    needs_approval,
    reject_campaign,
    retry_failed,
)
from messaging.sweeper import sweep
from messaging.work import CampaignWork
from operations.health import queue_lag_seconds
from sandbox.demo import DEMO_APPID, DEMO_TEMPLATES
from tests.factories import ORDER_DATA, ORDER_TEMPLATE, api_client_for, english_client

OTHER_TEMPLATE = DEMO_TEMPLATES[2]["template_id"]
OTHER_DATA = {"thing1": "巡检", "character_string2": "T-1", "time3": "2026年11月28日 10:30"}
CAMPAIGNS = "/api/v1/campaigns/"


def openids(count: int, prefix: str = "oApproval") -> list[str]:
    return [f"{prefix}{index:04d}" for index in range(count)]


def ensure_admins_group() -> Group:
    """The wxnotify admins group of the data migrations (re-created with its messaging and account permissions when
    a transactional test emptied the database)."""
    group, created = Group.objects.get_or_create(name=ADMINS_GROUP)
    if created:
        group.permissions.add(
            *Permission.objects.filter(content_type__app_label__in=["messaging", "accounts", "templates_app"])
        )
    return group


def make_admin(django_user_model: Any, name: str) -> Any:
    user = django_user_model.objects.create_user(name, password=f"pw-{name}", is_staff=True)
    user.groups.add(ensure_admins_group())
    return user


@pytest.fixture
def admin_one(django_user_model: Any, account_a: OfficialAccount) -> Any:
    return make_admin(django_user_model, "admin_one")


@pytest.fixture
def admin_two(django_user_model: Any, account_a: OfficialAccount) -> Any:
    return make_admin(django_user_model, "admin_two")


@pytest.fixture
def policy(account_a: OfficialAccount) -> ApprovalPolicy:
    """Campaigns of A to more than 3 recipients wait for approval."""
    return ApprovalPolicy.objects.create(account=account_a, recipient_threshold=3)


def start(account: OfficialAccount, recipients: RecipientSpec, capture: Any, *, by: Any = None, **fields: Any):
    """Accept a campaign the way the API does, with its on-commit work (delivery, expansion) run or recorded."""
    with capture(execute=True):
        return create_campaign(
            account=account,
            template_id=fields.pop("template_id", ORDER_TEMPLATE),
            data=fields.pop("data", ORDER_DATA),
            recipients=recipients,
            created_by=by,
            **fields,
        )


def statuses(campaign: Campaign) -> dict[str, int]:
    return {status: count for status, count in selectors.campaign_status_counts(campaign).items() if count}


# --- Which campaigns wait ----------------------------------------------------------------------------------------


def test_the_threshold_holds_back_only_campaigns_above_it(
    account_a, policy, staff_a, no_broker, django_capture_on_commit_callbacks
):
    at_threshold = start(account_a, RecipientSpec.openids(openids(3)), django_capture_on_commit_callbacks, by=staff_a)
    assert at_threshold.state == Campaign.State.RUNNING
    assert no_broker == ["messaging.tasks.dispatch_campaign"]

    above = start(
        account_a, RecipientSpec.openids(openids(4, "oAbove")), django_capture_on_commit_callbacks, by=staff_a
    )
    above.refresh_from_db()
    assert (above.state, above.recipient_count) == (Campaign.State.PENDING_APPROVAL, 4)
    # Accepted and recorded, nothing started.
    assert statuses(above) == {Message.Status.QUEUED: 4}
    assert no_broker == ["messaging.tasks.dispatch_campaign"]


def test_without_a_policy_or_with_every_rule_off_nothing_waits(account_a):
    template = account_a.templates.get(template_id=ORDER_TEMPLATE)
    assert not needs_approval(account_a.pk, template.pk, 1_000_000)
    ApprovalPolicy.objects.create(account=account_a)
    assert not needs_approval(account_a.pk, template.pk, 1_000_000)


def test_every_campaign_waits_when_the_policy_says_so(
    account_a, staff_a, no_broker, django_capture_on_commit_callbacks
):
    ApprovalPolicy.objects.create(account=account_a, every_campaign=True)

    campaign = start(account_a, RecipientSpec.openids(openids(1)), django_capture_on_commit_callbacks, by=staff_a)

    assert campaign.state == Campaign.State.PENDING_APPROVAL
    assert no_broker == []


def test_campaigns_of_listed_templates_wait_whatever_their_size(
    account_a, staff_a, no_broker, django_capture_on_commit_callbacks
):
    policy = ApprovalPolicy.objects.create(account=account_a, recipient_threshold=100)
    policy.templates.add(account_a.templates.get(template_id=ORDER_TEMPLATE))

    listed = start(account_a, RecipientSpec.openids(openids(1)), django_capture_on_commit_callbacks, by=staff_a)
    other = start(
        account_a,
        RecipientSpec.openids(openids(1)),
        django_capture_on_commit_callbacks,
        by=staff_a,
        template_id=OTHER_TEMPLATE,
        data=OTHER_DATA,
    )

    assert listed.state == Campaign.State.PENDING_APPROVAL
    assert other.state == Campaign.State.RUNNING


def test_another_accounts_policy_holds_nothing_back(
    account_a, account_b, staff_a, no_broker, django_capture_on_commit_callbacks
):
    ApprovalPolicy.objects.create(account=account_b, every_campaign=True)

    campaign = start(account_a, RecipientSpec.openids(openids(5)), django_capture_on_commit_callbacks, by=staff_a)

    assert campaign.state == Campaign.State.RUNNING


# --- Nothing is sent before approval ------------------------------------------------------------------------------


def test_a_waiting_campaigns_messages_are_never_claimed_nor_lag(
    account_a, policy, staff_a, no_broker, django_capture_on_commit_callbacks
):
    campaign = start(account_a, RecipientSpec.openids(openids(5)), django_capture_on_commit_callbacks, by=staff_a)
    now = timezone.now()

    assert not Message.objects.claimable(now).filter(campaign=campaign).exists()
    # A stray delivery task for the campaign (a duplicate, an old release's) claims nothing and sends nothing.
    assert run_delivery(CampaignWork(campaign.pk)).get("sent", 0) == 0
    # The sweeper starts nothing for it, and the health check's queue lag ignores its messages.
    result = sweep(now)
    assert (result["dispatched_campaigns"], result["campaigns_finished"]) == (0, 0)
    assert queue_lag_seconds(now + timedelta(hours=1)) == 0.0
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.PENDING_APPROVAL
    assert statuses(campaign) == {Message.Status.QUEUED: 5}


def test_a_waiting_campaign_is_not_retried(account_a, policy, staff_a, no_broker, django_capture_on_commit_callbacks):
    unsubscribed = Follower.objects.create(account=account_a, openid="oLeftAlready0001", subscribed=False)
    campaign = start(
        account_a,
        RecipientSpec.openids([*openids(4), unsubscribed.openid]),
        django_capture_on_commit_callbacks,
        by=staff_a,
    )
    assert statuses(campaign) == {Message.Status.QUEUED: 4, Message.Status.FAILED: 1}
    assert not rules.can_retry(campaign, 1)

    with pytest.raises(CampaignActionRefused):
        retry_failed(campaign)

    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.PENDING_APPROVAL
    assert statuses(campaign) == {Message.Status.QUEUED: 4, Message.Status.FAILED: 1}


def test_an_all_subscribed_campaign_waits_unexpanded_and_sends_only_after_approval(
    account_a, policy, staff_a, admin_two, no_broker, django_capture_on_commit_callbacks
):
    Follower.objects.bulk_create(
        [Follower(account=account_a, openid=f"oEveryone{index:04d}") for index in range(5)]
        + [Follower(account=account_a, openid="oGoneAway0000", subscribed=False)]
    )
    campaign = start(account_a, RecipientSpec.all_subscribed(), django_capture_on_commit_callbacks, by=staff_a)
    campaign.refresh_from_db()
    assert (campaign.state, campaign.recipient_count) == (Campaign.State.PENDING_APPROVAL, 5)
    assert no_broker == []

    # An expansion task that runs anyway (a duplicate, the sweeper) adds nobody to a waiting campaign, and the
    # sweeper starts no expansion for it.
    assert expand_all_subscribed(campaign.pk) == 0
    assert sweep()["dispatched_expansions"] == 0
    assert not Message.objects.filter(campaign=campaign).exists()

    with django_capture_on_commit_callbacks(execute=True):
        approve_campaign(campaign, by=admin_two)
    assert campaign.state == Campaign.State.EXPANDING
    assert no_broker == ["messaging.tasks.expand_campaign"]

    assert expand_all_subscribed(campaign.pk) == 5
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.RUNNING
    assert Message.objects.claimable(timezone.now()).filter(campaign=campaign).count() == 5


# --- Deciding -----------------------------------------------------------------------------------------------------


@pytest.fixture
def waiting(account_a, policy, admin_one, no_broker, django_capture_on_commit_callbacks) -> Campaign:
    """A campaign of 5 openids created by admin_one, waiting for approval."""
    return start(account_a, RecipientSpec.openids(openids(5)), django_capture_on_commit_callbacks, by=admin_one)


def test_the_creator_may_not_decide_on_their_campaign_even_as_an_admin(waiting, admin_one, english):
    assert not rules.can_decide(admin_one, waiting)
    with pytest.raises(ApprovalRefused, match="other than the one who created it"):
        approve_campaign(waiting, by=admin_one)
    with pytest.raises(ApprovalRefused):
        reject_campaign(waiting, by=admin_one, note="no")

    waiting.refresh_from_db()
    assert (waiting.state, waiting.decided_by, waiting.decided_at) == (Campaign.State.PENDING_APPROVAL, None, None)


def test_business_staff_may_not_decide(waiting, staff_a, english):
    assert not rules.can_decide(staff_a, waiting)
    with pytest.raises(ApprovalRefused, match="wxnotify admins"):
        approve_campaign(waiting, by=staff_a)


def test_approval_starts_delivery_and_records_the_decision(
    waiting, admin_two, no_broker, django_capture_on_commit_callbacks
):
    assert rules.can_decide(admin_two, waiting)

    with django_capture_on_commit_callbacks(execute=True):
        approve_campaign(waiting, by=admin_two, note="  looks right  ")

    waiting.refresh_from_db()
    assert waiting.state == Campaign.State.RUNNING
    assert (waiting.decided_by, waiting.decision_note) == (admin_two, "looks right")
    assert waiting.decided_at is not None
    assert no_broker == ["messaging.tasks.dispatch_campaign"]
    assert Message.objects.claimable(timezone.now()).filter(campaign=waiting).count() == 5
    # Decided once: a second decision is refused.
    with pytest.raises(CampaignActionRefused):
        reject_campaign(waiting, by=admin_two, note="too late")


def test_rejection_needs_a_note_then_fails_every_message_with_the_reason(waiting, admin_two, no_broker, english):
    with pytest.raises(MessageRejected) as refused:
        reject_campaign(waiting, by=admin_two, note="   ")
    assert "note" in refused.value.errors

    assert reject_campaign(waiting, by=admin_two, note="Wrong audience.") == 5

    waiting.refresh_from_db()
    assert (waiting.state, waiting.decision_note, waiting.decided_by) == (
        Campaign.State.REJECTED,
        "Wrong audience.",
        admin_two,
    )
    assert statuses(waiting) == {Message.Status.FAILED: 5}
    assert set(Message.objects.filter(campaign=waiting).values_list("errmsg", flat=True)) == {REJECTED_REASON}
    assert all(Message.objects.filter(campaign=waiting).values_list("finished_at", flat=True))
    assert no_broker == []
    with pytest.raises(CampaignActionRefused):
        approve_campaign(waiting, by=admin_two)
    with pytest.raises(CampaignActionRefused):
        retry_failed(waiting)


# --- With a send time (scheduled sends) ---------------------------------------------------------------------------


@pytest.fixture
def waiting_for_tomorrow(account_a, policy, admin_one, no_broker, django_capture_on_commit_callbacks) -> Campaign:
    """A campaign of 5 openids for tomorrow, created by admin_one, waiting for approval."""
    return start(
        account_a,
        RecipientSpec.openids(openids(5)),
        django_capture_on_commit_callbacks,
        by=admin_one,
        send_at=timezone.now() + timedelta(days=1),
    )


def test_approval_before_the_send_time_leaves_the_campaign_scheduled_not_sending(
    waiting_for_tomorrow, admin_two, no_broker, django_capture_on_commit_callbacks
):
    campaign = waiting_for_tomorrow
    assert campaign.state == Campaign.State.PENDING_APPROVAL
    assert statuses(campaign) == {Message.Status.SCHEDULED: 5}

    with django_capture_on_commit_callbacks(execute=True):
        approve_campaign(campaign, by=admin_two)

    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.SCHEDULED
    assert "messaging.tasks.dispatch_campaign" not in no_broker
    assert statuses(campaign) == {Message.Status.SCHEDULED: 5}
    assert not Message.objects.claimable(timezone.now()).filter(campaign=campaign).exists()


def test_approval_after_the_send_time_passed_sends_at_once(
    waiting_for_tomorrow, admin_two, no_broker, django_capture_on_commit_callbacks
):
    campaign = waiting_for_tomorrow
    past = timezone.now() - timedelta(minutes=1)
    Campaign.objects.filter(pk=campaign.pk).update(send_at=past)
    Message.objects.filter(campaign=campaign).update(send_at=past, next_attempt_at=past)
    campaign.refresh_from_db()

    with django_capture_on_commit_callbacks(execute=True):
        approve_campaign(campaign, by=admin_two)

    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.RUNNING
    assert "messaging.tasks.dispatch_campaign" in no_broker


def test_rejecting_a_scheduled_campaign_fails_its_scheduled_messages(waiting_for_tomorrow, admin_two, english):
    assert reject_campaign(waiting_for_tomorrow, by=admin_two, note="Not tomorrow.") == 5
    assert statuses(waiting_for_tomorrow) == {Message.Status.FAILED: 5}
    assert set(Message.objects.filter(campaign=waiting_for_tomorrow).values_list("errmsg", flat=True)) == {
        REJECTED_REASON
    }


def test_a_waiting_campaign_can_be_cancelled_and_then_not_decided(waiting, admin_two):
    assert rules.can_cancel(waiting)

    assert cancel_campaign(waiting) == 5

    waiting.refresh_from_db()
    assert waiting.state == Campaign.State.CANCELLED
    assert set(Message.objects.filter(campaign=waiting).values_list("errmsg", flat=True)) == {CANCELLED_REASON}
    with pytest.raises(CampaignActionRefused):
        approve_campaign(waiting, by=admin_two)


def test_the_campaigns_waiting_for_a_user_are_those_they_may_decide(waiting, admin_one, admin_two, staff_a):
    assert list(selectors.campaigns_awaiting_decision_by(admin_two)) == [waiting]
    assert not selectors.campaigns_awaiting_decision_by(admin_one).exists()
    assert not selectors.campaigns_awaiting_decision_by(staff_a).exists()
    assert list(selectors.approvers_of(waiting)) == [admin_two]


# --- The API ------------------------------------------------------------------------------------------------------


def test_api_approve_and_reject_refuse_the_creator_and_staff_with_403(waiting, admin_one, staff_a):
    for user in (admin_one, staff_a):
        client = api_client_for(user)
        for action in ("approve", "reject"):
            response = client.post(f"{CAMPAIGNS}{waiting.pk}/{action}/", {"note": "x"}, format="json")
            assert response.status_code == 403, response.content
            assert response.json()["code"] == "permission_denied"
    assert (
        "other than the one who created it"
        in api_client_for(admin_one).post(f"{CAMPAIGNS}{waiting.pk}/approve/", {}, format="json").json()["detail"]
    )
    waiting.refresh_from_db()
    assert waiting.state == Campaign.State.PENDING_APPROVAL


def test_api_reject_needs_a_note_and_the_creator_then_reads_it(waiting, admin_one, admin_two):
    client = api_client_for(admin_two)
    missing = client.post(f"{CAMPAIGNS}{waiting.pk}/reject/", {}, format="json")
    assert missing.status_code == 400
    assert missing.json()["errors"]["note"]

    response = client.post(f"{CAMPAIGNS}{waiting.pk}/reject/", {"note": "Not this week."}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["state"], body["decided_by"], body["decision_note"]) == ("rejected", "admin_two", "Not this week.")
    assert body["counts"]["failed"] == 5

    seen_by_creator = api_client_for(admin_one).get(f"{CAMPAIGNS}{waiting.pk}/").json()
    assert (seen_by_creator["state"], seen_by_creator["decision_note"]) == ("rejected", "Not this week.")
    assert client.post(f"{CAMPAIGNS}{waiting.pk}/approve/", {}, format="json").status_code == 409


def test_api_lists_campaigns_waiting_for_approval_by_state(waiting, admin_two):
    client = api_client_for(admin_two)
    listed = client.get(CAMPAIGNS, {"state": "pending_approval"}).json()["results"]
    assert [item["id"] for item in listed] == [waiting.pk]
    assert listed[0]["decided_by"] is None


@pytest.mark.django_db(transaction=True)
def test_api_campaign_waits_then_is_sent_once_approved(django_user_model, followers_a, sandbox_api, staff_a):
    """End to end, committed like production: accepted pending (nothing reaches the sandbox), approved, sent."""
    account = followers_a[0].account
    ApprovalPolicy.objects.create(account=account, every_campaign=True)
    approver = make_admin(django_user_model, "approver")
    recipients = [follower.openid for follower in followers_a[:3]]

    created = api_client_for(staff_a).post(
        CAMPAIGNS,
        {
            "account": DEMO_APPID,
            "template_id": ORDER_TEMPLATE,
            "data": ORDER_DATA,
            "recipients": {"openids": recipients},
        },
        format="json",
    )
    assert created.status_code == 202, created.content
    assert (created.json()["state"], created.json()["recipient_count"]) == ("pending_approval", 3)
    assert sandbox_api.messages() == []

    approved = api_client_for(approver).post(f"{CAMPAIGNS}{created.json()['id']}/approve/", {}, format="json")
    assert approved.status_code == 200, approved.content

    detail = api_client_for(staff_a).get(f"{CAMPAIGNS}{created.json()['id']}/").json()
    assert (detail["state"], detail["counts"]["sent"], detail["decided_by"]) == ("done", 3, "approver")
    assert sorted(item["touser"] for item in sandbox_api.messages()) == sorted(recipients)


# --- The console --------------------------------------------------------------------------------------------------


def test_console_send_says_the_campaign_waits_and_starts_nothing(
    account_a, staff_a, admin_two, no_broker, django_capture_on_commit_callbacks
):
    ApprovalPolicy.objects.create(account=account_a, every_campaign=True)
    body = {
        "account": account_a.appid,
        "template": account_a.templates.get(template_id=ORDER_TEMPLATE).pk,
        "action": "send",
        "link_kind": "none",
        "recipient_kind": Campaign.RecipientKind.OPENIDS,
        "recipient_list": "\n".join(openids(2)),
        **{f"kw_{name}": value for name, value in ORDER_DATA.items()},
    }

    with django_capture_on_commit_callbacks(execute=True):
        response = english_client(staff_a).post(reverse("console:compose"), body, follow=True)

    page = response.content.decode()
    assert "It waits for approval by a member of wxnotify admins" in page
    assert 'id="approvers">admin_two<' in page
    assert Campaign.objects.get().state == Campaign.State.PENDING_APPROVAL
    assert no_broker == []


def test_console_shows_the_creator_the_wait_and_who_can_approve_without_a_form(waiting, admin_one, admin_two):
    page = english_client(admin_one).get(reverse("console:campaign", args=[waiting.pk])).content.decode()
    assert "Pending approval" in page
    assert 'id="approvers">admin_two<' in page
    assert 'id="decision-form"' not in page


def test_console_approver_approves_and_the_creator_sees_the_note(
    waiting, admin_one, admin_two, django_capture_on_commit_callbacks
):
    client = english_client(admin_two)
    page = client.get(reverse("console:campaign", args=[waiting.pk])).content.decode()
    assert 'id="decision-form"' in page

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("console:campaign-approve", args=[waiting.pk]), {"note": "Go ahead."}, follow=True
        )
    assert "Campaign approved" in response.content.decode()
    waiting.refresh_from_db()
    assert waiting.state == Campaign.State.RUNNING

    creator_page = english_client(admin_one).get(reverse("console:campaign", args=[waiting.pk])).content.decode()
    assert "Approved" in creator_page
    assert "Go ahead." in creator_page


def test_console_refuses_the_creator_and_a_rejection_without_a_note(waiting, admin_one, admin_two):
    refused = english_client(admin_one).post(
        reverse("console:campaign-approve", args=[waiting.pk]), {"note": ""}, follow=True
    )
    assert "other than the one who created it" in refused.content.decode()

    no_note = english_client(admin_two).post(
        reverse("console:campaign-reject", args=[waiting.pk]), {"note": ""}, follow=True
    )
    assert "Say why the campaign is rejected." in no_note.content.decode()
    waiting.refresh_from_db()
    assert waiting.state == Campaign.State.PENDING_APPROVAL

    rejected = english_client(admin_two).post(
        reverse("console:campaign-reject", args=[waiting.pk]), {"note": "Duplicate of #1."}, follow=True
    )
    assert "Campaign rejected: 5 message(s) will not be sent." in rejected.content.decode()
    creator_page = english_client(admin_one).get(reverse("console:campaign", args=[waiting.pk])).content.decode()
    assert "Duplicate of #1." in creator_page
    assert "Its campaign was rejected at approval" in creator_page


def test_console_history_leads_admins_to_the_campaigns_waiting_for_them(waiting, admin_one, admin_two):
    history = reverse("console:history")
    page = english_client(admin_two).get(history).content.decode()
    assert "1 campaign waits for your approval." in page

    mine = english_client(admin_two).get(history, {"awaiting_me": "on"}).content.decode()
    assert reverse("console:campaign", args=[waiting.pk]) in mine
    assert "waits for your approval" not in english_client(admin_one).get(history).content.decode()
    theirs = english_client(admin_one).get(history, {"awaiting_me": "on"}).content.decode()
    assert reverse("console:campaign", args=[waiting.pk]) not in theirs


# --- The admin ----------------------------------------------------------------------------------------------------


def _admin_action(client: Any, action: str, campaign: Campaign, **extra: str) -> Any:
    return client.post(
        reverse("admin:messaging_campaign_changelist"),
        {"action": action, "_selected_action": [campaign.pk], **extra},
        follow=True,
    )


def test_admin_reject_asks_for_a_note_first_then_rejects(waiting, admin_two):
    client = english_client(admin_two)
    page = _admin_action(client, "reject_selected", waiting)
    assert page.templates[0].name == "admin/messaging/campaign/decide.html"
    assert waiting.name in page.content.decode() or str(waiting) in page.content.decode()

    again = _admin_action(client, "reject_selected", waiting, confirm="yes", note="")
    assert again.templates[0].name == "admin/messaging/campaign/decide.html"
    assert "This field is required." in again.content.decode()
    waiting.refresh_from_db()
    assert waiting.state == Campaign.State.PENDING_APPROVAL

    done = _admin_action(client, "reject_selected", waiting, confirm="yes", note="Out of season.")
    assert "1 campaign rejected." in done.content.decode()
    waiting.refresh_from_db()
    assert (waiting.state, waiting.decision_note) == (Campaign.State.REJECTED, "Out of season.")


def test_admin_approval_by_the_creator_is_refused_with_a_message(waiting, admin_one):
    response = _admin_action(english_client(admin_one), "approve_selected", waiting, confirm="yes", note="")
    assert "other than the one who created it" in response.content.decode()
    waiting.refresh_from_db()
    assert waiting.state == Campaign.State.PENDING_APPROVAL


def test_admin_approves_and_shows_the_decision_read_only(waiting, admin_two, django_capture_on_commit_callbacks):
    client = english_client(admin_two)
    with django_capture_on_commit_callbacks(execute=True):
        response = _admin_action(client, "approve_selected", waiting, confirm="yes", note="")
    assert "1 campaign approved." in response.content.decode()
    waiting.refresh_from_db()
    assert (waiting.state, waiting.decided_by) == (Campaign.State.RUNNING, admin_two)

    change = client.get(reverse("admin:messaging_campaign_change", args=[waiting.pk])).content.decode()
    assert "Approved or rejected by" in change
    assert "admin_two" in change
    pending_filter = client.get(reverse("admin:messaging_campaign_changelist"), {"state__exact": "pending_approval"})
    assert pending_filter.status_code == 200


def test_business_staff_get_no_approval_actions_in_the_admin(waiting, staff_a):
    staff_a.is_staff = True
    staff_a.save()
    page = english_client(staff_a).get(reverse("admin:messaging_campaign_changelist")).content.decode()
    assert "approve_selected" not in page
    assert "reject_selected" not in page


def test_admin_policy_refuses_templates_of_another_account(account_a, account_b, admin_two):
    response = english_client(admin_two).post(
        reverse("admin:messaging_approvalpolicy_add"),
        {
            "account": account_a.pk,
            "recipient_threshold": "100",
            "templates": [account_b.templates.get().pk],
        },
    )
    assert response.status_code == 200
    assert "not the account" in response.content.decode()
    assert not ApprovalPolicy.objects.exists()

    saved = english_client(admin_two).post(
        reverse("admin:messaging_approvalpolicy_add"),
        {
            "account": account_a.pk,
            "recipient_threshold": "100",
            "templates": [account_a.templates.get(template_id=ORDER_TEMPLATE).pk],
        },
    )
    assert saved.status_code == 302
    policy = ApprovalPolicy.objects.get(account=account_a)
    assert (policy.recipient_threshold, list(policy.templates.values_list("template_id", flat=True))) == (
        100,
        [ORDER_TEMPLATE],
    )
