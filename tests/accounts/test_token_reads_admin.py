"""The log of token reads in the admin: read-only for everyone, wxnotify admins see every account's reads, a staff
member given the view permission by hand sees only the reads of the accounts they operate."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.urls import reverse
from django.utils import timezone

from accounts.models import AccessTokenRead, OfficialAccount
from accounts.selectors import ADMINS_GROUP, STAFF_GROUP
from tests.factories import english_client

pytestmark = pytest.mark.django_db

LIST_URL = reverse("admin:accounts_accesstokenread_changelist")


@pytest.fixture
def reads() -> tuple[AccessTokenRead, AccessTokenRead]:
    shop_a = OfficialAccount.objects.create(name="Shop A", appid="wxaaaaaaaaaaaaaaaa", app_secret="a" * 32, token="ta")
    shop_b = OfficialAccount.objects.create(name="Shop B", appid="wxbbbbbbbbbbbbbbbb", app_secret="b" * 32, token="tb")
    expires = timezone.now() + timedelta(hours=2)
    return (
        AccessTokenRead.objects.create(
            account=shop_a, username="crm-a", address="10.0.0.7", min_ttl=300, refreshed=True, expires_at=expires
        ),
        AccessTokenRead.objects.create(
            account=shop_b, username="crm-b", address="10.0.0.8", min_ttl=600, refreshed=False, expires_at=expires
        ),
    )


def staff_user(name: str, group: str):
    user = get_user_model().objects.create_user(name, password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return user


def test_wxnotify_admins_see_every_read_and_change_none(reads):
    client = english_client(staff_user("boss", ADMINS_GROUP))

    page = client.get(LIST_URL)

    assert page.status_code == 200
    assert all(word in page.text for word in ("crm-a", "crm-b", "10.0.0.7", "10.0.0.8"))
    detail = client.get(reverse("admin:accounts_accesstokenread_change", args=[reads[0].pk]))
    assert detail.status_code == 200
    assert not detail.context["adminform"].form.fields  # every field read-only
    assert client.post(reverse("admin:accounts_accesstokenread_delete", args=[reads[0].pk])).status_code == 403
    assert client.get(reverse("admin:accounts_accesstokenread_add")).status_code == 403


def test_business_staff_do_not_see_the_log(reads):
    client = english_client(staff_user("clerk", STAFF_GROUP))

    assert client.get(LIST_URL).status_code == 403


def test_a_view_permission_given_by_hand_shows_only_the_operated_accounts(reads):
    user = staff_user("clerk", STAFF_GROUP)
    user.user_permissions.add(Permission.objects.get(codename="view_accesstokenread"))
    reads[0].account.operators.add(user)
    client = english_client(user)

    page = client.get(LIST_URL)

    assert "crm-a" in page.text
    assert "crm-b" not in page.text
    assert client.get(reverse("admin:accounts_accesstokenread_change", args=[reads[1].pk])).status_code == 404
