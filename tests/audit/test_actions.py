"""The actions django-auditlog cannot see, recorded by ``audit.services.record``: who (the API token's user, the admin
user, the command), from which address, what."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from accounts.models import Follower, OfficialAccount
from accounts.selectors import ADMINS_GROUP
from audit.models import AuditEvent, AuditLogEntry
from messaging.models import ApprovalPolicy, Campaign, Message, SendingCap
from sandbox.demo import DEMO_APPID, DEMO_TEMPLATES
from templates_app.models import MessageTemplate, TemplateSync
from tests.audit.entries import entries, events, stored_row
from tests.factories import ORDER_DATA, ORDER_TEMPLATE, api_client_for, create_demo_account
from wxnotify import encryption
from wxnotify.wechat.tokens import default_token_manager

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]

CAMPAIGNS = "/api/v1/campaigns/"
CLIENT_ADDRESS = "10.20.30.40"


@pytest.fixture
def api_a(staff_a: Any) -> Any:
    return api_client_for(staff_a)


@pytest.fixture
def openids(account_a: OfficialAccount) -> list[str]:
    followers = [f"oAuditFollower{n:014d}" for n in range(3)]
    for openid in followers:
        Follower.objects.create(account=account_a, openid=openid, subscribed_at=timezone.now())
    return followers


def create_campaign(api: Any, openids: list[str], **overrides: Any) -> Any:
    body = {
        "account": DEMO_APPID,
        "template_id": ORDER_TEMPLATE,
        "data": ORDER_DATA,
        "recipients": {"openids": openids},
    }
    return api.post(CAMPAIGNS, {**body, **overrides}, format="json", REMOTE_ADDR=CLIENT_ADDRESS)


# --- campaigns through the API: the token's user and the client's address -------------------------------------------


def test_campaign_created_cancelled_and_retried_through_the_api(api_a, staff_a, account_a, openids):
    response = create_campaign(api_a, openids)
    assert response.status_code == 202, response.json()
    campaign = Campaign.objects.get(pk=response.json()["id"])
    assert api_a.post(f"{CAMPAIGNS}{campaign.pk}/cancel/", REMOTE_ADDR=CLIENT_ADDRESS).status_code == 200

    [created] = events(AuditEvent.CAMPAIGN_CREATED)
    [cancelled] = events(AuditEvent.CAMPAIGN_CANCELLED)
    assert created.additional_data == {
        "account": DEMO_APPID,
        "template": ORDER_TEMPLATE,
        "recipients": "openids",
        "recipient_count": 3,
    }
    assert created.action == AuditLogEntry.Action.CREATE
    assert cancelled.additional_data == {"cancelled_messages": 3}
    for entry in (created, cancelled):
        assert (entry.actor, entry.actor_name, entry.remote_addr) == (staff_a, "staff_a", CLIENT_ADDRESS)
        assert (entry.content_type.model, entry.object_pk) == ("campaign", str(campaign.pk))
        assert entry.cid  # the request's trace id


def test_campaign_retry_is_recorded_with_its_counts(api_a, staff_a, account_a, openids):
    campaign = Campaign.objects.create(
        account=account_a,
        template=account_a.templates.get(template_id=ORDER_TEMPLATE),
        data={key: {"value": value} for key, value in ORDER_DATA.items()},
        recipient_kind=Campaign.RecipientKind.OPENIDS,
        recipient_count=1,
        state=Campaign.State.DONE,
    )
    Message.objects.create(
        account=campaign.account,
        template=campaign.template,
        campaign=campaign,
        touser=openids[0],
        client_msg_id=f"c{campaign.pk}-1",
        status=Message.Status.FAILED,
        errcode=-1,
    )
    response = api_a.post(f"{CAMPAIGNS}{campaign.pk}/retry-failed/", REMOTE_ADDR=CLIENT_ADDRESS)
    assert response.status_code == 202, response.json()

    [retried] = events(AuditEvent.CAMPAIGN_RETRIED)
    assert retried.additional_data == {"retried": 1, "left_unknown": 0, "include_unknown": False}
    assert (retried.actor, retried.remote_addr) == (staff_a, CLIENT_ADDRESS)


def test_a_refused_campaign_leaves_no_entry(api_a, account_a, openids):
    response = create_campaign(api_a, openids, data={"thing2": "x" * 100})
    assert response.status_code == 400
    assert events(AuditEvent.CAMPAIGN_CREATED) == []


def test_django_auditlogs_own_middleware_would_lose_the_api_user(settings, api_a, account_a, openids):
    """Why audit.context.AuditMiddleware exists: the library's middleware reads the user before DRF authenticates
    the token, so API calls were recorded without their user."""
    settings.MIDDLEWARE = [
        "auditlog.middleware.AuditlogMiddleware" if name == "audit.context.AuditMiddleware" else name
        for name in settings.MIDDLEWARE
    ]
    assert create_campaign(api_a, openids).status_code == 202
    [created] = events(AuditEvent.CAMPAIGN_CREATED)
    assert created.actor is None


def test_a_forged_forwarded_address_is_not_recorded(api_a, account_a, openids):
    """Not behind our proxy, X-Forwarded-For is the client's own claim: the peer's address is recorded."""
    body = {
        "account": DEMO_APPID,
        "template_id": ORDER_TEMPLATE,
        "data": ORDER_DATA,
        "recipients": {"openids": openids},
    }
    response = api_a.post(CAMPAIGNS, body, format="json", REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="6.6.6.6")
    assert response.status_code == 202
    [created] = events(AuditEvent.CAMPAIGN_CREATED)
    assert created.remote_addr == "10.0.0.5"


# --- template syncs: from the admin (its user) and from the command (the command) ------------------------------------


@pytest.fixture
def synced_account(sandbox_api: Any) -> OfficialAccount:
    return create_demo_account()


def test_template_sync_from_the_admin_is_recorded_as_its_user(admin_client, admin_user, synced_account):
    start = reverse("admin:templates_app_templatesync_start") + f"?account={synced_account.pk}"
    response = admin_client.post(start, {"account": [synced_account.pk]}, REMOTE_ADDR=CLIENT_ADDRESS)
    assert response.status_code == 302

    [synced] = events(AuditEvent.TEMPLATES_SYNCED)
    run = TemplateSync.objects.get()
    assert synced.additional_data == {
        "sync": run.pk,
        "source": "admin",
        "status": "done",
        "created": len(DEMO_TEMPLATES),
        "updated": 0,
        "deactivated": 0,
        "reactivated": 0,
    }
    assert (synced.actor, synced.actor_name, synced.remote_addr) == (admin_user, "admin", CLIENT_ADDRESS)
    assert (synced.content_type.model, synced.object_pk) == ("officialaccount", str(synced_account.pk))
    created = entries(content_type__model="messagetemplate", action=AuditLogEntry.Action.CREATE)
    assert len(created) == len(DEMO_TEMPLATES)
    assert {entry.actor_name for entry in created} == {"admin"}


def test_template_sync_by_the_command_is_recorded_as_the_command(synced_account, wechat_sandbox):
    call_command("sync_templates", stdout=StringIO())
    wechat_sandbox.state.upsert_account({"appid": DEMO_APPID, "templates": DEMO_TEMPLATES[:1]})
    call_command("sync_templates", "--appid", DEMO_APPID, stdout=StringIO())

    first, second = events(AuditEvent.TEMPLATES_SYNCED)
    assert second.additional_data["deactivated"] == len(DEMO_TEMPLATES) - 1
    for entry in (first, second):
        assert (entry.actor, entry.actor_name, entry.remote_addr) == (None, "manage.py sync_templates", None)
        assert entry.additional_data["source"] == "command"
    deactivated = entries(content_type__model="messagetemplate", action=AuditLogEntry.Action.UPDATE)
    assert len(deactivated) == len(DEMO_TEMPLATES) - 1
    assert all(set(entry.changes) == {"is_active", "removed_at"} for entry in deactivated)
    assert MessageTemplate.objects.filter(is_active=True).count() == 1


def test_a_failed_template_sync_is_recorded_with_its_error(synced_account):
    synced_account.app_secret = "0" * 32
    synced_account.save()
    default_token_manager().forget(synced_account.appid)
    with pytest.raises(Exception, match="failed"):
        call_command("sync_templates", stdout=StringIO(), stderr=StringIO())
    [failed] = events(AuditEvent.TEMPLATES_SYNCED)
    assert failed.additional_data["status"] == "failed"
    assert failed.additional_data["error"]
    assert "0" * 32 not in stored_row(failed)


# --- secrets re-encrypted by the rotation commands -------------------------------------------------------------------


def test_key_rotation_records_each_account_and_endpoint_it_moved(settings, account_a, staff_a):
    from webhooks.models import Endpoint

    old_key, new_key = settings.WXNOTIFY_ENCRYPTION_KEYS[0], encryption.generate_key()
    endpoint = Endpoint.objects.create(
        owner=staff_a, account=account_a, url="https://example.com/h", secret="s" * 20, event_types=["message.sent"]
    )
    settings.WXNOTIFY_ENCRYPTION_KEYS = [new_key, old_key]

    call_command("rotate_app_secrets", stdout=StringIO())
    call_command("rotate_webhook_secrets", stdout=StringIO())
    call_command("rotate_app_secrets", stdout=StringIO())  # nothing left to move: no entry

    moved_account, moved_endpoint = events(AuditEvent.SECRETS_REENCRYPTED)
    assert (moved_account.content_type.model, moved_account.object_pk) == ("officialaccount", str(account_a.pk))
    assert moved_account.additional_data == {"fields": ["app_secret"]}
    assert moved_account.actor_name == "manage.py rotate_app_secrets"
    assert (moved_endpoint.content_type.model, moved_endpoint.object_pk) == ("endpoint", str(endpoint.pk))
    assert moved_endpoint.actor_name == "manage.py rotate_webhook_secrets"
    assert account_a.app_secret not in stored_row(moved_account)


def test_a_rotation_check_records_nothing(settings, account_a):
    settings.WXNOTIFY_ENCRYPTION_KEYS = [encryption.generate_key(), *settings.WXNOTIFY_ENCRYPTION_KEYS]
    with pytest.raises(Exception, match="still under an older key"):
        call_command("rotate_app_secrets", "--check", stdout=StringIO())
    assert events(AuditEvent.SECRETS_REENCRYPTED) == []


# --- token reads -----------------------------------------------------------------------------------------------------


def test_a_token_read_is_recorded_without_the_token(account_a, django_user_model, sandbox_api):
    from django.contrib.auth.models import Group

    from accounts.models import AccessTokenRead
    from accounts.selectors import TOKEN_READERS_GROUP

    reader = django_user_model.objects.create_user("billing-service")
    reader.groups.add(Group.objects.get(name=TOKEN_READERS_GROUP))
    account_a.operators.add(reader)
    default_token_manager().forget(DEMO_APPID)

    response = api_client_for(reader).get(f"/api/v1/accounts/{DEMO_APPID}/access-token/", REMOTE_ADDR=CLIENT_ADDRESS)

    assert response.status_code == 200, response.json()
    [read] = events(AuditEvent.TOKEN_READ)
    assert read.action == AuditLogEntry.Action.ACCESS
    assert (read.actor, read.remote_addr) == (reader, CLIENT_ADDRESS)
    assert read.additional_data["read"] == AccessTokenRead.objects.get().pk
    assert read.additional_data["min_ttl"] == 300
    assert response.json()["access_token"] not in stored_row(read)


# --- approval and the sending rules -----------------------------------------------------------------------------------


def test_approval_and_rejection_are_recorded_with_the_deciding_admin_and_note(api_a, account_a, openids):
    ApprovalPolicy.objects.create(account=account_a, every_campaign=True)
    admin = User.objects.create_user("approver", is_staff=True)
    admin.groups.add(Group.objects.get(name=ADMINS_GROUP))
    approver = api_client_for(admin)
    first = create_campaign(api_a, openids).json()["id"]
    second = create_campaign(api_a, openids, name="second").json()["id"]

    address = {"REMOTE_ADDR": CLIENT_ADDRESS}
    approved = approver.post(f"{CAMPAIGNS}{first}/approve/", {"note": "fine"}, format="json", **address)
    rejected = approver.post(f"{CAMPAIGNS}{second}/reject/", {"note": "no"}, format="json", **address)

    assert (approved.status_code, rejected.status_code) == (200, 200)
    [approval] = events(AuditEvent.CAMPAIGN_APPROVED)
    [rejection] = events(AuditEvent.CAMPAIGN_REJECTED)
    assert (approval.object_pk, approval.additional_data) == (str(first), {"note": "fine"})
    assert (rejection.object_pk, rejection.additional_data) == (str(second), {"note": "no"})
    for entry in (approval, rejection):
        assert (entry.actor, entry.actor_name, entry.remote_addr) == (admin, "approver", CLIENT_ADDRESS)


def test_sending_rule_changes_are_recorded(account_a):
    cap = SendingCap.objects.create(account=account_a, limit=3)
    cap.limit = 5
    cap.save()
    policy = ApprovalPolicy.objects.create(account=account_a, recipient_threshold=100)
    policy.templates.add(MessageTemplate.objects.filter(account=account_a).first())

    cap_changes = entries(content_type__model="sendingcap", object_pk=str(cap.pk))
    assert [entry.action for entry in cap_changes] == [AuditLogEntry.Action.CREATE, AuditLogEntry.Action.UPDATE]
    assert cap_changes[1].changes_dict["limit"] == ["3", "5"]
    policy_changes = entries(content_type__model="approvalpolicy", object_pk=str(policy.pk))
    assert policy_changes[0].action == AuditLogEntry.Action.CREATE
    assert any("templates" in entry.changes_dict for entry in policy_changes[1:])
