"""The official account admin for a superuser: secret handling, callback settings, actions against the sandbox."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from accounts.models import Follower, FollowerSync, OfficialAccount
from sandbox.demo import DEMO_APPID

# Assertions read the English source strings (the shared ``english`` fixture).
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


DEMO_SECRET = "5ec7e75ec7e75ec7e75ec7e75ec7e700"
AES_KEY = "DemoKeyDemoKeyDemoKeyDemoKeyDemoKeyDemoKey1"


@pytest.fixture
def admin_client(client):
    client.force_login(get_user_model().objects.create_superuser("root", password="pw"))
    return client


@pytest.fixture
def account(settings) -> OfficialAccount:
    settings.WXNOTIFY_PUBLIC_BASE_URL = "https://push.example.com"
    return OfficialAccount.objects.create(
        name="Demo",
        appid=DEMO_APPID,
        app_secret=DEMO_SECRET,
        token="wxnotifydemo",
        message_mode="safe",
        encoding_aes_key=AES_KEY,
    )


def form_data(**overrides) -> dict[str, str]:
    data = {
        "name": "Demo",
        "appid": DEMO_APPID,
        "is_active": "on",
        "app_secret": "",
        "token_endpoint": "stable",
        "token": "wxnotifydemo",
        "message_mode": "safe",
        "encoding_aes_key": "",
        "send_rate_limit": "",
        "time_zone": "Asia/Shanghai",
    }
    data.update(overrides)
    return data


def run_action(admin_client, action: str, account: OfficialAccount):
    return admin_client.post(
        reverse("admin:accounts_officialaccount_changelist"),
        {"action": action, "_selected_action": [account.pk]},
        follow=True,
    )


def page_messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_change_page_shows_callback_settings_and_never_the_secrets(admin_client, account):
    page = admin_client.get(reverse("admin:accounts_officialaccount_change", args=[account.pk]))
    assert page.status_code == 200
    assert f"https://push.example.com/wechat/callback/{DEMO_APPID}/" in page.text
    assert "wxnotifydemo" in page.text
    assert DEMO_SECRET not in page.text and AES_KEY not in page.text
    assert 'type="password" name="app_secret"' in page.text
    assert "Replace AppSecret" in page.text


def test_blank_secret_keeps_it_and_a_new_one_replaces_it(admin_client, account):
    url = reverse("admin:accounts_officialaccount_change", args=[account.pk])
    response = admin_client.post(url, form_data(name="Renamed"))
    assert response.status_code == 302, response.context["adminform"].form.errors
    account.refresh_from_db()
    assert (account.name, account.app_secret, account.encoding_aes_key) == ("Renamed", DEMO_SECRET, AES_KEY)

    new_secret = "0123456789abcdef0123456789abcdef"
    assert admin_client.post(url, form_data(app_secret=new_secret)).status_code == 302
    account.refresh_from_db()
    assert account.app_secret == new_secret


def test_add_requires_secret_and_aes_key_in_safe_mode(admin_client):
    url = reverse("admin:accounts_officialaccount_add")
    assert admin_client.get(url).status_code == 200
    response = admin_client.post(url, form_data())
    errors = response.context["adminform"].form.errors
    assert "app_secret" in errors and "encoding_aes_key" in errors
    response = admin_client.post(url, form_data(app_secret=DEMO_SECRET, encoding_aes_key=AES_KEY))
    assert response.status_code == 302
    assert OfficialAccount.objects.get(appid=DEMO_APPID).app_secret == DEMO_SECRET


def test_changelist_columns(admin_client, account):
    account.operators.add(get_user_model().objects.create_user("op"))
    FollowerSync.objects.create(account=account, status="running", processed=10_000, total=25_000)
    page = admin_client.get(reverse("admin:accounts_officialaccount_changelist"))
    assert page.status_code == 200
    assert "running (10000/25000)" in page.text
    assert DEMO_SECRET not in page.text
    searched = admin_client.get(reverse("admin:accounts_officialaccount_changelist"), {"q": "deadbeef"})
    assert "Demo" in searched.text


def test_test_connection_ok_and_wrong_secret_in_words(admin_client, account, sandbox_api):
    response = run_action(admin_client, "test_connection", account)
    assert page_messages(response) == [f"{account}: OK"]
    assert "access_token" not in response.text

    account.app_secret = "0" * 32
    account.save()
    response = run_action(admin_client, "test_connection", account)
    [message] = page_messages(response)
    assert message.startswith(f"{account}: WeChat error 40125: invalid appsecret")
    assert "0" * 32 not in response.text
    account.refresh_from_db()
    assert account.last_error_code == 40125


def test_test_connection_classic_uses_the_token_manager(admin_client, account, sandbox_api):
    account.token_endpoint = "classic"
    account.save()
    assert page_messages(run_action(admin_client, "test_connection", account)) == [f"{account}: OK"]
    assert page_messages(run_action(admin_client, "test_connection", account)) == [f"{account}: OK"]
    # The second check reused the cached token: one classic fetch, so no token of anyone else was invalidated.
    assert sandbox_api.counters()["token_fetches"]["token"] == 1


def test_sync_followers_action_runs_the_job(admin_client, account, sandbox_api):
    response = run_action(admin_client, "sync_followers", account)
    assert any("Follower sync queued for 1 account" in message for message in page_messages(response))
    sync = FollowerSync.objects.get(account=account)
    total = len(sandbox_api.followers())
    assert (sync.status, sync.processed, sync.total, sync.created) == ("done", total, total, total)
    assert Follower.objects.filter(account=account, subscribed=True).count() == total
    change = admin_client.get(reverse("admin:accounts_officialaccount_change", args=[account.pk]))
    assert f"done ({total}/{total})" in change.text
    syncs = admin_client.get(reverse("admin:accounts_followersync_changelist"))
    assert syncs.status_code == 200 and f"{total}/{total}" in syncs.text
    assert admin_client.get(reverse("admin:accounts_followersync_change", args=[sync.pk])).status_code == 200


def test_sync_templates_action_hands_over_to_the_template_admin(admin_client, account, sandbox_api):
    """The account list's action leads to the templates app's start page (by URL name); nothing syncs before the
    confirmation, and the sync done there is recorded."""
    start = reverse("admin:templates_app_templatesync_start")
    confirm = run_action(admin_client, "sync_templates", account)
    assert confirm.request["PATH_INFO"] == start and confirm.request["QUERY_STRING"] == f"account={account.pk}"
    assert str(account) in confirm.text
    assert account.templates.count() == 0

    response = admin_client.post(start, {"account": [account.pk]}, follow=True)
    [message] = page_messages(response)
    count = len(sandbox_api.account().templates)
    assert message == f"{account}: {count} created, 0 updated, 0 deactivated, 0 reactivated"
    assert account.templates.count() == count
    assert account.template_syncs.get().created == count


def test_follower_admin_only_binding_and_remark_editable(admin_client, account):
    follower = Follower.objects.create(account=account, openid="oFollower1", unionid="oUnion1")
    user = get_user_model().objects.create_user("alice")
    url = reverse("admin:accounts_follower_change", args=[follower.pk])
    page = admin_client.get(url)
    assert page.status_code == 200
    assert 'name="openid"' not in page.text and 'name="remark"' in page.text and 'name="user"' in page.text
    response = admin_client.post(url, {"user": user.pk, "remark": "VIP", "openid": "oHacked", "unionid": "x"})
    assert response.status_code == 302
    follower.refresh_from_db()
    assert (follower.user, follower.remark, follower.openid, follower.unionid) == (user, "VIP", "oFollower1", "oUnion1")
    changelist = admin_client.get(reverse("admin:accounts_follower_changelist"), {"bound": "yes", "q": "alice"})
    assert "oFollower1" in changelist.text
    assert "oFollower1" not in admin_client.get(reverse("admin:accounts_follower_changelist"), {"bound": "no"}).text
    assert admin_client.get(reverse("admin:accounts_follower_add")).status_code == 403
