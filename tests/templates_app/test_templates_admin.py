"""The template and template-sync admins: scoped to the accounts a user operates, and the start page for syncs."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from django.urls import reverse

from accounts.models import OfficialAccount
from accounts.selectors import ADMINS_GROUP
from sandbox.demo import DEMO_APPID, DEMO_TEMPLATES
from templates_app.models import MessageTemplate, TemplateSync
from templates_app.services import sync_templates
from tests.factories import OTHER_APPID, create_template, english_client

pytestmark = pytest.mark.django_db

B_ONLY_TITLE = "乙方专属通知"
CHANGELIST = "admin:templates_app_messagetemplate_changelist"
SYNC_CHANGELIST = "admin:templates_app_templatesync_changelist"
START = "admin:templates_app_templatesync_start"


@pytest.fixture
def template_b(account_b):
    return create_template(
        account_b, {"template_id": "b-only-template", "title": B_ONLY_TITLE, "content": "项目:{{thing1.DATA}}"}
    )


@pytest.fixture
def sync_b(account_b):
    """A failed sync of account B, as the command would have left it."""
    return TemplateSync.objects.create(
        account=account_b,
        status=TemplateSync.Status.FAILED,
        source=TemplateSync.Source.COMMAND,
        error="WeChat error 40125: invalid appsecret of Other B",
        started_at="2026-11-30T08:00:00Z",
        finished_at="2026-11-30T08:00:01Z",
    )


@pytest.fixture
def staff_client(staff_a):
    """Business staff of account A, allowed into the admin (is_staff) like the issue's reviewer."""
    staff_a.is_staff = True
    staff_a.save(update_fields=["is_staff"])
    return english_client(staff_a)


@pytest.fixture
def wxnotify_admin(django_user_model):
    user = django_user_model.objects.create_user("boss", is_staff=True)
    user.groups.add(Group.objects.get(name=ADMINS_GROUP))
    return user


@pytest.fixture
def account_a2(staff_a):
    """A second account staff A operates, so the account filters have something to choose between."""
    account = OfficialAccount.objects.create(name="Shop A2", appid="wx00000000000000a2", app_secret="a" * 32, token="t")
    account.operators.add(staff_a)
    create_template(account, {"template_id": "a2-template", "title": "A2 通知", "content": "项目:{{thing1.DATA}}"})
    return account


def account_filter_choices(response) -> set[int]:
    [account_filter] = [f for f in response.context["cl"].filter_specs if getattr(f, "field_path", "") == "account"]
    return {pk for pk, _name in account_filter.lookup_choices}


def assert_nothing_of_b(text: str) -> None:
    assert "Other B" not in text
    assert OTHER_APPID not in text
    assert B_ONLY_TITLE not in text


# --- scoping --------------------------------------------------------------------------------------------------------


def test_staff_see_only_their_accounts_templates_and_filter_choices(staff_client, account_a, account_a2, template_b):
    page = staff_client.get(reverse(CHANGELIST))

    assert page.status_code == 200
    assert set(page.context["cl"].queryset) == set(MessageTemplate.objects.filter(account__in=[account_a, account_a2]))
    assert_nothing_of_b(page.text)
    assert account_filter_choices(page) == {account_a.pk, account_a2.pk}


def test_filtering_or_searching_for_another_account_finds_nothing(staff_client, account_a, account_b, template_b):
    by_account = staff_client.get(reverse(CHANGELIST), {"account__id__exact": account_b.pk})
    assert by_account.status_code == 200
    assert not by_account.context["cl"].queryset.filter(account=account_b).exists()
    assert_nothing_of_b(by_account.text)

    by_title = staff_client.get(reverse(CHANGELIST), {"q": B_ONLY_TITLE})
    assert list(by_title.context["cl"].queryset) == []
    assert template_b.template_id not in by_title.text and "Other B" not in by_title.text


def test_another_accounts_template_answers_404(staff_client, account_a, template_b):
    own = MessageTemplate.objects.filter(account=account_a).first()
    assert staff_client.get(reverse("admin:templates_app_messagetemplate_change", args=[own.pk])).status_code == 200
    for view in ("change", "history", "delete"):
        url = reverse(f"admin:templates_app_messagetemplate_{view}", args=[template_b.pk])
        assert staff_client.get(url).status_code == 404, view
    # A POST on the change page is refused too (staff only view templates; B's is out of scope anyway).
    url = reverse("admin:templates_app_messagetemplate_change", args=[template_b.pk])
    assert staff_client.post(url, {"clear_problem": "on"}).status_code == 404


def test_staff_see_only_their_accounts_syncs(staff_client, account_a, account_a2, sync_b):
    sync_a, sync_a2 = (
        TemplateSync.objects.create(
            account=account,
            status=TemplateSync.Status.DONE,
            created=4,
            started_at="2026-11-30T09:00:00Z",
            finished_at="2026-11-30T09:00:01Z",
        )
        for account in (account_a, account_a2)
    )
    page = staff_client.get(reverse(SYNC_CHANGELIST))

    assert page.status_code == 200
    assert set(page.context["cl"].queryset) == {sync_a, sync_a2}
    assert_nothing_of_b(page.text)
    assert account_filter_choices(page) == {account_a.pk, account_a2.pk}
    assert staff_client.get(reverse("admin:templates_app_templatesync_change", args=[sync_a.pk])).status_code == 200
    assert staff_client.get(reverse("admin:templates_app_templatesync_change", args=[sync_b.pk])).status_code == 404


