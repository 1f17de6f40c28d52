"""The outbox writer messaging calls inside its status changes (registered with messaging.events in ``ready``).

Each call is one ``INSERT … SELECT`` from the changed rows into the outbox, limited to the accounts some active
endpoint subscribes to for that event type, and queues a nudge to the workers for after the commit.  Which event
types and accounts have subscribers is read from the tiny endpoints table and memoised in the process
(:mod:`wxnotify.memo`), so the check messaging makes before every status change costs no query: a process that
saves an endpoint forgets the memo at once, the others within ``WXNOTIFY_LOOKUP_MEMO_SECONDS``, which is how long a
new endpoint may miss events changed in another process.
"""

from __future__ import annotations

from collections import defaultdict

from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from messaging.models import Campaign, Message
from webhooks.models import Endpoint, Event
from webhooks.nudge import nudge_workers
from wxnotify.memo import remember, remembered

SUBSCRIPTIONS_MEMO_KEY = "webhooks:subscriptions"


def subscriptions() -> dict[str, frozenset[int]]:
    """Event type → ids of the accounts with an active endpoint for it."""
    found = remembered(SUBSCRIPTIONS_MEMO_KEY)
    if found is not None:
        return found
    accounts: dict[str, set[int]] = defaultdict(set)
    for account_id, event_types in Endpoint.objects.filter(active=True).values_list("account_id", "event_types"):
        for kind in event_types or ():
            accounts[kind].add(account_id)
    found = {kind: frozenset(ids) for kind, ids in accounts.items()}
    remember(SUBSCRIPTIONS_MEMO_KEY, found)
    return found


class WebhookOutbox:
    """See the module docstring; one instance is registered."""

    def wants(self, kind: str) -> bool:
        return bool(subscriptions().get(kind))

    def write_messages(self, kind: str, messages: QuerySet) -> None:
        column = _source_columns(Message)
        self._insert(
            kind,
            messages,
            [
                column("account"),
                column("id"),
                column("campaign"),
                column("status"),
                column("touser"),
                column("client_msg_id"),
                column("errcode"),
                column("errmsg"),
                column("msgid"),
                column("channel"),
            ],
        )

    def write_campaigns(self, kind: str, campaigns: QuerySet) -> None:
        column = _source_columns(Campaign)
        self._insert(
            kind,
            campaigns,
            [column("account"), "NULL", column("id"), column("state"), "''", "''", "NULL", "''", "NULL", "''"],
        )

    def _insert(self, kind: str, rows: QuerySet, select: list[str]) -> None:
        """INSERT INTO outbox … SELECT ``select`` from the rows of ``rows`` whose account subscribes to ``kind``."""
        accounts = sorted(subscriptions().get(kind, ()))
        if not accounts:
            return
        quote = connection.ops.quote_name
        meta = rows.model._meta
        pk = f"t.{quote(meta.pk.column)}"
        try:
            subquery, params = rows.values("pk").query.sql_with_params()
        except EmptyResultSet:  # e.g. pk__in=[]: no row to write
            return
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        sql = (
            f"INSERT INTO {quote(Event._meta.db_table)} ({_outbox_columns()}) "  # noqa: S608 -- names quoted, values bound
            f"SELECT %s, {', '.join(select)}, %s, %s FROM {quote(meta.db_table)} t "
            f"WHERE {pk} IN ({subquery}) AND t.{quote(meta.get_field('account').column)} IN "
            f"({', '.join(['%s'] * len(accounts))}) ORDER BY {pk}"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [kind, now, False, *params, *accounts])
            if cursor.rowcount:
                transaction.on_commit(nudge_workers)


def _source_columns(model: type):
    quote = connection.ops.quote_name
    return lambda name: f"t.{quote(model._meta.get_field(name).column)}"


def _outbox_columns() -> str:
    quote = connection.ops.quote_name
    names = (
        "kind",
        "account",
        "message",
        "campaign",
        "status",
        "touser",
        "client_msg_id",
        "errcode",
        "errmsg",
        "msgid",
        "channel",
        "occurred_at",
        "fanned_out",
    )
    return ", ".join(quote(Event._meta.get_field(name).column) for name in names)
