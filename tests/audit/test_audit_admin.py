"""The audit log in the admin: read-only for everyone, superusers and wxnotify admins only, filters, search, CSV."""

from __future__ import annotations

import csv
import io

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse

from accounts.models import OfficialAccount
from accounts.selectors import ADMINS_GROUP, STAFF_GROUP
from audit.context import acting_as
from audit.export import safe_cell
from audit.models import AuditEvent, AuditLogEntry
from audit.services import record
from tests.factories import english_client

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]

LIST_URL = reverse("admin:audit_auditlogentry_changelist")


@pytest.fixture
def account() -> OfficialAccount:
    with acting_as("manage.py add_official_account"):
        return OfficialAccount.objects.create(name="=HYPERLINK(1)", appid="wxaaaaaaaaaaaaaaaa", app_secret="s" * 32)


def account_entry() -> AuditLogEntry:
    return AuditLogEntry.objects.get(content_type__model="officialaccount")


def staff_user(name: str, group: str):
    user = get_user_model().objects.create_user(name, password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return user


def test_read_only_for_a_superuser_too(admin_client, account):
    entry = account_entry()
    change_url = reverse("admin:audit_auditlogentry_change", args=[entry.pk])

    page = admin_client.get(change_url)

    assert page.status_code == 200
    assert not page.context["adminform"].form.fields  # every field read-only
    assert "manage.py add_official_account" in page.text
    assert admin_client.post(change_url, {"object_repr": "x"}).status_code == 403
    assert admin_client.get(reverse("admin:audit_auditlogentry_add")).status_code == 403
    assert admin_client.post(reverse("admin:audit_auditlogentry_delete", args=[entry.pk])).status_code == 403
    changelist = admin_client.get(LIST_URL)
    assert [name for name, *_ in changelist.context["action_form"].fields["action"].choices if name] == ["export_csv"]
    assert AuditLogEntry.objects.get(pk=entry.pk).object_repr == entry.object_repr


def test_wxnotify_admins_see_it_business_staff_do_not(account):
    assert english_client(staff_user("boss", ADMINS_GROUP)).get(LIST_URL).status_code == 200
    assert english_client(staff_user("clerk", STAFF_GROUP)).get(LIST_URL).status_code == 403


def test_every_filter_choice_and_a_search_load(admin_client, admin_user, account):
    record(AuditEvent.CAMPAIGN_CANCELLED, target=account, actor=admin_user)
    page = admin_client.get(LIST_URL)
    cl = page.context["cl"]
    titles = [str(spec.title) for spec in cl.filter_specs]
    assert titles == ["action", "by", "object type", "timestamp"]
    for spec in cl.filter_specs:
        for choice in spec.choices(cl):
            assert admin_client.get(LIST_URL + choice["query_string"]).status_code == 200

    by_event = admin_client.get(LIST_URL, {"action": AuditEvent.CAMPAIGN_CANCELLED})
    assert [entry.event for entry in by_event.context["cl"].result_list] == [AuditEvent.CAMPAIGN_CANCELLED]
    created = admin_client.get(LIST_URL, {"action": str(AuditLogEntry.Action.CREATE)})
    assert {entry.actor_name for entry in created.context["cl"].result_list} == {"manage.py add_official_account", ""}
    account_type = ContentType.objects.get_for_model(OfficialAccount).pk
    by_type = admin_client.get(LIST_URL, {"type": account_type})
    assert {entry.content_type_id for entry in by_type.context["cl"].result_list} == {account_type}
    by_admin = admin_client.get(LIST_URL, {"by": "admin"})
    assert len(by_admin.context["cl"].result_list) == 1
    found = admin_client.get(LIST_URL, {"q": "HYPERLINK"})
    assert len(found.context["cl"].result_list) == 2


def export(client, **extra) -> list[list[str]]:
    response = client.post(LIST_URL, {"action": "export_csv", "select_across": "1", "index": "0", **extra})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response.streaming
    text = b"".join(response.streaming_content).decode("utf-8").removeprefix("\ufeff")
    return list(csv.reader(io.StringIO(text)))


def test_csv_export_streams_every_entry_and_defuses_formulas(admin_client, account):
    many = 2500  # more than one chunk of the export's iterator
    AuditLogEntry.objects.bulk_create(
        AuditLogEntry(
            content_type_id=account_entry().content_type_id,
            object_pk=str(account.pk),
            object_repr=f"@SUM(A{n})" if n % 2 else f"-{n}+cmd|' /C calc'!A0",
            action=AuditLogEntry.Action.UPDATE,
            actor_name="+danger",
        )
        for n in range(many)
    )

    rows = export(admin_client, _selected_action=["1"])

    header, *body = rows
    assert header[:3] == ["ID", "Time (UTC)", "Action"]
    assert len(body) == AuditLogEntry.objects.count() == many + 2  # the admin user's creation, the account's
    [created] = [row for row in body if row[6] == "accounts.officialaccount" and row[2] == "create"]
    assert created[8] == "'=HYPERLINK(1) (wxaaaaaaaaaaaaaaaa)"
    assert "s" * 32 not in str(rows)
    danger = body[-many:]
    assert {row[3] for row in danger} == {"'+danger"}
    assert all(row[8][0] == "'" for row in danger)


def test_csv_export_of_the_selected_entries_only(admin_client, account):
    second = record(AuditEvent.CAMPAIGN_CANCELLED, target=account, details={"cancelled_messages": 2})

    _header, *body = export(admin_client, select_across="0", _selected_action=[str(second.pk)])

    assert [row[0] for row in body] == [str(second.pk)]
    assert body[0][2] == "campaign.cancelled"
    assert body[0][10] == '{"cancelled_messages": 2}'


def test_safe_cell_prefixes_every_formula_start():
    for start in ("=", "+", "-", "@", "\t", "\r"):
        assert safe_cell(f"{start}1") == f"'{start}1"
    assert safe_cell("plain =1") == "plain =1"
    assert safe_cell(None) == ""
    assert safe_cell(12) == "12"


def test_the_log_speaks_chinese(client, admin_user, account):
    client.force_login(admin_user)
    account.name = "Renamed"
    account.save()
    entry = AuditLogEntry.objects.filter(content_type__model="officialaccount").latest("pk")

    listing = client.get(LIST_URL, headers={"accept-language": "zh-hans"}).content.decode()
    detail = client.get(
        reverse("admin:audit_auditlogentry_change", args=[entry.pk]), headers={"accept-language": "zh-hans"}
    ).content.decode()

    assert "审计日志" in listing and "操作者" in listing and "对象类型" in listing
    assert all(word in detail for word in ("来源地址", "改前", "改后", "Renamed"))
