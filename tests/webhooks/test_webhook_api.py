"""``/api/v1/webhooks/`` and the admin's webhook pages: each client's own endpoints, a write-only secret, scoping,
the delivery log and its replay."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.factories import api_client_for, create_staff
from webhooks.delivery import fan_out
from webhooks.models import Delivery, Endpoint, Event

URL = "/api/v1/webhooks/"
SECRET = "a-long-random-shared-secret"


@pytest.fixture(autouse=True)
def _debug(settings):
    settings.DEBUG = True


@pytest.fixture
def api_a(staff_a):
    return api_client_for(staff_a)


@pytest.fixture
def api_b(staff_b):
    return api_client_for(staff_b)


def register(client, owned, **overrides):
    body = {
        "account": owned.appid,
        "url": "https://orders.example.com/hooks/wxnotify",
        "secret": SECRET,
        "event_types": ["message.failed", "message.sent"],
        **overrides,
    }
    return client.post(URL, body, format="json")


def test_a_client_registers_an_endpoint_and_never_sees_its_secret_again(api_a, account_a, staff_a):
    response = register(api_a, account_a)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert "secret" not in body
    assert body["account"] == account_a.appid
    assert body["event_types"] == ["message.sent", "message.failed"]
    endpoint = Endpoint.objects.get(pk=body["id"])
    assert (endpoint.owner, endpoint.secret, endpoint.active) == (staff_a, SECRET, True)
    listed = api_a.get(URL).json()
    assert [item["id"] for item in listed["results"]] == [endpoint.pk]
    assert SECRET not in str(listed)
    assert SECRET not in str(api_a.get(f"{URL}{endpoint.pk}/").json())


def test_changing_without_a_secret_keeps_it_and_a_new_one_replaces_it(api_a, account_a):
    endpoint_id = register(api_a, account_a).json()["id"]
    assert api_a.patch(f"{URL}{endpoint_id}/", {"active": False}, format="json").status_code == 200
    assert Endpoint.objects.get(pk=endpoint_id).secret == SECRET
    api_a.patch(f"{URL}{endpoint_id}/", {"secret": "another-long-secret!"}, format="json")
    assert Endpoint.objects.get(pk=endpoint_id).secret == "another-long-secret!"
    assert api_a.delete(f"{URL}{endpoint_id}/").status_code == 204
    assert not Endpoint.objects.filter(pk=endpoint_id).exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"url": "http://orders.example.com/hook"}, "url"),
        ({"url": "https://u:p@orders.example.com/hook"}, "url"),
        ({"secret": "short"}, "secret"),
        ({"event_types": []}, "event_types"),
        ({"event_types": ["message.read"]}, "event_types"),
        ({"account": "wx0000000000000000"}, "account"),
    ],
)
def test_invalid_registrations_name_the_field(api_a, account_a, overrides, field):
    response = register(api_a, account_a, **overrides)
    assert response.status_code == 400
    assert field in response.json()["errors"]


def test_other_accounts_and_other_clients_endpoints_do_not_exist(
    api_a, api_b, account_a, account_b, staff_a, django_user_model, staff_group
):
    assert register(api_a, account_b).status_code == 400
    endpoint_id = register(api_a, account_a).json()["id"]
    colleague = create_staff(django_user_model, "colleague", staff_group, account_a)
    for other in (api_b, api_client_for(colleague)):
        assert other.get(URL).json()["results"] == []
        assert other.get(f"{URL}{endpoint_id}/").status_code == 404
        assert other.delete(f"{URL}{endpoint_id}/").status_code == 404
    account_a.operators.remove(staff_a)
    assert api_a.get(f"{URL}{endpoint_id}/").status_code == 404


def test_without_the_permissions_the_api_answers_403(account_a, django_user_model):
    outsider = django_user_model.objects.create_user("outsider")
    account_a.operators.add(outsider)
    client = api_client_for(outsider)
    assert client.get(URL).status_code == 403
    assert register(client, account_a).status_code == 403


@pytest.fixture
def deliveries(account_a, account_b, staff_a, staff_b):
    """One delivered event on an endpoint of each account."""
    now = timezone.now()
    for account, owner in ((account_a, staff_a), (account_b, staff_b)):
        Endpoint.objects.create(
            owner=owner, account=account, url="https://x.example.com/", secret=SECRET, event_types=["message.sent"]
        )
        Event.objects.create(kind="message.sent", account=account, message_id=7, occurred_at=now)
    fan_out(now=now)
    Delivery.objects.update(state=Delivery.State.DELIVERED, attempts=1, delivered_at=now, latency_ms=12)
    return {delivery.endpoint.account_id: delivery for delivery in Delivery.objects.select_related("endpoint")}


def test_the_delivery_log_is_scoped_and_read_only_for_staff(client, staff_a, account_a, deliveries):
    client.force_login(staff_a)
    staff_a.is_staff = True
    staff_a.save()
    page = client.get(reverse("admin:webhooks_delivery_changelist"), HTTP_ACCEPT_LANGUAGE="en")
    assert page.status_code == 200
    assert [d.pk for d in page.context["cl"].result_list] == [deliveries[account_a.pk].pk]
    assert page.context["action_form"] is None  # no replay without change_delivery
    other = next(d for account_id, d in deliveries.items() if account_id != account_a.pk)
    assert client.get(reverse("admin:webhooks_delivery_change", args=[other.pk])).status_code == 404
    endpoints = client.get(reverse("admin:webhooks_endpoint_changelist"))
    assert [e.account_id for e in endpoints.context["cl"].result_list] == [account_a.pk]
    assert (
        SECRET
        not in client.get(
            reverse("admin:webhooks_endpoint_change", args=[deliveries[account_a.pk].endpoint_id])
        ).content.decode()
    )


def test_replay_sends_a_delivery_again_with_its_event_id(admin_client, deliveries, account_a, monkeypatch):
    nudged: list[bool] = []
    monkeypatch.setattr("webhooks.admin.nudge_workers", lambda: nudged.append(True))
    chosen = deliveries[account_a.pk]
    response = admin_client.post(
        reverse("admin:webhooks_delivery_changelist"),
        {"action": "replay_deliveries", "_selected_action": [chosen.pk]},
        HTTP_ACCEPT_LANGUAGE="en",
        follow=True,
    )
    assert "1 delivery will be sent again." in response.content.decode()
    chosen.refresh_from_db()
    assert chosen.state == Delivery.State.PENDING
    assert chosen.retry_until > timezone.now()
    assert chosen.event_id == deliveries[account_a.pk].event_id
    assert nudged == [True]
    assert Delivery.objects.filter(state=Delivery.State.PENDING).count() == 1
