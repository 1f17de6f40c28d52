"""The consent ledger's services: credits added by popups and spent by sends, rejections, 43101, campaign counts."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from subscriptions.models import SubscriptionConsent
from subscriptions.selectors import NO_CREDIT, REJECTED, consent_for, count_with_credit
from subscriptions.services import consume_credit, record_change, record_popup, zero_credits
from templates_app.models import SubscriptionTemplate
from tests import factories

pytestmark = pytest.mark.django_db

OPENID = "oConsentUser000000000000001"
ONE_TIME = "one-time-template-0001"
LONG_TERM = "long-term-template-0001"


def accept(*ids: str) -> list[dict[str, str]]:
    return [{"TemplateId": pri_tmpl_id, "SubscribeStatusString": "accept", "PopupScene": "1"} for pri_tmpl_id in ids]


def reject(*ids: str) -> list[dict[str, str]]:
    return [{"TemplateId": pri_tmpl_id, "SubscribeStatusString": "reject"} for pri_tmpl_id in ids]


@pytest.fixture
def account():
    account = factories.create_demo_account()
    SubscriptionTemplate.objects.create(
        account=account, pri_tmpl_id=LONG_TERM, title="挂号提醒", type=SubscriptionTemplate.Type.LONG_TERM, content=""
    )
    return account


def row(account, pri_tmpl_id: str = ONE_TIME) -> SubscriptionConsent:
    return SubscriptionConsent.objects.get(account=account, openid=OPENID, pri_tmpl_id=pri_tmpl_id)


def test_each_accepted_popup_adds_a_credit_and_each_accepted_send_spends_one(account):
    assert consent_for(account, OPENID, ONE_TIME).reason == NO_CREDIT
    record_popup(account, OPENID, accept(ONE_TIME))
    record_popup(account, OPENID, accept(ONE_TIME))
    assert row(account).credits == 2
    assert consent_for(account, OPENID, ONE_TIME).can_send
    assert consume_credit(account, OPENID, ONE_TIME)
    assert consume_credit(account, OPENID, ONE_TIME)
    assert not consume_credit(account, OPENID, ONE_TIME)
    assert row(account).credits == 0
    assert consent_for(account, OPENID, ONE_TIME) == consent_for(account, OPENID, ONE_TIME).__class__(False, NO_CREDIT)


def test_long_term_accept_grants_without_credits_and_sends_do_not_spend_it(account):
    record_popup(account, OPENID, accept(LONG_TERM))
    assert row(account, LONG_TERM).long_term and row(account, LONG_TERM).credits == 0
    for _ in range(3):
        assert consume_credit(account, OPENID, LONG_TERM)
    assert consent_for(account, OPENID, LONG_TERM).can_send


def test_popup_with_accepts_and_rejects_applies_each_item_and_skips_odd_ones(account):
    items = [*accept(ONE_TIME), *reject("other-template-0001"), {"TemplateId": "", "SubscribeStatusString": "accept"}]
    items.append({"TemplateId": "x-template", "SubscribeStatusString": "maybe"})
    applied = record_popup(account, OPENID, items)
    assert [item.pri_tmpl_id for item in applied] == [ONE_TIME, "other-template-0001"]
    assert row(account).credits == 1
    refused = row(account, "other-template-0001")
    assert refused.rejected and refused.rejected_by == SubscriptionConsent.Source.POPUP and refused.rejected_at
    assert SubscriptionConsent.objects.count() == 2


def test_rejection_blocks_keeps_credits_and_reacceptance_restores(account):
    record_popup(account, OPENID, accept(ONE_TIME, LONG_TERM))
    record_change(account, OPENID, reject(ONE_TIME, LONG_TERM))
    refused = row(account)
    assert refused.rejected and refused.rejected_by == SubscriptionConsent.Source.CHANGE and refused.credits == 1
    assert consent_for(account, OPENID, ONE_TIME).reason == REJECTED
    assert consent_for(account, OPENID, LONG_TERM).reason == REJECTED
    assert count_with_credit(account, ONE_TIME, [OPENID]) == 0

    record_change(account, OPENID, accept(ONE_TIME, LONG_TERM))  # switched back on: no new credit
    assert row(account).credits == 1 and not row(account).rejected and row(account).rejected_at is None
    assert consent_for(account, OPENID, ONE_TIME).can_send
    assert consent_for(account, OPENID, LONG_TERM).can_send

    record_popup(account, OPENID, reject(ONE_TIME))
    record_popup(account, OPENID, accept(ONE_TIME))  # a new acceptance in the popup adds one
    assert row(account).credits == 2 and not row(account).rejected


def test_43101_zeroes_credits_and_grant(account):
    record_popup(account, OPENID, accept(ONE_TIME, ONE_TIME, LONG_TERM))
    assert row(account).credits == 2
    zero_credits(account, OPENID, ONE_TIME)
    zero_credits(account, OPENID, LONG_TERM)
    assert row(account).credits == 0 and not row(account, LONG_TERM).long_term
    assert not consent_for(account, OPENID, LONG_TERM).can_send
    zero_credits(account, "oNobodyKnown000000000000001", ONE_TIME)  # nothing to correct: no row appears
    assert SubscriptionConsent.objects.count() == 2


def test_count_with_credit_counts_sendable_recipients_once_per_account(account):
    other = factories.create_account_b()
    openids = [f"oCampaign{n:018d}" for n in range(5)]
    for openid in openids[:3]:
        record_popup(account, openid, accept(ONE_TIME))
    record_popup(other, openids[3], accept(ONE_TIME))
    record_popup(account, openids[4], reject(ONE_TIME))
    assert count_with_credit(account, ONE_TIME, [*openids, openids[0]]) == 3
    assert count_with_credit(account, LONG_TERM, openids) == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_consumption_spends_each_credit_once(account):
    """Threads spending the same credits at once: exactly as many succeed as there were credits (PostgreSQL runs
    them truly concurrently; SQLite serialises the writers)."""
    record_popup(account, OPENID, accept(*[ONE_TIME] * 5))
    spent: list[bool] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def spend() -> None:
        try:
            barrier.wait()
            result = consume_credit(account, OPENID, ONE_TIME)
            with lock:
                spent.append(result)
        finally:
            connection.close()

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(spent) == [False] * 3 + [True] * 5
    assert row(account).credits == 0
