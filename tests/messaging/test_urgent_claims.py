"""The urgent claims every delivery task makes: what they may take, stated index-friendly, and how often they look.

``claimable_retries`` and ``claimable_singles`` must take exactly the rows ``claimable`` takes with the same filter
(they only drop a condition those rows meet anyway), and a task busy with a campaign looks for urgent work at most
once a poll while it finds none.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from accounts.models import OfficialAccount
from messaging import delivery
from messaging.delivery import DeliveryRun
from messaging.models import Campaign, Message
from tests.factories import ORDER_DATA, ORDER_TEMPLATE


def _message(account: OfficialAccount, name: str, **fields: Any) -> Message:
    template = account.templates.get(template_id=ORDER_TEMPLATE)
    return Message.objects.create(
        account=account,
        template=template,
        template_id_sent=template.template_id,
        touser=f"o{name:0>27}",
        client_msg_id=f"urgent-{name}",
        data=ORDER_DATA,
        **fields,
    )


@pytest.mark.django_db
def test_the_urgent_candidates_are_the_claimable_messages_of_their_kind(account_a):
    now = timezone.now()
    long_ago = now - timedelta(hours=1)
    campaign = Campaign.objects.create(
        account=account_a, template=account_a.templates.get(template_id=ORDER_TEMPLATE), data=ORDER_DATA
    )
    waiting = Campaign.objects.create(
        account=account_a,
        template=campaign.template,
        data=ORDER_DATA,
        state=Campaign.State.PENDING_APPROVAL,
    )
    rows = {
        "new single": _message(account_a, "1"),
        "single due": _message(account_a, "2", next_attempt_at=now - timedelta(seconds=1)),
        "single not due": _message(account_a, "3", next_attempt_at=now + timedelta(minutes=1)),
        "single past window": _message(account_a, "4", outcome_unknown_since=long_ago),
        "single in window": _message(account_a, "5", outcome_unknown_since=now),
        "single sending": _message(account_a, "6", status=Message.Status.SENDING),
        "campaign new": _message(account_a, "7", campaign=campaign),
        "campaign due": _message(account_a, "8", campaign=campaign, next_attempt_at=now - timedelta(seconds=1)),
        "waiting campaign due": _message(account_a, "9", campaign=waiting, next_attempt_at=now),
    }
    assert set(rows.values()) >= set(Message.objects.claimable(now).filter(campaign__isnull=False))

    claimable = Message.objects.claimable(now)
    assert set(Message.objects.claimable_singles(now)) == set(
        claimable.filter(campaign__isnull=True, next_attempt_at__isnull=True)
    )
    assert set(Message.objects.claimable_singles(now)) == {rows["new single"], rows["single in window"]}
    assert set(Message.objects.claimable_retries(now)) == set(claimable.filter(next_attempt_at__isnull=False))
    assert set(Message.objects.claimable_retries(now)) == {rows["single due"], rows["campaign due"]}


def test_a_busy_task_looks_for_urgent_work_at_most_once_a_poll_while_it_finds_none(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(delivery.time, "monotonic", lambda: clock[0])
    found = [0, 3, 0, 0]
    looked: list[float] = []

    def claim_urgent() -> int:
        looked.append(clock[0])
        return found[len(looked) - 1]

    run = DeliveryRun.__new__(DeliveryRun)  # only the throttle's state: no database, no pools
    run.urgent_found_none_at = None
    monkeypatch.setattr(run, "_claim_urgent", claim_urgent)

    for step in (0.0, 0.05, 0.1, 0.15, 0.2, 0.21, 0.22, 0.3, 0.42):
        clock[0] = 100.0 + step
        run._claim_urgent_in_time()

    # Nothing at 0.0: next look a poll later (0.2), which finds work, so it looks again at once (0.21) and finds
    # nothing: the next look waits until 0.41.
    assert looked == [100.0, 100.2, 100.21, 100.42]
    assert delivery.POLL_SECONDS == 0.2
