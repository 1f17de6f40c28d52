"""Admin of the message log: read-only pages, scope by account, campaign actions, group permissions."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from django.urls import reverse

from accounts.models import OfficialAccount
from accounts.selectors import ADMINS_GROUP, STAFF_GROUP
from messaging.models import Campaign, DeliveryReceipt, Message, SendingCap
from templates_app.models import MessageTemplate

pytestmark = pytest.mark.django_db


def make_account(appid: str, name: str) -> OfficialAccount:
    return OfficialAccount.objects.create(name=name, appid=appid, app_secret="s" * 32, token="tok")


def make_template(account: OfficialAccount) -> MessageTemplate:
    return MessageTemplate.objects.create(
        account=account,
        template_id=f"tpl-{account.appid}",
        title="工单状态变更通知",
        content="工单名称:{{thing1.DATA}}",
        keywords=[{"name": "thing1", "type": "thing"}],
    )


def make_message(account, template, **fields) -> Message:
    values = {
        "account": account,
        "template": template,
        "template_id_sent": template.template_id,
        "touser": f"o-{account.appid[-4:]}-{Message.objects.count()}",
        "data": {"thing1": {"value": "打印机故障"}},
        "client_msg_id": f"cm-{Message.objects.count()}",
    }
    values.update(fields)
    return Message.objects.create(**values)


@pytest.fixture
def two_accounts():
    first = make_account("wx00000000000000a1", "Account A")
    second = make_account("wx00000000000000b2", "Account B")
    return (first, make_template(first)), (second, make_template(second))


@pytest.fixture
def staff_client(client, django_user_model, two_accounts):
    (account_a, _template_a), _b = two_accounts
    user = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=STAFF_GROUP))
    account_a.operators.add(user)
    client.force_login(user)
    return client


def test_groups_get_their_messaging_permissions():
    staff = set(Group.objects.get(name=STAFF_GROUP).permissions.filter(content_type__app_label="messaging"))
    admins = set(Group.objects.get(name=ADMINS_GROUP).permissions.filter(content_type__app_label="messaging"))
    assert {p.codename for p in staff} == {
        "view_message",
        "add_message",
        "view_campaign",
        "add_campaign",
        "view_deliveryreceipt",
    }
    assert admins == set(Permission.objects.filter(content_type__app_label="messaging"))


def test_superuser_sees_the_log_read_only_and_finds_a_msgid(admin_client, two_accounts):
    (account, template), _b = two_accounts
    sent = make_message(account, template, status=Message.Status.SENT, msgid=3487542469355618313)
    failed = make_message(account, template, status=Message.Status.FAILED, errcode=43004, errmsg="require subscribe")
    changelist = reverse("admin:messaging_message_changelist")
    response = admin_client.get(changelist, HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200
    content = response.content.decode()
    assert sent.touser in content
    assert "43004: Recipient does not follow the account. (require subscribe)" in content

    found = admin_client.get(changelist, {"q": "3487542469355618313"})
    assert list(found.context["cl"].result_list) == [sent]
    assert admin_client.get(changelist, {"q": failed.touser}).context["cl"].result_list[0] == failed

    detail = admin_client.get(reverse("admin:messaging_message_change", args=[sent.pk]))
    assert detail.status_code == 200
    assert b'name="_save"' not in detail.content
    assert admin_client.get(reverse("admin:messaging_message_add")).status_code == 403
    assert admin_client.post(reverse("admin:messaging_message_delete", args=[sent.pk])).status_code == 403


def test_staff_see_only_their_accounts(staff_client, two_accounts):
    (account_a, template_a), (account_b, template_b) = two_accounts
    mine = make_message(account_a, template_a)
    theirs = make_message(account_b, template_b)
    response = staff_client.get(reverse("admin:messaging_message_changelist"))
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [mine]
    assert staff_client.get(reverse("admin:messaging_message_change", args=[theirs.pk])).status_code == 404
    campaign_b = Campaign.objects.create(
        account=account_b, template=template_b, data={}, recipient_kind=Campaign.RecipientKind.OPENIDS
    )
    assert staff_client.get(reverse("admin:messaging_campaign_change", args=[campaign_b.pk])).status_code == 404
    receipt_b = DeliveryReceipt.objects.create(account=account_b, msgid=1, wechat_status="success")
    receipts = staff_client.get(reverse("admin:messaging_deliveryreceipt_changelist"))
    assert receipt_b not in receipts.context["cl"].result_list


def test_campaign_list_shows_counts_and_the_cancel_action_works(staff_client, two_accounts):
    (account, template), _b = two_accounts
    campaign = Campaign.objects.create(
        account=account,
        template=template,
        name="Weekly",
        data={"thing1": {"value": "打印机故障"}},
        recipient_kind=Campaign.RecipientKind.OPENIDS,
        recipient_count=4,
        state=Campaign.State.RUNNING,
    )
    for status in (Message.Status.SENT, Message.Status.SENT, Message.Status.QUEUED, Message.Status.QUEUED):
        make_message(account, template, campaign=campaign, data=None, status=status)
    changelist = reverse("admin:messaging_campaign_changelist")
    content = staff_client.get(changelist, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Sent: 2" in content
    assert "Queued: 2" in content
    assert "50%" in content

    response = staff_client.post(
        changelist, {"action": "cancel_selected", "_selected_action": [campaign.pk]}, follow=True
    )
    assert response.status_code == 200
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.CANCELLED
    assert Message.objects.filter(campaign=campaign, status=Message.Status.FAILED).count() == 2


def test_retry_action_requeues_failed_messages(admin_client, two_accounts):
    (account, template), _b = two_accounts
    campaign = Campaign.objects.create(
        account=account,
        template=template,
        data={"thing1": {"value": "打印机故障"}},
        recipient_kind=Campaign.RecipientKind.OPENIDS,
        state=Campaign.State.DONE,
    )
    failed = make_message(account, template, campaign=campaign, data=None, status=Message.Status.FAILED, attempts=5)
    admin_client.post(
        reverse("admin:messaging_campaign_changelist"),
        {"action": "retry_failed_messages", "_selected_action": [campaign.pk]},
    )
    failed.refresh_from_db()
    campaign.refresh_from_db()
    assert (failed.status, failed.attempts) == (Message.Status.QUEUED, 0)
    assert campaign.state == Campaign.State.RUNNING


def test_unmatched_receipts_are_visible(admin_client, two_accounts):
    (account, _template), _b = two_accounts
    DeliveryReceipt.objects.create(
        account=account, msgid=0, wechat_status="success", state=DeliveryReceipt.State.UNMATCHED
    )
    response = admin_client.get(reverse("admin:messaging_deliveryreceipt_changelist"), {"state__exact": "unmatched"})
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 1


# --- Sending caps -------------------------------------------------------------------------------------------------


@pytest.fixture
def admin_member_client(client, django_user_model, two_accounts):
    """A wxnotify admin (not a superuser): the group's permissions alone must let them edit caps."""
    user = django_user_model.objects.create_user("capadmin", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=ADMINS_GROUP))
    client.force_login(user)
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"
    return client


