"""django-q2 task entry points of the callbacks app (their dotted paths are stored in Schedule and task rows)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from callbacks.services import dedup_seconds
from callbacks.services import prune_processed_callbacks as prune_older_than
from messaging.services import prune_applied_receipts


def prune_processed_callbacks() -> int:
    """Forget processed callbacks, and applied receipts (the de-duplication records of encrypted receipts), once no
    retry or fresh replay of them can arrive (see ``dedup_seconds``); returns how many rows went."""
    older_than = timezone.now() - timedelta(seconds=dedup_seconds())
    return prune_older_than(older_than) + prune_applied_receipts(older_than)
