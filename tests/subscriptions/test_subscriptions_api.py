"""``GET /api/v1/subscriptions/``: a user's credits and rejections, scoped to the caller's accounts."""

from __future__ import annotations

import pytest

from accounts.models import Follower
from subscriptions.services import record_popup
from tests import factories

pytestmark = pytest.mark.django_db

OPENID = "oApiConsent0000000000000001"
TEMPLATE = "api-one-time-template-0001"


def popup(account, openid: str, status: str = "accept", times: int = 1) -> None:
    record_popup(account, openid, [{"TemplateId": TEMPLATE, "SubscribeStatusString": status}] * times)


@pytest.fixture
def accounts():
    return factories.create_demo_account(), factories.create_account_b()


def test_lists_a_users_credits_and_rejections_of_the_callers_account(accounts, django_user_model):
    own, other = accounts
    group = factories.ensure_staff_group()
    staff = factories.create_staff(django_user_model, "api-staff", group, own)
    popup(own, OPENID, times=2)
    popup(own, "oApiRefuser0000000000000001", "reject")
    popup(other, OPENID, times=5)
    Follower.objects.create(account=own, openid=OPENID)
    client = factories.api_client_for(staff)

    response = client.get("/api/v1/subscriptions/", {"account": own.appid, "openid": OPENID})
    assert response.status_code == 200
    [row] = response.json()["results"]
    assert row["account"] == own.appid and row["template"] == TEMPLATE
    assert (row["credits"], row["long_term"], row["rejected"], row["follower"]) == (2, False, False, True)

    refused = client.get("/api/v1/subscriptions/", {"rejected": "true"}).json()["results"]
    assert [(r["openid"], r["rejected_by"], r["follower"]) for r in refused] == [
        ("oApiRefuser0000000000000001", "popup", False)
    ]
    # The other account's rows do not exist for this caller, filtered by its AppID or not.
    assert client.get("/api/v1/subscriptions/", {"account": other.appid}).json()["results"] == []
    assert len(client.get("/api/v1/subscriptions/").json()["results"]) == 2
    other_id = other.subscription_consents.get().pk
    assert client.get(f"/api/v1/subscriptions/{other_id}/").status_code == 404


def test_needs_the_view_permission_and_is_read_only(accounts, django_user_model):
    own, _other = accounts
    nobody = django_user_model.objects.create_user("no-perms")
    own.operators.add(nobody)
    assert factories.api_client_for(nobody).get("/api/v1/subscriptions/").status_code == 403
    staff = factories.create_staff(django_user_model, "api-staff", factories.ensure_staff_group(), own)
    # Nobody holds add_subscriptionconsent (WeChat's events write the ledger): a POST is refused.
    assert factories.api_client_for(staff).post("/api/v1/subscriptions/", {}, format="json").status_code == 403
