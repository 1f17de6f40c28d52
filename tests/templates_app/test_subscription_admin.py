"""The subscription templates' admin: browse the public library, add a template (addtemplate, then sync), sync,
delete at WeChat after a confirmation; scoped to the user's accounts and to who may change them."""

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.urls import reverse

from accounts.selectors import ADMINS_GROUP
from sandbox.demo import DEMO_SUBSCRIPTION_TEMPLATES
from templates_app.models import SubscriptionTemplate, TemplateSync
from templates_app.services import sync_subscription_templates
from tests.factories import english_client

pytestmark = pytest.mark.django_db

LIBRARY = "admin:templates_app_subscriptiontemplate_library"
SYNC = "admin:templates_app_subscriptiontemplate_sync"
CHANGELIST = "admin:templates_app_subscriptiontemplate_changelist"
ORDER_ID = DEMO_SUBSCRIPTION_TEMPLATES[0]["pri_tmpl_id"]


@pytest.fixture
def boss(django_user_model, account_a, sandbox_api, fresh_demo_token):
    """A wxnotify admin, the group that may add, sync and delete subscription templates."""
    user = django_user_model.objects.create_user("boss", is_staff=True)
    user.groups.add(Group.objects.get(name=ADMINS_GROUP))
    return english_client(user)


@pytest.fixture
def staff_client(staff_a, sandbox_api, fresh_demo_token):
    staff_a.is_staff = True
    staff_a.save(update_fields=["is_staff"])
    return english_client(staff_a)


def test_library_browse_add_sync_and_delete(boss, account_a, wechat_sandbox):
    accounts = boss.get(reverse(LIBRARY))
    assert accounts.status_code == 200 and account_a.name in accounts.text

    categories = boss.get(reverse(LIBRARY), {"account": account_a.pk})
    assert "快递、物流" in categories.text and "医疗服务" in categories.text

    titles = boss.get(reverse(LIBRARY), {"account": account_a.pk, "category": 670})
    assert "付款成功通知" in titles.text and "订单发货通知" in titles.text
    assert "one-time" in titles.text and "2 titles in this category." in titles.text

    keywords = boss.get(reverse(LIBRARY), {"account": account_a.pk, "category": 670, "tid": 99})
    assert "商户名称" in keywords.text and "amount" in keywords.text

    added = boss.post(
        reverse(LIBRARY),
        {"account": account_a.pk, "category": 670, "tid": 99, "kid_1": 3, "kid_2": 1, "scene_desc": "付款成功提醒"},
    )
    template = SubscriptionTemplate.objects.get(account=account_a, title="付款成功通知")
    assert added.status_code == 302
    assert added.url == reverse("admin:templates_app_subscriptiontemplate_change", args=[template.pk])
    assert template.content == "商户名称:{{thing3.DATA}}\n付款金额:{{amount1.DATA}}\n"
    assert SubscriptionTemplate.objects.filter(account=account_a).count() == 3  # the sync brought the demo's two
    assert wechat_sandbox.requests("/wxaapi/newtmpl/addtemplate")[0].json()["kidList"] == [3, 1]

    changelist = boss.get(reverse(CHANGELIST))
    assert "付款成功通知" in changelist.text
    assert reverse(LIBRARY) in changelist.text

    action = {"action": "delete_at_wechat", "_selected_action": [template.pk]}
    confirm = boss.post(reverse(CHANGELIST), action)
    assert confirm.status_code == 200 and "Yes, delete them at WeChat" in confirm.text
    assert template.pri_tmpl_id in wechat_sandbox.account().subscription_templates  # nothing deleted yet

    done = boss.post(reverse(CHANGELIST), {**action, "confirmed": "yes"})
    assert done.status_code == 302
    template.refresh_from_db()
    assert not template.is_active and template.removed_at is not None
    assert template.pri_tmpl_id not in wechat_sandbox.account().subscription_templates


