"""The callback Token and EncodingAESKey in the official account admin: account admins (superusers, wxnotify admins)
see and change them; business staff, view-only or with a change permission given by hand, neither see nor post them."""

from __future__ import annotations

import pytest
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.urls import reverse

from accounts.models import OfficialAccount
from accounts.selectors import ADMINS_GROUP, STAFF_GROUP
from tests.factories import english_client

pytestmark = pytest.mark.django_db

TOKEN = "callback-token-of-shop-a"
AES_KEY = "SafeKeySafeKeySafeKeySafeKeySafeKeySafeKe1"
APP_SECRET = "a" * 32


@pytest.fixture
def account() -> OfficialAccount:
    return OfficialAccount.objects.create(
        name="Shop A",
        appid="wxaaaaaaaaaaaaaaaa",
        app_secret=APP_SECRET,
        token=TOKEN,
        message_mode=OfficialAccount.MessageMode.SAFE,
        encoding_aes_key=AES_KEY,
    )


def signed_in(username: str, account: OfficialAccount, *, group: str | None = None, superuser: bool = False):
    user_model = get_user_model()
    if superuser:
        user = user_model.objects.create_superuser(username, password="pw")
    else:
        user = user_model.objects.create_user(username, password="pw", is_staff=True)
        user.groups.add(Group.objects.get(name=group))
        account.operators.add(user)
    return user, english_client(user)


def change_page(client, account: OfficialAccount):
    response = client.get(reverse("admin:accounts_officialaccount_change", args=[account.pk]))
    assert response.status_code == 200
    return response


@pytest.mark.parametrize(("group", "superuser"), [(None, True), (ADMINS_GROUP, False)])
def test_account_admins_see_and_change_the_callback_secrets(account, group, superuser):
    _user, client = signed_in("boss", account, group=group, superuser=superuser)
    page = change_page(client, account)
    form = page.context["adminform"].form
    assert {"token", "encoding_aes_key"} <= form.fields.keys()
    assert TOKEN in page.text  # the Token is typed into WeChat's console: shown to those who manage it
    assert AES_KEY not in page.text  # the key is never sent back, only replaced
    assert "EncodingAESKey" in page.text

    data = {
        "name": account.name,
        "appid": account.appid,
        "is_active": "on",
        "app_secret": "",
        "token_endpoint": account.token_endpoint,
        "token": "rotated-callback-token",
        "message_mode": account.message_mode,
        "encoding_aes_key": "RotatedKeyRotatedKeyRotatedKeyRotatedKey123",
        "operators": [user.pk for user in account.operators.all()],
        "send_rate_limit": "",
        "time_zone": "Asia/Shanghai",
        "welcome_reply": "",
    }
    response = client.post(reverse("admin:accounts_officialaccount_change", args=[account.pk]), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    account.refresh_from_db()
    assert account.token == "rotated-callback-token"
    assert account.encoding_aes_key == "RotatedKeyRotatedKeyRotatedKeyRotatedKey123"


def test_view_only_staff_see_neither_the_token_nor_the_key(account):
    _user, client = signed_in("clerk", account, group=STAFF_GROUP)
    page = change_page(client, account)
    assert TOKEN not in page.text
    assert AES_KEY not in page.text
    assert "EncodingAESKey" not in page.text
    assert "Paste the URL and the Token" not in page.text
    assert "The callback secrets are shown to account admins only." in page.text
    shown = flatten_fieldsets(page.context["adminform"].fieldsets)
    assert "name" in shown
    assert set(shown).isdisjoint({"token", "encoding_aes_key", "encoding_aes_key_status"})
    assert f"/wechat/callback/{account.appid}/" in page.text  # the URL is no secret


def test_staff_with_a_change_permission_can_neither_see_nor_post_them(account):
    user, client = signed_in("editor", account, group=STAFF_GROUP)
    user.user_permissions.add(Permission.objects.get(codename="change_officialaccount"))
    page = change_page(client, account)
    form = page.context["adminform"].form
    assert "name" in form.fields
    assert form.fields.keys().isdisjoint({"token", "encoding_aes_key"})
    assert TOKEN not in page.text

    response = client.post(
        reverse("admin:accounts_officialaccount_change", args=[account.pk]),
        {
            "name": "Shop A renamed",
            "appid": account.appid,
            "is_active": "on",
            "app_secret": "",
            "token_endpoint": account.token_endpoint,
            "token": "forged-by-staff-token",
            "message_mode": account.message_mode,
            "encoding_aes_key": "ForgedKeyForgedKeyForgedKeyForgedKeyForged1",
            "operators": [user.pk],
            "send_rate_limit": "",
            "time_zone": "Asia/Shanghai",
            "welcome_reply": "",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    account.refresh_from_db()
    assert account.name == "Shop A renamed"
    assert (account.token, account.encoding_aes_key) == (TOKEN, AES_KEY)


@pytest.mark.parametrize("url", ["/console/", "/api/v1/messages/", "/bind/"])
def test_neither_the_console_nor_the_api_shows_them_to_staff(account, url):
    _user, client = signed_in("clerk", account, group=STAFF_GROUP)
    response = client.get(url)
    assert response.status_code == 200
    assert TOKEN not in response.text
    assert AES_KEY not in response.text
