"""Migration messaging 0009 (the message table's indexes for delivery) applies and reverses on either database.

On PostgreSQL it builds and drops indexes CONCURRENTLY, which cannot run in a transaction: the test runs the
migrations outside one (``transaction=True``).
"""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection

pytestmark = pytest.mark.django_db(transaction=True)

TABLE = "messaging_message"
BEFORE = {"message_sending_lease", "message_account_msgid"}
AFTER = {"message_sending_claim", "message_account_msgid_set", "message_queued_unknown"}
FOREIGN_KEY_INDEXES = {"messaging_message_account_id_21900bb3", "messaging_message_campaign_id_cc233015"}


def message_indexes() -> set[str]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, TABLE)
    return {name for name, details in constraints.items() if details["index"]}


def test_migration_0009_swaps_the_indexes_both_ways():
    assert message_indexes() >= AFTER
    assert not (BEFORE | FOREIGN_KEY_INDEXES) & message_indexes()

    call_command("migrate", "messaging", "0008", verbosity=0)
    try:
        indexes = message_indexes()
        assert indexes >= BEFORE | FOREIGN_KEY_INDEXES
        assert not AFTER & indexes
    finally:
        call_command("migrate", "messaging", verbosity=0)

    assert message_indexes() >= AFTER
    assert not (BEFORE | FOREIGN_KEY_INDEXES) & message_indexes()
