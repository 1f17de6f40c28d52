"""Helpers of the audit log tests: the entries written, and every stored column of one as text."""

from __future__ import annotations

from typing import Any

from audit.models import AuditEvent, AuditLogEntry


def entries(**filters: Any) -> list[AuditLogEntry]:
    return list(AuditLogEntry.objects.filter(**filters).order_by("pk"))


def events(event: AuditEvent) -> list[AuditLogEntry]:
    return entries(event=event)


def stored_row(entry: AuditLogEntry) -> str:
    """Every column of the entry as stored, as one string: what a secret must never appear in."""
    return repr(AuditLogEntry.objects.filter(pk=entry.pk).values().get())
