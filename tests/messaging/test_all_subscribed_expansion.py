"""A campaign to every subscribed follower: accepted before its messages exist, then expanded by a task in chunks.

The task queue is replaced by a recording broker (``no_broker``): each test runs the expansion itself, the way a
worker (or a second, duplicate worker) would.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.utils import timezone

from accounts.models import Follower, OfficialAccount
from messaging import dispatch
from messaging.models import Campaign, Message
from messaging.selectors import campaign_progress
from messaging.services import (
    CANCELLED_REASON,
    MessageRejected,
    RecipientSpec,
    cancel_campaign,
    create_campaign,
    expand_all_subscribed,
    expansion,
)
from messaging.tasks import sweep_messages
from messaging.work import CampaignWork
from tests.factories import ORDER_DATA, ORDER_TEMPLATE

SUBSCRIBED = 7


@pytest.fixture
def followers(account_a: OfficialAccount) -> list[int]:
    """Seven subscribed followers of A (their ids, in order) and two who left."""
    Follower.objects.bulk_create(
        [Follower(account=account_a, openid=f"oSubscribed{n:017d}") for n in range(SUBSCRIBED)]
        + [Follower(account=account_a, openid=f"oLeft{n:023d}", subscribed=False) for n in range(2)]
    )
    return list(Follower.objects.filter(account=account_a, subscribed=True).order_by("pk").values_list("pk", flat=True))


@pytest.fixture
def chunks_of_three(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(expansion, "ALL_SUBSCRIBED_CHUNK_SIZE", 3)


def accept(account: OfficialAccount, capture: Any) -> Campaign:
    with capture(execute=True):
        return create_campaign(
            account=account, template_id=ORDER_TEMPLATE, data=ORDER_DATA, recipients=RecipientSpec.all_subscribed()
        )


def recipients(campaign: Campaign) -> list[int]:
    return list(Message.objects.filter(campaign=campaign).order_by("follower_id").values_list("follower_id", flat=True))


def test_acceptance_counts_the_subscribed_followers_and_leaves_the_messages_to_a_task(
    account_a, followers, no_broker, django_capture_on_commit_callbacks
):
    campaign = accept(account_a, django_capture_on_commit_callbacks)

    campaign.refresh_from_db()
    assert (campaign.state, campaign.recipient_count, campaign.expanded_through) == (
        Campaign.State.EXPANDING,
        SUBSCRIBED,
        None,
    )
    assert not Message.objects.filter(campaign=campaign).exists()
    assert no_broker == ["messaging.tasks.expand_campaign"]


def test_a_campaign_to_all_subscribed_with_nobody_subscribed_is_still_refused(account_a, no_broker):
    Follower.objects.create(account=account_a, openid="oLeft" + "0" * 23, subscribed=False)

    with pytest.raises(MessageRejected) as refused:
        create_campaign(
            account=account_a, template_id=ORDER_TEMPLATE, data=ORDER_DATA, recipients=RecipientSpec.all_subscribed()
        )

    assert "recipients" in refused.value.errors
    assert not Campaign.objects.exists()


def test_the_expansion_adds_each_subscribed_follower_once_in_chunks_and_starts_delivery_with_the_first(
    account_a, followers, no_broker, chunks_of_three, django_capture_on_commit_callbacks
):
    campaign = accept(account_a, django_capture_on_commit_callbacks)
    no_broker.clear()

    with django_capture_on_commit_callbacks(execute=True):
        added = expand_all_subscribed(campaign.pk)

    campaign.refresh_from_db()
    assert added == SUBSCRIBED
    assert recipients(campaign) == followers
    assert set(Message.objects.filter(campaign=campaign).values_list("status", flat=True)) == {Message.Status.QUEUED}
    assert (campaign.state, campaign.recipient_count) == (Campaign.State.RUNNING, SUBSCRIBED)
    # Delivery started after the first chunk (its engine key then stays up) and once more when the campaign runs.
    assert no_broker == ["messaging.tasks.dispatch_campaign", "messaging.tasks.dispatch_campaign"]
    assert cache.get(dispatch.campaign_engine_key(campaign.pk)) is not None
    assert cache.get(dispatch.campaign_expansion_key(campaign.pk)) is None


def test_a_second_task_or_a_restart_continues_where_the_last_chunk_stopped(
    account_a, followers, no_broker, chunks_of_three, django_capture_on_commit_callbacks
):
    campaign = accept(account_a, django_capture_on_commit_callbacks)
    assert expansion._expand_chunk(campaign.pk) == (True, 3)  # then the worker died

    assert expand_all_subscribed(campaign.pk) == SUBSCRIBED - 3
    assert expand_all_subscribed(campaign.pk) == 0

    assert recipients(campaign) == followers


def test_the_recipients_are_the_followers_of_the_moment_of_acceptance_and_the_count_says_what_was_added(
    account_a, followers, no_broker, chunks_of_three, django_capture_on_commit_callbacks
):
    """A paced expansion writes its last rows long after acceptance: who they go to was fixed then."""
    left = Follower.objects.get(account=account_a, openid=f"oLeft{0:023d}")
    campaign = accept(account_a, django_capture_on_commit_callbacks)
    expansion._expand_chunk(campaign.pk)
    late = Follower.objects.create(account=account_a, openid="oLate" + "0" * 23)
    Follower.objects.filter(pk=left.pk).update(subscribed=True, subscribed_at=timezone.now())
    Follower.objects.filter(pk=followers[-1]).update(subscribed=False)

    expand_all_subscribed(campaign.pk)

    campaign.refresh_from_db()
    assert campaign.recipients_through == late.pk - 1
    # Neither the newcomer nor the follower who came back after acceptance; the one who left is not sent to.
    assert recipients(campaign) == followers[:-1]
    assert campaign.recipient_count == SUBSCRIBED - 1


def test_a_campaign_accepted_before_the_bound_existed_still_expands_to_every_subscribed_follower(
    account_a, followers, no_broker, chunks_of_three, django_capture_on_commit_callbacks
):
    campaign = accept(account_a, django_capture_on_commit_callbacks)
    Campaign.objects.filter(pk=campaign.pk).update(recipients_through=None)
    late = Follower.objects.create(account=account_a, openid="oLate" + "0" * 23)

    expand_all_subscribed(campaign.pk)

    assert recipients(campaign) == [*followers, late.pk]


@pytest.fixture
def three_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of two, and the expansion pauses once three messages wait."""
    monkeypatch.setattr(expansion, "ALL_SUBSCRIBED_CHUNK_SIZE", 2)
    monkeypatch.setattr(expansion, "EXPANSION_AHEAD", 3)