def _cap_form(account, template=None, limit="3", action="fail") -> dict[str, str]:
    template_pk = str(template.pk) if template else ""
    return {"account": str(account.pk), "template": template_pk, "limit": limit, "action": action}


def test_admins_add_caps_and_invalid_ones_are_refused_with_clear_errors(admin_member_client, two_accounts):
    (account, template), (other, other_template) = two_accounts
    add = reverse("admin:messaging_sendingcap_add")

    assert admin_member_client.post(add, _cap_form(account)).status_code == 302
    assert admin_member_client.post(add, _cap_form(account, template, action="hold")).status_code == 302
    assert list(SendingCap.objects.values_list("template", "limit", "action").order_by("pk")) == [
        (None, 3, "fail"),
        (template.pk, 3, "hold"),
    ]

    refused = {
        "a second all-templates cap": (_cap_form(account), "already has a cap for all templates"),
        "a second cap of the template": (_cap_form(account, template), "already has a cap for this template"),
        "another account's template": (_cap_form(account, other_template), "Choose a template of this account."),
        "a limit of 0": (_cap_form(other, limit="0"), "greater than or equal to 1"),
    }
    for label, (form, error) in refused.items():
        response = admin_member_client.post(add, form)
        assert response.status_code == 200, label
        assert error in response.content.decode(), label
    assert SendingCap.objects.count() == 2

    listing = admin_member_client.get(reverse("admin:messaging_sendingcap_changelist")).content.decode()
    assert "all templates" in listing and template.title in listing


def test_staff_do_not_see_caps_in_the_admin(staff_client, two_accounts):
    (account, _template), _b = two_accounts
    SendingCap.objects.create(account=account, limit=2)
    assert staff_client.get(reverse("admin:messaging_sendingcap_changelist")).status_code == 403
