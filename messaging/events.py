"""Status changes as events, written in the same transaction as the change (a transactional outbox).

A message becoming sent, delivered or failed, and a campaign finishing, are events the calling services may want
pushed to them (the ``webhooks`` app).  messaging sits below that app and must not import it, so the outbox is
reached through a hook: an app above registers an :class:`OutboxWriter` in its ``ready``, and every place here that
changes a status asks :func:`wanted` and, when some writer wants the kind, calls :func:`record_messages` or
:func:`record_campaigns` *inside the transaction of the change*, on the same connection.  The writer turns the
changed rows into outbox rows with one ``INSERT … SELECT`` per batch, so the event commits or rolls back with the
change and no event is lost or invented, and nothing travels through Python.

Why a hook and not a signal after the fact (``post_save`` never fires for bulk updates) or the outbox model living
here: the outbox rows name the endpoints' subscriptions and are delivered by the webhooks app's workers; keeping
them there keeps messaging free of any notion of webhooks, and with no writer registered every call is a no-op.

:func:`wanted` must be cheap: it is asked on the send pipeline's hot path (every write-back of outcomes), and when
it says no the status change runs exactly as it would without events (no transaction, no extra query).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from django.db import transaction
from django.db.models import QuerySet

MESSAGE_SENT = "message.sent"
MESSAGE_DELIVERED = "message.delivered"
MESSAGE_FAILED = "message.failed"
CAMPAIGN_FINISHED = "campaign.finished"
KINDS = (MESSAGE_SENT, MESSAGE_DELIVERED, MESSAGE_FAILED, CAMPAIGN_FINISHED)


class OutboxWriter(Protocol):
    """What an app above messaging provides to receive events (see the module docstring)."""

    def wants(self, kind: str) -> bool:
        """Whether some subscriber takes ``kind`` events at all; called before every status change, so cheap."""

    def write_messages(self, kind: str, messages: QuerySet) -> None:
        """Write a ``kind`` event for each message of ``messages`` (already in its new state), in the caller's
        transaction."""

    def write_campaigns(self, kind: str, campaigns: QuerySet) -> None:
        """Write a ``kind`` event for each campaign of ``campaigns``, in the caller's transaction."""


_writers: list[OutboxWriter] = []


def register_writer(writer: OutboxWriter) -> None:
    """Called once by an app's ``ready``; registering the same writer again does nothing."""
    if writer not in _writers:
        _writers.append(writer)


def wanted(kind: str) -> bool:
    return any(writer.wants(kind) for writer in _writers)


def record_messages(kind: str, messages: QuerySet) -> None:
    """Write ``kind`` events for ``messages``; call inside the transaction that gave them their new status."""
    for writer in _writers:
        if writer.wants(kind):
            writer.write_messages(kind, messages)


def record_campaigns(kind: str, campaigns: QuerySet) -> None:
    for writer in _writers:
        if writer.wants(kind):
            writer.write_campaigns(kind, campaigns)


@contextmanager
def recording(kind: str) -> Iterator[bool]:
    """A transaction around a status change when ``kind`` events are wanted (yields True), else nothing.

    The change inside and the :func:`record_messages` after it then commit together.
    """
    if not wanted(kind):
        yield False
        return
    with transaction.atomic():
        yield True


def update_recording(queryset: QuerySet, kind: str, **changes: Any) -> int:
    """``queryset.update(**changes)`` that also writes a ``kind`` event for each row it changed.

    Without subscribers this is the plain UPDATE.  With them, the rows are locked and their ids read first (``SELECT
    … FOR UPDATE``, so no other writer can change them before our UPDATE), updated, and their events written, in
    one transaction.  For the sweeper's and the receipts' updates, which touch few rows.
    """
    if not wanted(kind):
        return queryset.update(**changes)
    with transaction.atomic():
        ids = list(queryset.select_for_update(of=("self",)).values_list("pk", flat=True))
        if not ids:
            return 0
        changed = queryset.filter(pk__in=ids).update(**changes)
        record_messages(kind, queryset.model.objects.filter(pk__in=ids))
    return changed
