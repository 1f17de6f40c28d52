"""Sign-in throttling (django-axes) on both login pages: lock-out, its message, admin unlock, reset on success."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings as django_settings
from django.contrib.auth.models import Group
from django.test import Client, RequestFactory
from django.utils import timezone

from wxnotify.login_throttling import client_address

ADMIN_LOGIN = "/admin/login/"
CONSOLE_LOGIN = "/console/login/"
LOGIN_PAGES = [ADMIN_LOGIN, CONSOLE_LOGIN]
LIMIT = django_settings.AXES_FAILURE_LIMIT
ENGLISH_MESSAGE = (
    f"Too many failed sign-ins for this username from your address. Signing in is locked for "
    f"{django_settings.WXNOTIFY_LOGIN_COOLOFF_MINUTES} minutes."
)
CHINESE_MESSAGE = (
    f"该用户名从您的地址登录失败次数过多，登录已锁定 {django_settings.WXNOTIFY_LOGIN_COOLOFF_MINUTES} 分钟。"
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def member(django_user_model, staff_group):
    """A staff member who may use both the admin (is_staff) and the console (business staff group)."""
    user = django_user_model.objects.create_user("member", password="right-password", is_staff=True)
    user.groups.add(staff_group)
    return user


def client_from(address: str = "198.51.100.7", language: str = "en") -> Client:
    return Client(REMOTE_ADDR=address, HTTP_ACCEPT_LANGUAGE=language)


def sign_in(client: Client, login_page: str, password: str, username: str = "member"):
    return client.post(login_page, {"username": username, "password": password, "next": ""})


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def fail(client: Client, login_page: str, times: int):
    response = None
    for _ in range(times):
        response = sign_in(client, login_page, "wrong-password")
    return response


@pytest.mark.parametrize("login_page", LOGIN_PAGES)
def test_the_limit_th_failure_locks_out_with_a_clear_message(member, login_page):
    client = client_from()

    before_limit = fail(client, login_page, LIMIT - 1)
    assert before_limit.status_code == 200  # the login form again, with its "wrong password" error

    locked = sign_in(client, login_page, "wrong-password")
    assert locked.status_code == 429
    assert ENGLISH_MESSAGE in locked.content.decode()
    assert "ask an administrator to unlock it" in locked.content.decode()

    # Even the right password is refused while locked, and says why.
    refused = sign_in(client, login_page, "right-password")
    assert refused.status_code == 429
    assert ENGLISH_MESSAGE in refused.content.decode()
    assert not signed_in(client)


def test_the_lock_out_message_is_in_the_users_language(member):
    client = client_from(language="zh-hans")
    fail(client, CONSOLE_LOGIN, LIMIT - 1)

    locked = sign_in(client, CONSOLE_LOGIN, "wrong-password")

    page = locked.content.decode()
    assert locked.status_code == 429
    assert CHINESE_MESSAGE in page
    assert "请稍后再试，或请管理员解锁。" in page


def test_failures_on_one_login_page_count_on_the_other(member):
    """Both pages sign in the same users: an attacker gains nothing by switching between them."""
    client = client_from()
    fail(client, ADMIN_LOGIN, LIMIT - 1)

    assert sign_in(client, CONSOLE_LOGIN, "wrong-password").status_code == 429
    assert sign_in(client, ADMIN_LOGIN, "right-password").status_code == 429


def test_the_lock_out_is_per_username_and_address(member, django_user_model):
    django_user_model.objects.create_user("colleague", password="colleague-password", is_staff=True)
    attacker = client_from("203.0.113.66")
    fail(attacker, ADMIN_LOGIN, LIMIT)

    # The same user from their own address, and a colleague behind the attacker's address, still sign in.
    user_elsewhere = client_from("198.51.100.7")
    sign_in(user_elsewhere, ADMIN_LOGIN, "right-password")
    assert signed_in(user_elsewhere)
    colleague = client_from("203.0.113.66")
    sign_in(colleague, ADMIN_LOGIN, "colleague-password", username="colleague")
    assert signed_in(colleague)


def test_a_successful_sign_in_resets_the_count(member):
    client = client_from()
    fail(client, CONSOLE_LOGIN, LIMIT - 1)
    sign_in(client, CONSOLE_LOGIN, "right-password")
    assert signed_in(client)

    again = client_from()
    assert fail(again, CONSOLE_LOGIN, LIMIT - 1).status_code == 200
    sign_in(again, CONSOLE_LOGIN, "right-password")
    assert signed_in(again)


def test_the_lock_out_ends_after_the_cool_off(member):
    client = client_from()
    fail(client, CONSOLE_LOGIN, LIMIT)
    cool_off = timedelta(minutes=django_settings.WXNOTIFY_LOGIN_COOLOFF_MINUTES)
    AccessAttempt.objects.update(attempt_time=timezone.now() - cool_off - timedelta(seconds=1))

    sign_in(client, CONSOLE_LOGIN, "right-password")

    assert signed_in(client)


def unlock_in_the_admin(admin: Client) -> str:
    attempt = AccessAttempt.objects.get(username="member")
    changelist = admin.get("/admin/axes/accessattempt/")
    assert changelist.status_code == 200
    assert "member" in changelist.content.decode()
    response = admin.post(
        "/admin/axes/accessattempt/",
        {"action": "unlock", "_selected_action": [attempt.pk]},
        follow=True,
    )
    assert response.status_code == 200
    return response.content.decode()


def test_a_superuser_unlocks_in_the_admin(member, admin_user):
    client = client_from()
    fail(client, ADMIN_LOGIN, LIMIT)
    admin = Client(HTTP_ACCEPT_LANGUAGE="en")
    admin.force_login(admin_user)

    page = unlock_in_the_admin(admin)

    assert "Unlocked 1 sign-in." in page
    assert not AccessAttempt.objects.exists()
    sign_in(client, ADMIN_LOGIN, "right-password")
    assert signed_in(client)


def test_wxnotify_admins_may_unlock_and_see_the_page_in_chinese(member, django_user_model):
    officer = django_user_model.objects.create_user("officer", password="x", is_staff=True)
    officer.groups.add(Group.objects.get(name="wxnotify admins"))
    client = client_from()
    fail(client, CONSOLE_LOGIN, LIMIT)
    admin = Client(HTTP_ACCEPT_LANGUAGE="zh-hans")
    admin.force_login(officer)

    index = admin.get("/admin/").content.decode()
    assert "登录限制" in index and "登录尝试" in index
    page = unlock_in_the_admin(admin)

    assert "已解锁 1 个登录。" in page
    sign_in(client, CONSOLE_LOGIN, "right-password")
    assert signed_in(client)


def test_business_staff_cannot_see_or_unlock_attempts(member):
    client = client_from()
    fail(client, CONSOLE_LOGIN, LIMIT)
    other = Client(HTTP_ACCEPT_LANGUAGE="en")
    other.force_login(member)  # is_staff, business staff group: no permission on attempts

    assert other.get("/admin/axes/accessattempt/").status_code == 403
    assert AccessAttempt.objects.count() == 1


def test_the_counted_address_is_the_peer_unless_behind_a_proxy(settings):
    factory = RequestFactory()
    forwarded = factory.post(
        ADMIN_LOGIN, REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="1.2.3.4, 198.51.100.20"
    )  # a client-supplied entry, then the one the proxy appended

    settings.WXNOTIFY_BEHIND_PROXY = False
    assert client_address(forwarded) == "10.0.0.5"
    settings.WXNOTIFY_BEHIND_PROXY = True
    assert client_address(forwarded) == "198.51.100.20"
    garbage = factory.post(ADMIN_LOGIN, REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="not-an-address")
    assert client_address(garbage) == "10.0.0.5"
