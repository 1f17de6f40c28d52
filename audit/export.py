"""The audit log as CSV, streamed a chunk of rows at a time so that any number of entries costs flat memory.

Cells are safe to open in a spreadsheet: one that starts with ``=``, ``+``, ``-``, ``@`` (or a tab or carriage
return, which some spreadsheets skip before reading a formula) gets a leading apostrophe, so it is shown as text and
never run as a formula (CSV injection).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import Any

from django.db.models import QuerySet
from django.utils.translation import pgettext

from audit.models import AuditLogEntry

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CHUNK_SIZE = 2000


def safe_cell(value: Any) -> str:
    """``value`` as text a spreadsheet shows as it is."""
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


class _Echo:
    """A file whose ``write`` hands the line back, for ``csv.writer`` to format one row at a time."""

    def write(self, value: str) -> str:
        return value


def header() -> list[str]:
    return [
        pgettext("audit log export", "ID"),
        pgettext("audit log export", "Time (UTC)"),
        pgettext("audit log export", "Action"),
        pgettext("audit log export", "By"),
        pgettext("audit log export", "User ID"),
        pgettext("audit log export", "Address"),
        pgettext("audit log export", "Object type"),
        pgettext("audit log export", "Object ID"),
        pgettext("audit log export", "Object"),
        pgettext("audit log export", "Changes"),
        pgettext("audit log export", "Details"),
        pgettext("audit log export", "Trace ID"),
    ]


def row(entry: AuditLogEntry) -> list[Any]:
    """One entry's cells; changes and details as JSON (secrets are "***" in the entry already)."""
    return [
        entry.pk,
        entry.timestamp.isoformat(),
        entry.event or entry.get_action_display(),
        entry.who,
        entry.actor_id or "",
        entry.remote_addr or "",
        f"{entry.content_type.app_label}.{entry.content_type.model}",
        entry.object_pk,
        entry.object_repr,
        json.dumps(entry.changes, ensure_ascii=False, sort_keys=True) if entry.changes else "",
        json.dumps(entry.additional_data, ensure_ascii=False, sort_keys=True) if entry.additional_data else "",
        entry.cid or "",
    ]


def csv_lines(entries: QuerySet[AuditLogEntry]) -> Iterator[str]:
    """The header and one line per entry of ``entries``, oldest first, read ``CHUNK_SIZE`` rows at a time."""
    writer = csv.writer(_Echo())
    yield "\ufeff"  # so that spreadsheets read the file as UTF-8
    yield writer.writerow([safe_cell(cell) for cell in header()])
    rows: Iterable[AuditLogEntry] = (
        entries.select_related("content_type").order_by("timestamp", "pk").iterator(chunk_size=CHUNK_SIZE)
    )
    for entry in rows:
        yield writer.writerow([safe_cell(cell) for cell in row(entry)])