def send(campaign: Campaign, count: int) -> list[Message]:
    """What delivery does to the campaign's next ``count`` queued messages, in id order (their status only)."""
    claimed = list(Message.objects.filter(campaign=campaign, status=Message.Status.QUEUED).order_by("pk")[:count])
    Message.objects.filter(pk__in=[m.pk for m in claimed]).update(status=Message.Status.SENT)
    return claimed


def paused(account: OfficialAccount, capture: Any) -> tuple[Campaign, CampaignWork]:
    """A campaign accepted and expanded until its expansion paused, and a delivery task's view of it."""
    campaign = accept(account, capture)
    expand_all_subscribed(campaign.pk)
    work = CampaignWork(campaign.pk)
    work.keep_alive()
    return campaign, work


def queued(campaign: Campaign) -> list[int]:
    return list(
        Message.objects.filter(campaign=campaign, status=Message.Status.QUEUED)
        .order_by("pk")
        .values_list("follower_id", flat=True)
    )


def test_the_expansion_stays_a_few_messages_ahead_of_delivery_which_restarts_it(
    account_a, followers, no_broker, three_ahead, django_capture_on_commit_callbacks
):
    campaign = accept(account_a, django_capture_on_commit_callbacks)
    no_broker.clear()

    # Two chunks of two, then three wait: it stops, leaving where delivery should restart it.
    assert expand_all_subscribed(campaign.pk) == 4
    campaign.refresh_from_db()
    assert (campaign.state, campaign.expanded_through) == (Campaign.State.EXPANDING, followers[3])
    resume_at = cache.get(dispatch.campaign_expansion_resume_key(campaign.pk))
    written = list(Message.objects.filter(campaign=campaign).order_by("pk").values_list("pk", flat=True))
    assert resume_at == written[1]
    assert cache.get(dispatch.campaign_expansion_key(campaign.pk)) is None
    # Restarted while three still wait (by the sweeper, say), it adds nothing and leaves the same point.
    assert expand_all_subscribed(campaign.pk) == 0
    # The progress counts the recipients not written yet as waiting.
    progress = campaign_progress(campaign)
    assert (progress.total, progress.counts[Message.Status.QUEUED]) == (SUBSCRIBED, SUBSCRIBED)

    work = CampaignWork(campaign.pk)
    work.keep_alive()
    no_broker.clear()
    work.claimed(send(campaign, 1), "")
    assert no_broker == []  # not there yet
    work.claimed(send(campaign, 1), "")
    assert no_broker == ["messaging.tasks.expand_campaign"]
    assert cache.get(dispatch.campaign_expansion_resume_key(campaign.pk)) is None

    # The restarted task adds a chunk (four wait again) and stops; once delivery has caught up, the last one.
    assert expand_all_subscribed(campaign.pk) == 2
    assert queued(campaign) == followers[2:6]
    send(campaign, 4)
    with django_capture_on_commit_callbacks(execute=True):
        assert expand_all_subscribed(campaign.pk) == 1
    campaign.refresh_from_db()
    assert (campaign.state, campaign.recipient_count) == (Campaign.State.RUNNING, SUBSCRIBED)
    assert recipients(campaign) == followers
    assert queued(campaign) == followers[6:]
    # The resume point of the last pause is gone with the expansion: no claim starts an expansion any more.
    assert cache.get(dispatch.campaign_expansion_resume_key(campaign.pk)) is None


