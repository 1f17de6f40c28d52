"""The audit log is append-only at the ORM level: entries are written, never changed or removed."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import ProtectedError

from accounts.models import OfficialAccount
from audit.models import AppendOnlyError, AuditEvent, AuditLogEntry
from audit.services import record

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


@pytest.fixture
def entry(account_a: OfficialAccount) -> AuditLogEntry:
    return record(AuditEvent.CAMPAIGN_CANCELLED, target=account_a, details={"cancelled_messages": 1})


def test_an_entry_is_written_once_and_never_saved_again(entry):
    entry.object_repr = "rewritten"
    with pytest.raises(AppendOnlyError, match="append-only"):
        entry.save()
    assert AuditLogEntry.objects.get(pk=entry.pk).object_repr != "rewritten"


def test_an_entry_is_never_deleted(entry):
    with pytest.raises(AppendOnlyError):
        entry.delete()
    with pytest.raises(AppendOnlyError):
        AuditLogEntry.objects.filter(pk=entry.pk).delete()
    with pytest.raises(AppendOnlyError):
        AuditLogEntry.objects.all().delete()
    assert AuditLogEntry.objects.filter(pk=entry.pk).exists()


def test_entries_are_never_updated_in_bulk(entry):
    with pytest.raises(AppendOnlyError):
        AuditLogEntry.objects.filter(pk=entry.pk).update(actor_name="someone else")
    entry.actor_name = "someone else"
    with pytest.raises(AppendOnlyError):
        AuditLogEntry.objects.bulk_update([entry], ["actor_name"])
    assert AuditLogEntry.objects.get(pk=entry.pk).actor_name == ""


def test_auditlogflush_is_refused(entry):
    for args in ([], ["--yes"], ["--yes", "--truncate"]):
        with pytest.raises(CommandError, match="append-only"):
            call_command("auditlogflush", *args, stdout=StringIO())
    assert AuditLogEntry.objects.filter(pk=entry.pk).exists()


def test_a_content_type_with_entries_cannot_be_removed(entry):
    with pytest.raises(ProtectedError):
        ContentType.objects.get_for_model(OfficialAccount).delete()


def test_an_entry_without_any_actor_is_the_systems(entry):
    assert (entry.actor, entry.actor_name, entry.who) == (None, "", "system")
    assert entry.action_label == "campaign cancelled"


def test_django_auditlogs_own_table_does_not_exist():
    """Its migrations would create its swapped-out table, whose foreign key to the content types stops PostgreSQL from
    emptying them (flush, transactional tests): MIGRATION_MODULES leaves them out."""
    assert "auditlog_logentry" not in connection.introspection.table_names()
    assert "audit_auditlogentry" in connection.introspection.table_names()
