"""Subscription templates: the model, the sync from the sandbox WeChat (new, changed, removed, listed again,
enumerations, failures recorded), adding from the library and deleting at WeChat, and the client/sandbox/validator
round trip."""

import pytest
from django.db.models import ProtectedError

from accounts.clients import wechat_client_for
from sandbox.demo import DEMO_APPID, DEMO_SUBSCRIPTION_TEMPLATES
from sandbox.state import SubscriptionTemplate as SandboxTemplate
from templates_app.keywords import validate_template_data
from templates_app.models import SubscriptionTemplate, TemplateSync
from templates_app.selectors import active_subscription_templates, get_active_subscription_template
from templates_app.services import (
    TemplateSyncResult,
    _subscription_fields,
    add_subscription_template,
    delete_subscription_template,
    subscription_keywords,
    sync_subscription_templates,
)
from tests.factories import create_demo_account
from wxnotify.wechat.errors import PayloadError, WeChatError
from wxnotify.wechat.tokens import default_token_manager

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]

ORDER_ID = DEMO_SUBSCRIPTION_TEMPLATES[0]["pri_tmpl_id"]
REGISTRATION_ID = DEMO_SUBSCRIPTION_TEMPLATES[1]["pri_tmpl_id"]


@pytest.fixture
def account(sandbox_api, fresh_demo_token):
    return create_demo_account()


def remote_templates(sandbox):
    return sandbox.account().subscription_templates


def test_sync_creates_templates_with_type_keywords_and_enumerations(account):
    result = sync_subscription_templates(account)

    assert result == TemplateSyncResult(created=2)
    order = SubscriptionTemplate.objects.get(account=account, pri_tmpl_id=ORDER_ID)
    assert order.title == "订单发货通知"
    assert order.type == SubscriptionTemplate.Type.ONE_TIME and not order.is_long_term
    assert order.content.startswith("订单编号:{{character_string1.DATA}}\n商品名称:{{thing2.DATA}}")
    assert order.keywords == [
        {"name": "character_string1", "type": "character_string"},
        {"name": "thing2", "type": "thing"},
        {"name": "time3", "type": "time"},
        {"name": "phrase7", "type": "phrase"},
    ]
    registration = SubscriptionTemplate.objects.get(pri_tmpl_id=REGISTRATION_ID)
    assert registration.is_long_term
    assert registration.keywords[-1] == {
        "name": "enum_string6",
        "type": "enum_string",
        "choices": ["已预约", "已取消", "已就诊"],
    }
    [run] = TemplateSync.objects.filter(account=account)
    assert (run.channel, run.status, run.created) == (TemplateSync.Channel.SUBSCRIBE, TemplateSync.Status.DONE, 2)


def test_changed_removed_and_relisted_templates(account, wechat_sandbox):
    sync_subscription_templates(account)
    templates = remote_templates(wechat_sandbox)
    original = templates.pop(REGISTRATION_ID)
    order = templates[ORDER_ID]
    order.title = "订单已发货通知"

    assert sync_subscription_templates(account) == TemplateSyncResult(updated=1, deactivated=1)
    removed = SubscriptionTemplate.objects.get(pri_tmpl_id=REGISTRATION_ID)
    assert not removed.is_active and removed.removed_at is not None
    assert SubscriptionTemplate.objects.get(pri_tmpl_id=ORDER_ID).title == "订单已发货通知"
    assert list(active_subscription_templates(account).values_list("pri_tmpl_id", flat=True)) == [ORDER_ID]
    assert get_active_subscription_template(account, REGISTRATION_ID) is None

    templates[REGISTRATION_ID] = original
    assert sync_subscription_templates(account) == TemplateSyncResult(reactivated=1)
    assert SubscriptionTemplate.objects.get(pri_tmpl_id=REGISTRATION_ID).is_active
    assert sync_subscription_templates(account) == TemplateSyncResult()


