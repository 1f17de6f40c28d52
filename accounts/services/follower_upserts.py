"""Writing one page of a follower sync: raw upserts of batchget entries that say which rows they created.

Split from :mod:`accounts.services.followers` (the sync's paging and bookkeeping) because the statements are
their own concern: on PostgreSQL the page travels by ``COPY``, elsewhere as bound ``VALUES``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connection

from accounts.models import Follower, OfficialAccount

# Followers per INSERT statement on the VALUES path: at most 6 values each, well within SQLite's 32,766
# parameters.
ROWS_PER_UPSERT = 1000
# Fields a re-sync refreshes for a follower WeChat reports as subscribed.  ``user`` (the binding),
# ``source`` and ``remark`` (our operators' note once the row exists) are deliberately absent.
SUBSCRIBED_UPDATE_FIELDS = [
    "unionid",
    "subscribed",
    "subscribed_at",
    "subscribe_scene",
    "qr_scene_str",
    "synced_at",
    "updated_at",
]
# An unfollowed user's batchget entry carries only openid (and maybe unionid): keep what we knew.
UNSUBSCRIBED_UPDATE_FIELDS = ["subscribed", "unsubscribed_at", "synced_at", "updated_at"]
# The session's scratch table a page is copied into on PostgreSQL (temporary: each connection has its own).
PAGE_TABLE = "wxnotify_follower_sync_page"
# Its columns: every value that differs between followers, typed as the Follower columns they fill.
PAGE_COLUMNS = {
    "openid": "varchar(64)",
    "unionid": "varchar(64)",
    "subscribed_at": "timestamp with time zone",
    "remark": "varchar(100)",
    "subscribe_scene": "varchar(64)",
    "qr_scene_str": "varchar(64)",
}


def timestamp(value: object) -> datetime | None:
    if not value:
        return None
    return datetime.fromtimestamp(int(value), tz=UTC)


@dataclass(frozen=True)
class _UpsertShape:
    """One kind of upsert: the columns that travel per follower, the values every row shares, what a conflict
    updates."""

    per_row: tuple[str, ...]
    shared: dict[str, Any]
    update_fields: list[str]


class FollowerUpserts:
    """Raw upserts of one page of batchget entries, each statement saying which of its rows it inserted.

    With ``bulk_create`` the ORM built a model instance and adapted every value of it one field at a time, and
    learning which followers were new took a SELECT per chunk: most of a sync's time at 100,000 followers.
    Here ``INSERT … SELECT … ON CONFLICT DO UPDATE`` writes them: only the values that differ between
    followers travel per row, the shared ones are bound once.  Its ``RETURNING`` tells new rows from updated
    ones: a row the statement inserted has ``created_at`` equal to ``updated_at`` (both this page's time), a
    row it updated keeps its older ``created_at``.

    Where the rows come from depends on the database.  On PostgreSQL they are copied (``COPY``) into a
    temporary table and one statement upserts them all: Django's psycopg cursor binds parameters on the
    client, one regular-expression step per placeholder: more than half of the sync process's CPU (about
    200 ms per 10,000 followers against 26 ms for the copy; bench/RESULTS.md, "The million").  Elsewhere
    (SQLite) ``FROM (VALUES …)`` statements of ``ROWS_PER_UPSERT`` rows carry them.  Every concrete column
    but the id is spelled out, so a new Follower field without a value here fails loudly instead of
    silently missing its default.
    """

    COLUMNS = (
        "account",
        "openid",
        "unionid",
        "user",
        "subscribed",
        "subscribed_at",
        "unsubscribed_at",
        "source",
        "remark",
        "subscribe_scene",
        "qr_scene_str",
        "last_interaction_at",
        "synced_at",
        "created_at",
        "updated_at",
    )
    # A VALUES column that is NULL in every row is text to PostgreSQL, which then refuses it for a timestamp
    # column: such a column is selected as a plain NULL instead.
    NULLABLE_PER_ROW = frozenset({"subscribed_at"})

    def __init__(self, account: OfficialAccount, now: datetime) -> None:
        fields = {field.name: field for field in Follower._meta.concrete_fields if not field.primary_key}
        missing = set(fields) - set(self.COLUMNS)
        if missing:
            raise RuntimeError(f"the follower sync does not fill Follower fields {sorted(missing)}")
        self.adapt_datetime = connection.ops.adapt_datetimefield_value
        adapted_now = self.adapt_datetime(now)
        shared = {
            "account": account.pk,
            "user": None,
            "source": Follower.Source.SYNC.value,
            "last_interaction_at": None,
            "synced_at": adapted_now,
            "created_at": adapted_now,
            "updated_at": adapted_now,
        }
        self.shapes = {
            True: _UpsertShape(
                per_row=("openid", "unionid", "subscribed_at", "remark", "subscribe_scene", "qr_scene_str"),
                shared={**shared, "subscribed": True, "unsubscribed_at": None},
                update_fields=SUBSCRIBED_UPDATE_FIELDS,
            ),
            # An unfollowed user's entry carries only openid (and maybe unionid): an existing row keeps the rest.
            False: _UpsertShape(
                per_row=("openid", "unionid"),
                shared={
                    **shared,
                    "subscribed": False,
                    "subscribed_at": None,
                    "unsubscribed_at": adapted_now,
                    "remark": "",
                    "subscribe_scene": "",
                    "qr_scene_str": "",
                },
                update_fields=UNSUBSCRIBED_UPDATE_FIELDS,
            ),
        }
        quote = connection.ops.quote_name
        self.column = {name: quote(field.column) for name, field in fields.items()}
        self.table = quote(Follower._meta.db_table)

    def subscribed_row(self, info: dict) -> tuple:
        return (
            info["openid"],
            info.get("unionid", ""),
            self.adapt_datetime(timestamp(info.get("subscribe_time"))),
            info.get("remark", "")[:100],
            info.get("subscribe_scene", ""),
            info.get("qr_scene_str", ""),
        )

    @staticmethod
    def unsubscribed_row(info: dict) -> tuple:
        return (info["openid"], info.get("unionid", ""))

    def _upsert(self, shape: _UpsertShape, select: list[str], source: str) -> tuple[str, list[Any]]:
        """The statement over ``source`` (a FROM clause) whose per-row columns are ``select``, and its params."""
        column = self.column
        expressions, params = [], []
        for name in self.COLUMNS:
            if name in shape.per_row:
                expressions.append(select[shape.per_row.index(name)])
            else:
                expressions.append("%s")
                params.append(shape.shared[name])
        updates = ", ".join(f"{column[name]} = EXCLUDED.{column[name]}" for name in shape.update_fields)
        # "WHERE 1 = 1" lets SQLite tell the upsert clause from a join constraint.
        sql = (
            f"INSERT INTO {self.table} ({', '.join(column[name] for name in self.COLUMNS)}) "  # noqa: S608
            f"SELECT {', '.join(expressions)} FROM {source} "
            f"WHERE 1 = 1 ON CONFLICT ({column['account']}, {column['openid']}) DO UPDATE SET {updates} "
            f"RETURNING {column['created_at']} = {column['updated_at']}"
        )
        return sql, params

    def _values_statement(self, shape: _UpsertShape, rows: list[tuple]) -> tuple[str, list[Any]]:
        select = []
        for index, name in enumerate(shape.per_row):
            if name in self.NULLABLE_PER_ROW and all(row[index] is None for row in rows):
                select.append("NULL")
            else:
                select.append(f"v.column{index + 1}")
        row_placeholders = f"({', '.join(['%s'] * len(shape.per_row))})"
        sql, params = self._upsert(shape, select, f"(VALUES {', '.join([row_placeholders] * len(rows))}) AS v")
        params.extend(value for row in rows for value in row)
        return sql, params

    def write(self, rows: list[tuple], *, subscribed: bool) -> int:
        """Upsert ``rows`` (all subscribed or all not); return how many of them were new followers."""
        if not rows:
            return 0
        shape = self.shapes[subscribed]
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                return self._write_copied(cursor, shape, rows)
            created = 0
            for start in range(0, len(rows), ROWS_PER_UPSERT):
                cursor.execute(*self._values_statement(shape, rows[start : start + ROWS_PER_UPSERT]))
                created += sum(1 for (inserted,) in cursor.fetchall() if inserted)
        return created

    def _write_copied(self, cursor: Any, shape: _UpsertShape, rows: list[tuple]) -> int:
        """PostgreSQL: copy the rows into the session's page table, upsert from it, empty it again."""
        quote = connection.ops.quote_name
        columns = ", ".join(quote(name) for name in shape.per_row)
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {PAGE_TABLE} "
            f"({', '.join(f'{quote(name)} {kind}' for name, kind in PAGE_COLUMNS.items())}) ON COMMIT DELETE ROWS"
        )
        with cursor.copy(f"COPY {PAGE_TABLE} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        select = [f"p.{quote(name)}" for name in shape.per_row]
        sql, params = self._upsert(shape, select, f"{PAGE_TABLE} AS p")
        cursor.execute(
            f"WITH written (inserted) AS ({sql}) SELECT count(*) FILTER (WHERE inserted) FROM written",  # noqa: S608
            params,
        )
        (created,) = cursor.fetchone()
        cursor.execute(f"TRUNCATE {PAGE_TABLE}")
        return created
