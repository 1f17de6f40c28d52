"""Migration operations for indexes on tables that hold millions of rows while the service runs.

On PostgreSQL an index is built or dropped ``CONCURRENTLY``: a plain ``CREATE INDEX`` on a table of a million
messages blocks every write to it (claims, write-backs, new messages) for as long as the build takes, and a plain
``DROP INDEX`` waits for, and then blocks, every query on the table.  Concurrent operations cannot run inside a
transaction, so a migration using these must say ``atomic = False``.  Other databases (SQLite, the embedded
default) have no such option and get the ordinary operation.
"""

from __future__ import annotations

from typing import Any

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations


def _is_postgresql(schema_editor: Any) -> bool:
    return schema_editor.connection.vendor == "postgresql"


class AddIndexOnline(AddIndexConcurrently):
    """``AddIndex``, built ``CONCURRENTLY`` on PostgreSQL."""

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if _is_postgresql(schema_editor):
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            migrations.AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if _is_postgresql(schema_editor):
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            migrations.AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)


class RemoveIndexOnline(RemoveIndexConcurrently):
    """``RemoveIndex``, dropped ``CONCURRENTLY`` on PostgreSQL (and built so when the migration is reversed)."""

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if _is_postgresql(schema_editor):
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            migrations.RemoveIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if _is_postgresql(schema_editor):
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            migrations.RemoveIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)


class DropColumnIndexOnline(migrations.RunSQL):
    """Drop the single-column index Django made for a foreign key (``name``, on ``table (column)``).

    For use with ``db_index=False`` on that field through ``SeparateDatabaseAndState``: Django's own
    ``AlterField`` would drop it without ``CONCURRENTLY``, and on SQLite rebuild the whole table to do so.
    Reversing the migration builds the index again.
    """

    def __init__(self, table: str, column: str, name: str) -> None:
        self.table, self.column, self.name = table, column, name
        super().__init__(sql="", reverse_sql="")

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return self.__class__.__qualname__, [], {"table": self.table, "column": self.column, "name": self.name}

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        concurrently = " CONCURRENTLY" if _is_postgresql(schema_editor) else ""
        quote = schema_editor.quote_name
        schema_editor.execute(f"DROP INDEX{concurrently} IF EXISTS {quote(self.name)}")

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        concurrently = " CONCURRENTLY" if _is_postgresql(schema_editor) else ""
        quote = schema_editor.quote_name
        schema_editor.execute(
            f"CREATE INDEX{concurrently} IF NOT EXISTS {quote(self.name)} ON {quote(self.table)} ({quote(self.column)})"
        )

    def describe(self) -> str:
        return f"Drop index {self.name} on {self.table} ({self.column})"
