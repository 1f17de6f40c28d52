"""Template model, sync from the sandbox WeChat, the sync_templates command and the admin."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db.models import ProtectedError
from django.urls import reverse

from accounts.models import OfficialAccount
from sandbox.demo import DEMO_APPID, DEMO_TEMPLATES
from templates_app.models import MessageTemplate, TemplateSync
from templates_app.selectors import active_templates, get_active_template, templates_with_problems
from templates_app.services import (
    TemplateSyncResult,
    clear_template_problem,
    flag_template_problem,
    sync_templates,
)
from tests.factories import create_demo_account
from wxnotify.wechat.errors import WeChatError
from wxnotify.wechat.tokens import default_token_manager

pytestmark = pytest.mark.django_db(transaction=False)

LEGACY_ID = "sandbox-legacy-payment-00000000000000000000004"
TICKET_ID = "sandbox-ticket-status-00000000000000000000003"
OTHER_APPID = "wx00000000000000e5"
BROKEN_APPID = "wx00000000000000b0"
WRONG_SECRET = "0" * 32


@pytest.fixture
def account(sandbox_api):
    return create_demo_account()


def set_remote_templates(sandbox, templates, appid=DEMO_APPID):
    sandbox.state.upsert_account({"appid": appid, "templates": templates})


def break_secret(account):
    """Someone typed a wrong AppSecret: the next token fetch fails with 40125."""
    account.app_secret = WRONG_SECRET
    account.save()
    default_token_manager().forget(account.appid)


def snapshot(account):
    return list(
        MessageTemplate.objects.filter(account=account)
        .order_by("template_id")
        .values("template_id", "title", "content", "keywords", "is_active", "removed_at", "updated_at")
    )


# --- sync -----------------------------------------------------------------------------------------------------------


def test_sync_creates_templates_with_parsed_keywords(account):
    result = sync_templates(account)

    assert result == TemplateSyncResult(created=len(DEMO_TEMPLATES))
    assert MessageTemplate.objects.filter(account=account).count() == len(DEMO_TEMPLATES)
    ticket = MessageTemplate.objects.get(account=account, template_id=TICKET_ID)
    assert ticket.title == "工单状态变更通知"
    assert ticket.deputy_industry == "IT软件与服务"
    assert ticket.example.startswith("工单名称:打印机故障")
    assert ticket.keywords == [
        {"name": "thing1", "type": "thing"},
        {"name": "character_string2", "type": "character_string"},
        {"name": "time3", "type": "time"},
    ]
    assert ticket.is_active and not ticket.is_legacy
    assert MessageTemplate.objects.get(template_id=LEGACY_ID).is_legacy


def test_second_sync_changes_nothing(account):
    sync_templates(account)
    before = snapshot(account)

    result = sync_templates(account)

    assert result == TemplateSyncResult()
    assert not result.changed
    assert snapshot(account) == before


def test_changed_template_is_updated_and_reparsed(account, wechat_sandbox):
    sync_templates(account)
    changed = [dict(t) for t in DEMO_TEMPLATES]
    changed[2]["content"] = "工单名称:{{thing1.DATA}}\n处理人:{{name4.DATA}}"
    set_remote_templates(wechat_sandbox, changed)

    assert sync_templates(account) == TemplateSyncResult(updated=1)
    ticket = MessageTemplate.objects.get(template_id=TICKET_ID)
    assert [k["name"] for k in ticket.keywords] == ["thing1", "name4"]


def test_removed_template_becomes_inactive_then_comes_back(account, wechat_sandbox):
    sync_templates(account)
    set_remote_templates(wechat_sandbox, [t for t in DEMO_TEMPLATES if t["template_id"] != TICKET_ID])

    assert sync_templates(account) == TemplateSyncResult(deactivated=1)
    ticket = MessageTemplate.objects.get(template_id=TICKET_ID)
    assert not ticket.is_active
    assert ticket.removed_at is not None
    assert get_active_template(account, TICKET_ID) is None
    assert sync_templates(account) == TemplateSyncResult()

    set_remote_templates(wechat_sandbox, DEMO_TEMPLATES)
    assert sync_templates(account) == TemplateSyncResult(reactivated=1)
    ticket.refresh_from_db()
    assert ticket.is_active
    assert ticket.removed_at is None
    assert get_active_template(account, TICKET_ID) == ticket


def test_template_deactivated_by_staff_stays_inactive(account):
    sync_templates(account)
    MessageTemplate.objects.filter(template_id=TICKET_ID).update(is_active=False)

    assert sync_templates(account) == TemplateSyncResult()
    assert not MessageTemplate.objects.get(template_id=TICKET_ID).is_active


def test_wrong_appsecret_raises_and_changes_nothing(account, wechat_sandbox):
    sync_templates(account)
    before = snapshot(account)
    set_remote_templates(wechat_sandbox, [])
    break_secret(account)

    with pytest.raises(WeChatError) as caught:
        sync_templates(account)

    assert caught.value.errcode == 40125
    assert WRONG_SECRET not in str(caught.value)
    assert snapshot(account) == before


def test_templates_are_per_account(account, wechat_sandbox):
    wechat_sandbox.state.upsert_account(
        {"appid": OTHER_APPID, "secret": "e5" * 16, "templates": [DEMO_TEMPLATES[0]], "followers": 0}
    )
    other = OfficialAccount.objects.create(name="Other", appid=OTHER_APPID, app_secret="e5" * 16, token="t")

    sync_templates(account)
    assert sync_templates(other) == TemplateSyncResult(created=1)
    assert active_templates(account).count() == len(DEMO_TEMPLATES)
    assert list(active_templates(other).values_list("template_id", flat=True)) == [DEMO_TEMPLATES[0]["template_id"]]


def test_templates_protect_their_account(account):
    sync_templates(account)
    with pytest.raises(ProtectedError):
        account.delete()


# --- recorded outcome -----------------------------------------------------------------------------------------------


def test_every_sync_records_its_outcome(account, wechat_sandbox):
    sync_templates(account)
    set_remote_templates(wechat_sandbox, DEMO_TEMPLATES[:3])
    sync_templates(account)

    second, first = TemplateSync.objects.filter(account=account)
    assert (first.status, first.created, first.updated, first.deactivated, first.reactivated) == (
        TemplateSync.Status.DONE,
        len(DEMO_TEMPLATES),
        0,
        0,
        0,
    )
    assert (second.status, second.deactivated, second.error) == (TemplateSync.Status.DONE, 1, "")
    assert (second.source, second.requested_by) == (TemplateSync.Source.OTHER, None)
    assert first.started_at <= first.finished_at <= second.started_at <= second.finished_at


@pytest.mark.usefixtures("english")
def test_failed_sync_records_the_error_in_words_on_the_sync_and_the_account(account):
    break_secret(account)

    with pytest.raises(WeChatError):
        sync_templates(account)

    sync = TemplateSync.objects.get(account=account)
    assert sync.status == TemplateSync.Status.FAILED
    assert sync.error.startswith("WeChat error 40125: invalid appsecret")
    assert sync.error.endswith(" — Invalid AppSecret.")
    assert WRONG_SECRET not in sync.error
    assert (sync.created, sync.updated, sync.deactivated, sync.reactivated) == (0, 0, 0, 0)
    account.refresh_from_db()
    assert account.last_error_code == 40125
    assert account.last_error_message == sync.error


class _BrokenClient:
    def get_all_private_templates(self):
        raise LookupError("a bug in our code")


@pytest.mark.usefixtures("english")
def test_unexpected_failure_is_recorded_by_class_and_raised(account, monkeypatch):
    monkeypatch.setattr("templates_app.services.wechat_client_for", lambda _account: _BrokenClient())

    with pytest.raises(LookupError):
        sync_templates(account)

    sync = TemplateSync.objects.get(account=account)
    assert (sync.status, sync.error) == (TemplateSync.Status.FAILED, "Unexpected error: LookupError")


def test_command_records_its_runs(account):
    run_command()
    assert TemplateSync.objects.get(account=account).source == TemplateSync.Source.COMMAND


# --- problem flag ---------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("english")
def test_flag_and_clear_problem(account):
    sync_templates(account)
    template = MessageTemplate.objects.get(template_id=TICKET_ID)

    flag_template_problem(template, 40037)
    template.refresh_from_db()
    assert template.has_problem
    assert template.problem_code == 40037
    assert template.problem_message == "Invalid template_id: wrong, deleted, or belongs to another account."
    assert template.problem_at is not None
    assert list(templates_with_problems(account)) == [template]

    flag_template_problem(template, 43116, "This template_id is banned rid: 1-2")
    template.refresh_from_db()
    assert (template.problem_code, template.problem_message) == (43116, "This template_id is banned rid: 1-2")

    clear_template_problem(template)
    template.refresh_from_db()
    assert not template.has_problem
    assert (template.problem_message, template.problem_at) == ("", None)
    assert not templates_with_problems().exists()


def test_str_and_ordering(account):
    sync_templates(account)
    titles = list(MessageTemplate.objects.values_list("title", flat=True))
    assert titles == sorted(titles)
    assert str(MessageTemplate.objects.get(template_id=TICKET_ID)) == f"工单状态变更通知 ({TICKET_ID})"


# --- management command ---------------------------------------------------------------------------------------------


def run_command(*args):
    out, err = StringIO(), StringIO()
    call_command("sync_templates", *args, stdout=out, stderr=err, no_color=True)
    return out.getvalue(), err.getvalue()


def test_command_syncs_all_active_accounts(account):
    OfficialAccount.objects.create(name="Off", appid=OTHER_APPID, app_secret="x" * 32, token="t", is_active=False)
    out, err = run_command()
    assert out == f"Demo ({DEMO_APPID}): 4 created, 0 updated, 0 deactivated, 0 reactivated\n"
    assert err == ""
    out, _ = run_command("--appid", DEMO_APPID)
    assert out == f"Demo ({DEMO_APPID}): 0 created, 0 updated, 0 deactivated, 0 reactivated\n"


def test_command_unknown_appid_fails(account):
    with pytest.raises(CommandError, match="No official account with AppID wx0000000000000bad"):
        run_command("--appid", "wx0000000000000bad")


@pytest.mark.usefixtures("english")
def test_command_reports_wechat_errors_in_words_and_fails_after_trying_every_account(account, wechat_sandbox):
    broken = OfficialAccount.objects.create(name="Broken", appid=BROKEN_APPID, app_secret="b" * 32, token="t")
    wechat_sandbox.state.upsert_account({"appid": BROKEN_APPID, "secret": "e5" * 16, "followers": 0})
    out, err = StringIO(), StringIO()

    with pytest.raises(CommandError, match=rf"failed for 1 of 2 account\(s\): {BROKEN_APPID}"):
        call_command("sync_templates", stdout=out, stderr=err, no_color=True)

    assert f"{broken}: WeChat error 40125: invalid appsecret" in err.getvalue()
    assert "Invalid AppSecret." in err.getvalue()
    assert "b" * 32 not in err.getvalue()
    assert out.getvalue() == f"Demo ({DEMO_APPID}): 4 created, 0 updated, 0 deactivated, 0 reactivated\n"


# --- admin ----------------------------------------------------------------------------------------------------------


def test_admin_changelist_and_filters_load(admin_client, account):
    sync_templates(account)
    flag_template_problem(MessageTemplate.objects.get(template_id=TICKET_ID), 43116)
    url = reverse("admin:templates_app_messagetemplate_changelist")

    response = admin_client.get(url)
    assert response.status_code == 200
    body = response.content.decode()
    assert "工单状态变更通知" in body
    assert "thing1 · 事物, character_string2 · 字符串, time3 · 时间" in body
    assert 'value="sync_from_wechat"' in body

    response = admin_client.get(url, {"has_problem": "yes"})
    assert list(response.context["cl"].queryset) == [MessageTemplate.objects.get(template_id=TICKET_ID)]
    response = admin_client.get(url, {"q": "预约"})
    assert [t.title for t in response.context["cl"].queryset] == ["预约成功提醒"]


def test_admin_change_view_shows_preview_and_no_delete(admin_client, account):
    sync_templates(account)
    template = MessageTemplate.objects.get(template_id=LEGACY_ID)
    response = admin_client.get(reverse("admin:templates_app_messagetemplate_change", args=[template.pk]))
    assert response.status_code == 200
    body = response.content.decode()
    assert "付款金额" in body
    assert "[keyword1]" in body
    assert "[first]" not in body
    assert 'name="title"' not in body
    assert reverse("admin:templates_app_messagetemplate_delete", args=[template.pk]) not in body
    delete = admin_client.post(reverse("admin:templates_app_messagetemplate_delete", args=[template.pk]))
    assert delete.status_code == 403
    assert admin_client.get(reverse("admin:templates_app_messagetemplate_add")).status_code == 403


def test_admin_edits_only_active_flag_and_clears_problem(admin_client, account):
    sync_templates(account)
    template = MessageTemplate.objects.get(template_id=TICKET_ID)
    flag_template_problem(template, 40037)
    url = reverse("admin:templates_app_messagetemplate_change", args=[template.pk])

    response = admin_client.post(url, {"title": "hacked", "clear_problem": "on"})
    assert response.status_code == 302
    template.refresh_from_db()
    assert template.title == "工单状态变更通知"
    assert not template.is_active
    assert not template.has_problem


@pytest.mark.usefixtures("english")
def test_admin_sync_action(admin_client, account, wechat_sandbox):
    sync_templates(account)
    set_remote_templates(wechat_sandbox, DEMO_TEMPLATES[:3])
    url = reverse("admin:templates_app_messagetemplate_changelist")
    selected = MessageTemplate.objects.filter(template_id=TICKET_ID).values_list("pk", flat=True)

    response = admin_client.post(url, {"action": "sync_from_wechat", "_selected_action": list(selected)}, follow=True)

    assert response.status_code == 200
    texts = [str(m) for m in response.context["messages"]]
    assert texts == [f"Demo ({DEMO_APPID}): 0 created, 0 updated, 1 deactivated, 0 reactivated"]
    assert not MessageTemplate.objects.get(template_id=LEGACY_ID).is_active


@pytest.mark.usefixtures("english")
def test_admin_sync_action_shows_wechat_error(admin_client, account):
    sync_templates(account)
    break_secret(account)
    url = reverse("admin:templates_app_messagetemplate_changelist")
    selected = list(MessageTemplate.objects.values_list("pk", flat=True)[:2])

    response = admin_client.post(url, {"action": "sync_from_wechat", "_selected_action": selected}, follow=True)

    texts = [str(m) for m in response.context["messages"]]
    assert len(texts) == 1
    assert texts[0].startswith(f"Demo ({DEMO_APPID}): WeChat error 40125: invalid appsecret")


def test_admin_sync_messages_in_chinese(admin_client, account, wechat_sandbox):
    """The admin's messages follow the admin's language; WeChat's errmsg stays as WeChat sent it."""
    sync_templates(account)
    set_remote_templates(wechat_sandbox, DEMO_TEMPLATES[:3])
    url = reverse("admin:templates_app_messagetemplate_changelist")
    selected = list(MessageTemplate.objects.values_list("pk", flat=True)[:1])

    response = admin_client.post(url, {"action": "sync_from_wechat", "_selected_action": selected}, follow=True)
    assert [str(m) for m in response.context["messages"]] == [
        f"Demo ({DEMO_APPID})：新增 0 个，更新 0 个，移除 1 个，恢复 0 个"
    ]

    break_secret(account)
    response = admin_client.post(url, {"action": "sync_from_wechat", "_selected_action": selected}, follow=True)
    [message] = [str(m) for m in response.context["messages"]]
    assert message.startswith(f"Demo ({DEMO_APPID}): 微信错误 40125：invalid appsecret rid: ")
    assert message.endswith(" — 不合法的 AppSecret。")