def test_a_failed_sync_is_recorded_and_changes_nothing(account, wechat_sandbox):
    sync_subscription_templates(account)
    wechat_sandbox.add_api_fault("/wxaapi/newtmpl/gettemplate", errcode=48001)

    with pytest.raises(WeChatError):
        sync_subscription_templates(account)

    failed = TemplateSync.objects.filter(account=account, status=TemplateSync.Status.FAILED).get()
    assert failed.channel == TemplateSync.Channel.SUBSCRIBE
    assert "48001" in failed.error
    assert SubscriptionTemplate.objects.filter(account=account, is_active=True).count() == 2
    account.refresh_from_db()
    assert account.last_error_code == 48001


def test_templates_of_an_unknown_type_are_left_out():
    assert _subscription_fields({"priTmplId": "x", "title": "t", "content": "{{thing1.DATA}}", "type": 9}) is None
    assert _subscription_fields({"priTmplId": "x", "title": "t", "content": "{{thing1.DATA}}", "type": 3})["type"] == (
        SubscriptionTemplate.Type.LONG_TERM
    )


def test_enumerations_attach_to_their_keyword_only():
    keywords = subscription_keywords(
        "a:{{thing1.DATA}}\nb:{{enum_string2.DATA}}",
        [{"keywordCode": "enum_string2.DATA", "enumValueList": ["客厅", "卧室"]}, "garbage"],
    )
    assert [keyword.as_dict() for keyword in keywords] == [
        {"name": "thing1", "type": "thing"},
        {"name": "enum_string2", "type": "enum_string", "choices": ["客厅", "卧室"]},
    ]


def test_add_from_the_library_then_delete_at_wechat(account, wechat_sandbox):
    template = add_subscription_template(account, tid=99, kid_list=[3, 1], scene_desc="付款成功提醒")

    assert template.title == "付款成功通知"
    assert template.content == "商户名称:{{thing3.DATA}}\n付款金额:{{amount1.DATA}}\n"
    assert template.pri_tmpl_id in remote_templates(wechat_sandbox)
    assert TemplateSync.objects.get(account=account).source == TemplateSync.Source.ADMIN

    delete_subscription_template(template)

    assert template.pri_tmpl_id not in remote_templates(wechat_sandbox)
    template.refresh_from_db()
    assert not template.is_active and template.removed_at is not None
    assert sync_subscription_templates(account).deactivated == 0  # already marked


def test_a_refused_add_changes_nothing(account, wechat_sandbox):
    with pytest.raises(PayloadError):
        add_subscription_template(account, tid=99, kid_list=[1, 9], scene_desc="付款")
    with pytest.raises(ValueError, match="sceneDesc"):
        add_subscription_template(account, tid=99, kid_list=[1, 2], scene_desc="一" * 16)

    assert not SubscriptionTemplate.objects.exists()
    assert len(remote_templates(wechat_sandbox)) == 2


def test_templates_are_protected_while_the_account_exists(account):
    sync_subscription_templates(account)
    with pytest.raises(ProtectedError):
        account.delete()


def test_what_our_validator_takes_the_sandbox_takes_and_what_it_refuses_is_a_47003(account, wechat_sandbox):
    """Round trip: sync, validate with the shared validator, send through the client, read the sandbox's verdict."""
    sync_subscription_templates(account)
    template = SubscriptionTemplate.objects.get(pri_tmpl_id=REGISTRATION_ID)
    client = wechat_client_for(account)
    wechat_sandbox.state.grant_long_term(DEMO_APPID, "oVisitor", REGISTRATION_ID)
    good = {"name1": "张三", "thing2": "口腔科", "time3": "2026年12月1日 09:00~10:00", "enum_string6": "已预约"}

    checked = validate_template_data(template, good)
    assert checked.is_valid
    client.send_subscription_message(touser="oVisitor", template_id=template.pri_tmpl_id, data=checked.data)

    bad = {**good, "enum_string6": "已付款"}
    assert validate_template_data(template, bad).errors == {
        "enum_string6": ["Must be one of the values WeChat approved: 已预约, 已取消, 已就诊."]
    }
    with pytest.raises(PayloadError) as refused:
        client.send_subscription_message(touser="oVisitor", template_id=template.pri_tmpl_id, data=bad)
    assert refused.value.errcode == 47003
    assert isinstance(wechat_sandbox.account().subscription_templates[REGISTRATION_ID], SandboxTemplate)
    default_token_manager().forget(account.appid)