def test_a_restart_finding_a_task_at_work_keeps_the_resume_point_for_the_next_claim(
    account_a, followers, no_broker, three_ahead, django_capture_on_commit_callbacks
):
    campaign, work = paused(account_a, django_capture_on_commit_callbacks)
    cache.set(dispatch.campaign_expansion_key(campaign.pk), 1)  # a task adding recipients just now
    no_broker.clear()

    work.claimed(send(campaign, 2), "")

    assert no_broker == []
    cache.delete(dispatch.campaign_expansion_key(campaign.pk))
    work.keep_alive()
    work.claimed(send(campaign, 1), "")
    assert no_broker == ["messaging.tasks.expand_campaign"]


def test_a_paused_expansion_whose_restart_was_lost_is_restarted_by_the_sweeper(
    account_a, followers, no_broker, three_ahead, django_capture_on_commit_callbacks
):
    campaign = accept(account_a, django_capture_on_commit_callbacks)
    expand_all_subscribed(campaign.pk)
    # The worker that would have restarted it died, and the resume point was lost with the cache.
    cache.clear()
    send(campaign, 4)
    no_broker.clear()

    assert sweep_messages()["dispatched_expansions"] == 1
    assert no_broker == ["messaging.tasks.expand_campaign"]
    assert expand_all_subscribed(campaign.pk) == SUBSCRIBED - 4
    assert recipients(campaign) == followers


def test_a_campaign_cancelled_while_its_expansion_waits_gets_nothing_more(
    account_a, followers, no_broker, three_ahead, django_capture_on_commit_callbacks
):
    campaign, work = paused(account_a, django_capture_on_commit_callbacks)

    assert cancel_campaign(campaign) == 4
    work.claimed([Message(pk=10**9)], "")  # a claim past the point (none can be claimed now)

    assert expand_all_subscribed(campaign.pk) == 0
    assert Message.objects.filter(campaign=campaign).count() == 4
    assert set(Message.objects.filter(campaign=campaign).values_list("errmsg", flat=True)) == {CANCELLED_REASON}
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.CANCELLED
    assert campaign_progress(campaign).total == 4


def test_a_scheduled_campaign_is_expanded_whole(
    account_a, followers, no_broker, three_ahead, django_capture_on_commit_callbacks
):
    campaign = accept(account_a, django_capture_on_commit_callbacks)
    Campaign.objects.filter(pk=campaign.pk).update(send_at=timezone.now() + timedelta(hours=1))
    Message.objects.filter(campaign=campaign).update(status=Message.Status.SCHEDULED)

    with django_capture_on_commit_callbacks(execute=True):
        assert expand_all_subscribed(campaign.pk) == SUBSCRIBED

    assert recipients(campaign) == followers


def test_a_cancelled_campaign_stops_growing(
    account_a, followers, no_broker, chunks_of_three, django_capture_on_commit_callbacks
):
    campaign = accept(account_a, django_capture_on_commit_callbacks)
    expansion._expand_chunk(campaign.pk)

    assert cancel_campaign(campaign) == 3
    assert expand_all_subscribed(campaign.pk) == 0

    assert set(Message.objects.filter(campaign=campaign).values_list("errmsg", flat=True)) == {CANCELLED_REASON}
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.CANCELLED


def test_a_task_out_of_time_hands_the_rest_to_a_fresh_one(
    account_a, followers, no_broker, chunks_of_three, monkeypatch, django_capture_on_commit_callbacks
):
    campaign = accept(account_a, django_capture_on_commit_callbacks)
    no_broker.clear()
    monkeypatch.setattr(expansion, "EXPANSION_TASK_SECONDS", 0.0)

    assert expand_all_subscribed(campaign.pk) == 3

    assert no_broker == ["messaging.tasks.dispatch_campaign", "messaging.tasks.expand_campaign"]
    campaign.refresh_from_db()
    assert (campaign.state, campaign.expanded_through) == (Campaign.State.EXPANDING, followers[2])


def test_the_sweeper_restarts_an_expansion_whose_task_was_lost(
    account_a, followers, no_broker, django_capture_on_commit_callbacks
):
    campaign = accept(account_a, django_capture_on_commit_callbacks)
    no_broker.clear()

    cache.set(dispatch.campaign_expansion_key(campaign.pk), 1)
    assert sweep_messages()["dispatched_expansions"] == 0
    cache.delete(dispatch.campaign_expansion_key(campaign.pk))
    assert sweep_messages()["dispatched_expansions"] == 1

    assert no_broker == ["messaging.tasks.expand_campaign"]
