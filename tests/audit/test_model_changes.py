"""Model changes recorded by django-auditlog into the audit log: which fields, by whom, from where, never a secret."""

from __future__ import annotations

from io import StringIO

import pytest
from auditlog.registry import auditlog
from django.apps import apps
from django.contrib.auth.models import Group, Permission, User
from django.core.management import call_command
from django.urls import reverse

from accounts.fields import EncryptedTextField
from accounts.models import OfficialAccount
from audit.context import MASK, acting_as
from audit.models import AuditLogEntry
from audit.tracked import TRACKED_MODELS
from sandbox.demo import DEMO_APPID
from tests.audit.entries import entries, stored_row
from tests.factories import api_client_for
from webhooks.models import Endpoint

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]

SECRET = "5ec7e75ec7e75ec7e75ec7e75ec7e700"
NEW_SECRET = "0123456789abcdef0123456789abcdef"
TOKEN = "wxnotifydemo"
AES_KEY = "DemoKeyDemoKeyDemoKeyDemoKeyDemoKeyDemoKey1"


@pytest.fixture
def account() -> OfficialAccount:
    return OfficialAccount.objects.create(
        name="Demo", appid=DEMO_APPID, app_secret=SECRET, token=TOKEN, message_mode="safe", encoding_aes_key=AES_KEY
    )


def account_form(**overrides: str) -> dict[str, str]:
    data = {
        "name": "Demo",
        "appid": DEMO_APPID,
        "is_active": "on",
        "app_secret": "",
        "token_endpoint": "stable",
        "token": TOKEN,
        "message_mode": "safe",
        "encoding_aes_key": "",
        "send_rate_limit": "",
        "time_zone": "Asia/Shanghai",
    }
    return {**data, **overrides}


def account_changes(account: OfficialAccount) -> list[AuditLogEntry]:
    return entries(content_type__model="officialaccount", object_pk=str(account.pk), action=AuditLogEntry.Action.UPDATE)


def test_every_secret_field_of_a_tracked_model_is_masked():
    """A new encrypted field (or a tracked model with one) that nobody listed in mask_fields fails here."""
    for options in TRACKED_MODELS:
        model = apps.get_model(options["model"])
        assert auditlog.contains(model)
        encrypted = {field.name for field in model._meta.fields if isinstance(field, EncryptedTextField)}
        assert encrypted <= set(options.get("mask_fields", [])), options["model"]
    assert {"token", "encoding_aes_key"} <= set(TRACKED_MODELS[0]["mask_fields"])