def test_wxnotify_admins_see_every_account(wxnotify_admin, account_a, template_b, sync_b):
    client = english_client(wxnotify_admin)
    assert B_ONLY_TITLE in client.get(reverse(CHANGELIST)).text
    assert "Other B" in client.get(reverse(SYNC_CHANGELIST)).text


def test_template_autocomplete_offers_only_the_users_templates(staff_client, account_a, account_b, template_b):
    """Django answers autocomplete for any relation to a model whose admin has search fields, whether or not a form
    uses it: the answer comes from the scoped queryset.  B holds the demo's first template too, under the same title."""
    shared_title = DEMO_TEMPLATES[0]["title"]
    answers = [
        staff_client.get(
            reverse("admin:autocomplete"),
            {"app_label": "messaging", "model_name": "message", "field_name": "template", "term": term},
        )
        for term in (shared_title, B_ONLY_TITLE)
    ]

    assert [answer.status_code for answer in answers] == [200, 200]
    own = MessageTemplate.objects.get(account=account_a, title=shared_title)
    assert [item["id"] for item in answers[0].json()["results"]] == [str(own.pk)]
    assert answers[1].json()["results"] == []


# --- starting a sync ------------------------------------------------------------------------------------------------


def test_start_page_asks_first_and_shows_the_last_outcome(wxnotify_admin, account_a, account_b, sandbox_api):
    client = english_client(wxnotify_admin)
    sync_templates(account_a)
    sync_templates(account_a)

    page = client.get(reverse(START), {"account": [account_a.pk, account_b.pk]})

    assert page.status_code == 200
    assert str(account_a) in page.text and str(account_b) in page.text
    assert "0 created, 0 updated, 0 deactivated, 0 reactivated" in page.text
    assert "never" in page.text
    assert TemplateSync.objects.count() == 2


@pytest.mark.usefixtures("english")
def test_start_page_syncs_records_who_and_lands_on_the_accounts_syncs(wxnotify_admin, account_a, sandbox_api):
    client = english_client(wxnotify_admin)
    sync_templates(account_a)
    sandbox_api.update_account(DEMO_APPID, templates=DEMO_TEMPLATES[:3])

    response = client.post(reverse(START), {"account": [account_a.pk]})

    assert response.status_code == 302
    assert response.url == f"{reverse(SYNC_CHANGELIST)}?account__id__exact={account_a.pk}"
    sync = TemplateSync.objects.get(account=account_a, source=TemplateSync.Source.ADMIN)
    assert (sync.status, sync.deactivated, sync.source, sync.requested_by) == (
        TemplateSync.Status.DONE,
        1,
        TemplateSync.Source.ADMIN,
        wxnotify_admin,
    )
    listing = client.get(response.url)
    assert [str(m) for m in listing.context["messages"]] == [
        f"{account_a}: 0 created, 0 updated, 1 deactivated, 0 reactivated"
    ]
    assert "boss" in listing.text


@pytest.mark.usefixtures("english", "fresh_demo_token")
def test_start_page_reports_and_records_a_wechat_error(wxnotify_admin, account_a, sandbox_api):
    client = english_client(wxnotify_admin)
    sandbox_api.update_account(DEMO_APPID, secret="0" * 32)

    response = client.post(reverse(START), {"account": [account_a.pk]}, follow=True)

    [message] = [str(m) for m in response.context["messages"]]
    assert message.startswith(f"{account_a}: WeChat error 40125: invalid appsecret")
    sync = TemplateSync.objects.get(account=account_a)
    assert sync.status == TemplateSync.Status.FAILED and message == f"{account_a}: {sync.error}"
    assert sync.error in response.text


def test_start_page_needs_the_right_to_change_templates(staff_client, account_a):
    assert staff_client.get(reverse(START), {"account": account_a.pk}).status_code == 403
    assert staff_client.post(reverse(START), {"account": [account_a.pk]}).status_code == 403
    assert not TemplateSync.objects.exists()


def test_start_page_answers_404_for_accounts_out_of_scope_or_unknown(django_user_model, account_a, account_b):
    """A user who may change templates but operates only account A (a custom group) cannot name account B."""
    user = django_user_model.objects.create_user("editor_a", is_staff=True)
    user.groups.add(Group.objects.get(name="business staff"))
    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="templates_app", codename="change_messagetemplate")
    )
    account_a.operators.add(user)
    client = english_client(user)

    assert client.get(reverse(START), {"account": account_a.pk}).status_code == 200
    assert client.get(reverse(START), {"account": [account_a.pk, account_b.pk]}).status_code == 404
    assert client.post(reverse(START), {"account": [account_b.pk]}).status_code == 404
    assert client.get(reverse(START), {"account": "x"}).status_code == 404
    assert client.get(reverse(START)).status_code == 404
    assert not TemplateSync.objects.exists()


def test_template_admin_action_records_the_run_as_the_admins(admin_client, account_a, sandbox_api):
    selected = list(MessageTemplate.objects.filter(account=account_a).values_list("pk", flat=True)[:1])
    admin_client.post(reverse(CHANGELIST), {"action": "sync_from_wechat", "_selected_action": selected})
    sync = TemplateSync.objects.get(account=account_a)
    assert (sync.source, sync.requested_by.username) == (TemplateSync.Source.ADMIN, "admin")