def test_the_keyword_form_refuses_too_few_or_repeated_keywords_and_wechats_refusal(boss, account_a, wechat_sandbox):
    url = reverse(LIBRARY)
    base = {"account": account_a.pk, "category": 670, "tid": 1082, "scene_desc": "发货提醒"}

    repeated = boss.post(url, {**base, "kid_1": 1, "kid_2": 1})
    assert "Choose 2 to 5 different keywords" in repeated.text
    too_long = boss.post(url, {**base, "kid_1": 1, "kid_2": 2, "scene_desc": "一" * 16})
    assert "at most 15 characters" in too_long.text
    wechat_sandbox.add_api_fault("/wxaapi/newtmpl/addtemplate", errcode=200012)
    full = boss.post(url, {**base, "kid_1": 1, "kid_2": 2})
    assert "200012" in full.text and "(25)" in full.text
    assert not SubscriptionTemplate.objects.exists()


def test_sync_page_syncs_the_chosen_account(boss, account_a):
    assert boss.get(reverse(SYNC)).status_code == 200

    answer = boss.post(reverse(SYNC), {"account": account_a.pk})

    assert answer.status_code == 302
    assert SubscriptionTemplate.objects.filter(account=account_a, is_active=True).count() == 2
    run = TemplateSync.objects.get(account=account_a)
    assert (run.channel, run.source) == (TemplateSync.Channel.SUBSCRIBE, TemplateSync.Source.ADMIN)


def test_a_wechat_error_on_the_library_is_shown_not_raised(boss, account_a, wechat_sandbox):
    wechat_sandbox.add_api_fault("/wxaapi/newtmpl/getcategory", errcode=48001)

    page = boss.get(reverse(LIBRARY), {"account": account_a.pk})

    assert page.status_code == 200 and "48001" in page.text and "bizsend" in page.text


def test_staff_see_their_accounts_templates_but_may_not_add_sync_or_delete(staff_client, account_a, account_b):
    sync_subscription_templates(account_a)
    own = SubscriptionTemplate.objects.get(pri_tmpl_id=ORDER_ID)
    other = SubscriptionTemplate.objects.create(
        account=account_b, pri_tmpl_id="b-only", title="乙方订阅", type="one_time", content="{{thing1.DATA}}"
    )

    page = staff_client.get(reverse(CHANGELIST))
    assert page.status_code == 200 and own.title in page.text and "乙方订阅" not in page.text
    assert "public library" not in page.text
    assert (
        staff_client.get(reverse("admin:templates_app_subscriptiontemplate_change", args=[own.pk])).status_code == 200
    )
    assert (
        staff_client.get(reverse("admin:templates_app_subscriptiontemplate_change", args=[other.pk])).status_code == 404
    )
    assert staff_client.get(reverse(LIBRARY)).status_code == 403
    assert staff_client.get(reverse(SYNC)).status_code == 403
    refused = staff_client.post(reverse(CHANGELIST), {"action": "delete_at_wechat", "_selected_action": [own.pk]})
    assert (refused.status_code == 200 and "No action selected" not in refused.text) or refused.status_code == 302
    own.refresh_from_db()
    assert own.is_active


def test_an_admin_may_not_reach_another_users_account_through_the_library(
    django_user_model, account_a, account_b, staff_group, sandbox_api
):
    """A user with the rights but not the account (staff given the add permission) gets 404 for it."""
    user = django_user_model.objects.create_user("adder", is_staff=True)
    user.groups.add(staff_group)
    user.user_permissions.add(Permission.objects.get(codename="add_subscriptiontemplate"))
    account_a.operators.add(user)
    client = english_client(user)

    assert client.get(reverse(LIBRARY), {"account": account_b.pk}).status_code == 404
    assert client.get(reverse(LIBRARY), {"account": "x"}).status_code == 404


def test_the_library_speaks_chinese(django_user_model, account_a, sandbox_api, fresh_demo_token):
    user = django_user_model.objects.create_user("laoban", is_staff=True)
    user.groups.add(Group.objects.get(name=ADMINS_GROUP))
    client = Client(HTTP_ACCEPT_LANGUAGE="zh-hans")
    client.force_login(user)

    titles = client.get(reverse(LIBRARY), {"account": account_a.pk, "category": 670})
    keywords = client.get(reverse(LIBRARY), {"account": account_a.pk, "category": 670, "tid": 99})

    assert "3. 选择标题" in titles.text and "一次性" in titles.text and "该类目下共 2 个标题。" in titles.text
    assert "场景描述" in keywords.text and "金额" in keywords.text