def test_account_changed_in_the_admin_names_the_fields_and_never_a_secret(admin_client, admin_user, account):
    url = reverse("admin:accounts_officialaccount_change", args=[account.pk])

    response = admin_client.post(
        url, account_form(name="Renamed", app_secret=NEW_SECRET, token="newcallbacktoken"), REMOTE_ADDR="10.1.2.3"
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    [entry] = account_changes(account)
    assert set(entry.changes) == {"name", "app_secret", "token"}
    assert entry.changes["name"] == ["Demo", "Renamed"]
    assert entry.changes["app_secret"] == [MASK, MASK]
    assert entry.changes["token"] == [MASK, MASK]
    assert (entry.actor, entry.actor_name, entry.remote_addr) == (admin_user, "admin", "10.1.2.3")
    row = stored_row(entry)
    for secret in (SECRET, NEW_SECRET, TOKEN, "newcallbacktoken", AES_KEY):
        assert secret not in row


def test_saving_an_account_without_changes_records_nothing(admin_client, account):
    response = admin_client.post(reverse("admin:accounts_officialaccount_change", args=[account.pk]), account_form())
    assert response.status_code == 302
    assert account_changes(account) == []


def test_account_created_by_the_command_is_recorded_as_the_command(monkeypatch):
    monkeypatch.setenv("WECHAT_APP_SECRET", SECRET)
    monkeypatch.setenv("WECHAT_CALLBACK_TOKEN", TOKEN)
    monkeypatch.setenv("WECHAT_ENCODING_AES_KEY", AES_KEY)

    call_command("add_official_account", "--appid", DEMO_APPID, "--mode", "safe", stdout=StringIO())

    [entry] = entries(content_type__model="officialaccount", action=AuditLogEntry.Action.CREATE)
    assert (entry.actor, entry.actor_name, entry.remote_addr) == (None, "manage.py add_official_account", None)
    assert entry.changes["app_secret"][1] == MASK
    assert entry.changes["encoding_aes_key"][1] == MASK
    assert entry.changes["appid"][1] == DEMO_APPID
    assert "last_error_message" not in entry.changes and "updated_at" not in entry.changes
    row = stored_row(entry)
    assert SECRET not in row and TOKEN not in row and AES_KEY not in row


def test_operators_added_and_removed_are_recorded(account, django_user_model):
    alice = django_user_model.objects.create_user("alice")
    account.operators.add(alice)
    account.operators.remove(alice)
    added, removed = entries(content_type__model="officialaccount", changes__operators__type="m2m")
    assert added.changes["operators"] == {"type": "m2m", "operation": "add", "objects": ["alice"]}
    assert removed.changes["operators"]["operation"] == "delete"


def test_users_groups_and_memberships_are_recorded_never_a_password_hash(django_user_model):
    group = Group.objects.create(name="auditors")
    with acting_as("test"):
        user = django_user_model.objects.create_user("bob", password="first-password")
    user.set_password("second-password")
    user.save()
    user.groups.add(group)
    group.permissions.add(Permission.objects.get(codename="view_officialaccount"))
    user.is_staff = True
    user.save()

    user_entries = entries(content_type__model="user", object_pk=str(user.pk))
    created, password, membership, staff = user_entries
    assert created.action == AuditLogEntry.Action.CREATE and created.actor_name == "test"
    assert created.changes["password"][1] == MASK
    assert password.changes == {"password": [MASK, MASK]}
    assert membership.changes["groups"] == {"type": "m2m", "operation": "add", "objects": ["auditors"]}
    assert staff.changes == {"is_staff": ["False", "True"]}
    for entry in user_entries:
        assert User.objects.get(pk=user.pk).password not in stored_row(entry)
        assert "pbkdf2" not in stored_row(entry) and "md5$" not in stored_row(entry)
    [created_group, permissions] = entries(content_type__model="group", object_pk=str(group.pk))
    assert created_group.changes["name"] == ["None", "auditors"]
    assert permissions.changes["permissions"]["operation"] == "add"


def test_a_sign_in_is_no_change_of_the_user(client, django_user_model):
    """Sign-ins (last_login) are django-axes' record, not the audit log's."""
    django_user_model.objects.create_user("carol", password="pw-carol", is_staff=True)
    before = AuditLogEntry.objects.count()
    assert client.post(reverse("admin:login"), {"username": "carol", "password": "pw-carol"}).status_code == 302
    assert AuditLogEntry.objects.count() == before


def test_deleting_a_user_keeps_their_name_on_their_entries(admin_client, admin_user, account, django_user_model):
    admin_client.post(reverse("admin:accounts_officialaccount_change", args=[account.pk]), account_form(name="X"))
    [entry] = account_changes(account)
    target = django_user_model.objects.create_user("dave")
    target_pk = target.pk
    target.delete()
    admin_user.delete()
    entry = AuditLogEntry.objects.get(pk=entry.pk)
    assert (entry.actor, entry.actor_name) == (None, "admin")
    [deleted] = entries(content_type__model="user", object_pk=str(target_pk), action=AuditLogEntry.Action.DELETE)
    assert deleted.object_repr == "dave"


def test_webhook_secret_changed_through_the_api_by_its_token_user(account_a, staff_a):
    api = api_client_for(staff_a)
    body = {
        "account": account_a.appid,
        "url": "https://orders.example.com/hooks",
        "secret": "first-long-secret!!",
        "event_types": ["message.sent"],
    }
    created = api.post("/api/v1/webhooks/", body, format="json", REMOTE_ADDR="10.9.8.7")
    assert created.status_code == 201, created.json()
    endpoint_id = created.json()["id"]
    response = api.patch(
        f"/api/v1/webhooks/{endpoint_id}/", {"secret": "second-long-secret!"}, format="json", REMOTE_ADDR="10.9.8.7"
    )
    assert response.status_code == 200

    created, changed = entries(content_type__model="endpoint", object_pk=str(endpoint_id))
    assert created.changes["secret"] == ["", MASK]
    assert changed.changes == {"secret": [MASK, MASK]}
    for entry in (created, changed):
        assert (entry.actor, entry.actor_name, entry.remote_addr) == (staff_a, "staff_a", "10.9.8.7")
        assert "first-long-secret" not in stored_row(entry) and "second-long-secret" not in stored_row(entry)
    assert Endpoint.objects.get(pk=endpoint_id).secret == "second-long-secret!"
