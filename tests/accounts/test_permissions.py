"""Groups after migrate, who sees which accounts, and the admin boundary between two accounts' staff."""

from __future__ import annotations

from importlib import import_module
from types import SimpleNamespace

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Group
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.urls import reverse

from accounts.models import Follower, FollowerSync, OfficialAccount
from accounts.selectors import (
    ADMINS_GROUP,
    STAFF_GROUP,
    accounts_for_user,
    followers_for_user,
)

pytestmark = pytest.mark.django_db
SECRET_A = "a" * 32
SECRET_B = "b" * 32


def perms(group_name: str) -> set[str]:
    """The group's permissions on accounts, templates and consent (the messaging app adds its own sending ones)."""
    group = Group.objects.get(name=group_name)
    granted = group.permissions.filter(content_type__app_label__in=["accounts", "templates_app", "subscriptions"])
    return {f"{p.content_type.app_label}.{p.codename}" for p in granted.select_related("content_type")}


def test_groups_exist_with_expected_permissions_after_migrate():
    expected_admin = {
        f"{app}.{action}_{model}"
        for app, model in [
            ("accounts", "officialaccount"),
            ("accounts", "follower"),
            ("accounts", "followersync"),
            ("templates_app", "messagetemplate"),
        ]
        for action in ("add", "change", "view")
    }
    # Subscription templates (templates_app 0004): "delete" is the admin's delete at WeChat, the row stays.
    subscription = {f"templates_app.{action}_subscriptiontemplate" for action in ("add", "change", "delete", "view")}
    # The consent ledger (subscriptions 0002) is written by WeChat's events only: both groups view it.
    consent = "subscriptions.view_subscriptionconsent"
    assert perms(ADMINS_GROUP) == {*expected_admin, *subscription, consent, "accounts.view_accesstokenread"}
    assert perms(STAFF_GROUP) == {
        consent,
        "accounts.view_officialaccount",
        "accounts.view_follower",
        "templates_app.view_messagetemplate",
        "templates_app.view_subscriptiontemplate",
    }


def test_permission_migration_is_idempotent():
    migration = import_module("accounts.migrations.0003_permission_groups")
    state_apps = MigrationLoader(connection).project_state(("accounts", "0003_permission_groups")).apps
    before = (perms(ADMINS_GROUP), perms(STAFF_GROUP), Group.objects.count())
    migration.create_groups(state_apps, SimpleNamespace(connection=connection))
    assert (perms(ADMINS_GROUP), perms(STAFF_GROUP), Group.objects.count()) == before


@pytest.fixture
def two_accounts():
    a = OfficialAccount.objects.create(name="Shop A", appid="wxaaaaaaaaaaaaaaaa", app_secret=SECRET_A, token="ta")
    b = OfficialAccount.objects.create(name="Shop B", appid="wxbbbbbbbbbbbbbbbb", app_secret=SECRET_B, token="tb")
    Follower.objects.create(account=a, openid="oFollowerOfA")
    Follower.objects.create(account=b, openid="oFollowerOfB")
    FollowerSync.objects.create(account=a)
    FollowerSync.objects.create(account=b)
    return a, b


def make_user(username: str, *, group: str | None = None, superuser: bool = False, **extra):
    user_model = get_user_model()
    if superuser:
        return user_model.objects.create_superuser(username, password="pw")
    user = user_model.objects.create_user(username, password="pw", is_staff=True, **extra)
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


def test_accounts_for_user(two_accounts):
    a, b = two_accounts
    staff_a = make_user("staff_a", group=STAFF_GROUP)
    a.operators.add(staff_a)
    operator_without_group = make_user("loose")
    a.operators.add(operator_without_group)
    inactive_admin = make_user("gone", group=ADMINS_GROUP, is_active=False)

    assert set(accounts_for_user(make_user("root", superuser=True))) == {a, b}
    assert set(accounts_for_user(make_user("boss", group=ADMINS_GROUP))) == {a, b}
    assert list(accounts_for_user(staff_a)) == [a]
    assert list(accounts_for_user(make_user("staff_none", group=STAFF_GROUP))) == []
    assert list(accounts_for_user(operator_without_group)) == []
    assert list(accounts_for_user(inactive_admin)) == []
    assert list(accounts_for_user(AnonymousUser())) == []
    assert list(followers_for_user(staff_a).values_list("openid", flat=True)) == ["oFollowerOfA"]


def test_admin_boundary_between_accounts(client, two_accounts):
    a, b = two_accounts
    staff_a = make_user("staff_a", group=STAFF_GROUP)
    a.operators.add(staff_a)
    client.force_login(staff_a)

    changelist = client.get(reverse("admin:accounts_officialaccount_changelist"))
    assert changelist.status_code == 200
    assert "Shop A" in changelist.text and "Shop B" not in changelist.text
    assert client.get(reverse("admin:accounts_officialaccount_change", args=[a.pk])).status_code == 200
    assert client.get(reverse("admin:accounts_officialaccount_change", args=[b.pk])).status_code == 404
    assert client.get(reverse("admin:accounts_officialaccount_history", args=[b.pk])).status_code == 404

    followers = client.get(reverse("admin:accounts_follower_changelist"))
    assert "oFollowerOfA" in followers.text and "oFollowerOfB" not in followers.text
    assert "Shop B" not in followers.text  # the account filter lists only visible accounts
    follower_b = Follower.objects.get(openid="oFollowerOfB")
    assert client.get(reverse("admin:accounts_follower_change", args=[follower_b.pk])).status_code == 404

    syncs = client.get(reverse("admin:accounts_followersync_changelist"))
    assert syncs.status_code == 403  # business staff have no view permission on syncs
    sync_b = FollowerSync.objects.get(account=b)
    assert client.get(reverse("admin:accounts_followersync_change", args=[sync_b.pk])).status_code in {403, 404}


def test_read_only_staff_never_see_the_secret(client, two_accounts):
    a, _ = two_accounts
    staff_a = make_user("staff_a", group=STAFF_GROUP)
    a.operators.add(staff_a)
    client.force_login(staff_a)
    page = client.get(reverse("admin:accounts_officialaccount_change", args=[a.pk]))
    assert page.status_code == 200
    assert SECRET_A not in page.text
    assert 'name="app_secret"' not in page.text
    post = client.post(reverse("admin:accounts_officialaccount_change", args=[a.pk]), {"name": "Hijacked"})
    assert post.status_code == 403


def test_admin_group_sees_all_but_cannot_delete(client, two_accounts):
    _, b = two_accounts
    client.force_login(make_user("boss", group=ADMINS_GROUP))
    changelist = client.get(reverse("admin:accounts_officialaccount_changelist"))
    assert "Shop A" in changelist.text and "Shop B" in changelist.text
    assert client.get(reverse("admin:accounts_officialaccount_change", args=[b.pk])).status_code == 200
    assert client.get(reverse("admin:accounts_officialaccount_delete", args=[b.pk])).status_code == 403
