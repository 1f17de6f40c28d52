"""The sandbox's simulated H5 subscribe popup: it changes WeChat's consent and pushes subscribe_msg_popup_event to
our live callback, whose ledger then agrees with the sandbox's; a send through bizsend spends the credit at both."""

from __future__ import annotations

import time

import pytest
import requests

from accounts.clients import wechat_client_for
from sandbox.demo import DEMO_APPID, DEMO_SUBSCRIPTION_TEMPLATES
from subscriptions.models import SubscriptionConsent
from subscriptions.selectors import REJECTED, consent_for
from subscriptions.services import consume_credit, zero_credits
from templates_app.services import sync_subscription_templates
from tests.factories import create_demo_account
from wxnotify.wechat.errors import ConsentError

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_cache")]

ONE_TIME = DEMO_SUBSCRIPTION_TEMPLATES[0]["pri_tmpl_id"]
LONG_TERM = DEMO_SUBSCRIPTION_TEMPLATES[1]["pri_tmpl_id"]
OPENID = "oPopupNonFollower0000000001"  # not a follower: subscription notifications reach them too


def popup(sandbox_api, *choices: tuple[str, str]) -> dict:
    response = requests.post(
        f"{sandbox_api.base_url}/sandbox/simulate/subscribe_popup",
        json={
            "appid": DEMO_APPID,
            "openid": OPENID,
            "templates": [{"priTmplId": pri, "status": status} for pri, status in choices],
        },
        timeout=10,
    )
    response.raise_for_status()
    return response.json()


def next_second() -> None:
    start = int(time.time())
    while int(time.time()) == start:
        time.sleep(0.02)


@pytest.mark.parametrize("mode", ["plaintext", "safe"])
def test_popup_round_trip_through_our_callback(sandbox_api, live_server, mode):
    account = create_demo_account(message_mode=mode)
    sandbox_api.update_account(DEMO_APPID, callback_url=f"{live_server.url}{account.callback_path()}", mode=mode)
    sync_subscription_templates(account)

    for _ in range(2):
        # A person takes more than a second per popup: the same choices within one second are one event to us
        # (WeChat's retries are recognised by sender, CreateTime and content).
        next_second()
        pushed = popup(sandbox_api, (ONE_TIME, "accept"), (LONG_TERM, "accept"))
        assert (pushed["status"], pushed["body"]) == (200, "success")
        assert "subscribe_msg_popup_event" in pushed["event"]
    row = SubscriptionConsent.objects.get(account=account, openid=OPENID, pri_tmpl_id=ONE_TIME)
    assert row.credits == 2
    assert SubscriptionConsent.objects.get(account=account, openid=OPENID, pri_tmpl_id=LONG_TERM).long_term
    assert {
        (held["template_id"], held["credits"], held["long_term"])
        for held in sandbox_api.state.credits(DEMO_APPID, OPENID)
    } == {
        (ONE_TIME, 2, False),
        (LONG_TERM, 0, True),
    }

    # A send WeChat accepts spends one credit at both ends.
    client = wechat_client_for(account)
    data = {
        "character_string1": "SO20261128001",
        "thing2": "机械键盘",
        "time3": "2026年11月28日 10:30",
        "phrase7": "已发货",
    }
    client.send_subscription_message(touser=OPENID, template_id=ONE_TIME, data=data)
    assert consume_credit(account, OPENID, ONE_TIME)
    assert SubscriptionConsent.objects.get(pk=row.pk).credits == 1

    # The user rejects in a popup: WeChat takes the credit away; our ledger refuses without asking it, and when a
    # send is tried anyway WeChat's 43101 zeroes our count.
    popup(sandbox_api, (ONE_TIME, "reject"))
    assert consent_for(account, OPENID, ONE_TIME).reason == REJECTED
    with pytest.raises(ConsentError):
        client.send_subscription_message(touser=OPENID, template_id=ONE_TIME, data=data)
    zero_credits(account, OPENID, ONE_TIME)
    assert SubscriptionConsent.objects.get(pk=row.pk).credits == 0

    # Accepting again works at both ends.
    next_second()
    popup(sandbox_api, (ONE_TIME, "accept"))
    assert consent_for(account, OPENID, ONE_TIME).can_send
    assert SubscriptionConsent.objects.get(pk=row.pk).credits == 1


def test_popup_with_an_unknown_template_changes_nothing(sandbox_api, live_server):
    account = create_demo_account(message_mode="safe")
    sandbox_api.update_account(DEMO_APPID, callback_url=f"{live_server.url}{account.callback_path()}")
    answer = popup(sandbox_api, (ONE_TIME, "accept"), ("no-such-template", "accept"))
    assert answer["errcode"] == 40037
    assert sandbox_api.state.credits(DEMO_APPID, OPENID) == []
    assert not SubscriptionConsent.objects.exists()
