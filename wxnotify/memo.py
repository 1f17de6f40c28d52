"""A per-process memo of the look-ups every API request repeats and that rarely change.

Who an API token belongs to (with that user's permissions), which accounts the user's groups let them see,
whether they may use an official account, and a template's keyword rules: each is a query, and together they
were about half of the CPU one ``POST /api/v1/messages/`` cost.  Serving them from memory keeps the send
endpoint within its latency budget.

Why in the process (Django's ``LocMemCache`` under the ``lookups`` alias) and not the shared cache: a Redis or
database-cache read is a round trip plus unpickling, about what the query itself costs.

How stale an entry may be: it lives ``WXNOTIFY_LOOKUP_MEMO_SECONDS`` (10 s by default; 0 turns the memo off).
Only positive answers are kept, so a new token, a new grant or a newly synced template works at once
everywhere (a staff member promoted to the admins group is the exception: the wider scope may take the
lifetime to reach other processes).  A change saved through the ORM (``save``, ``delete``, many-to-many
changes; see the receivers the apps connect in ``ready``) empties the memo of the process that made it at once;
other processes notice within the lifetime.  So a revoked token, a withdrawn account or a deactivated template
can still be used for up to that many seconds by a process that used it just before.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from django.core.cache import BaseCache, caches
from django.db.models import Model
from django.db.models.signals import m2m_changed, post_delete, post_save

LOOKUP_CACHE_ALIAS = "lookups"


def lookup_memo() -> BaseCache:
    return caches[LOOKUP_CACHE_ALIAS]


def memo_seconds() -> int:
    return settings.WXNOTIFY_LOOKUP_MEMO_SECONDS


def memo_key(kind: str, *parts: object) -> str:
    """A key for ``parts`` that is safe whatever they hold (user input, secrets): the parts are hashed."""
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode("utf-8")).hexdigest()
    return f"{kind}:{digest}"


def remembered(key: str) -> Any:
    """The value memoised under ``key``, or None."""
    if memo_seconds() <= 0:
        return None
    return lookup_memo().get(key)


def remember(key: str, value: Any) -> None:
    """Keep ``value`` (not None) under ``key`` for the memo's lifetime."""
    seconds = memo_seconds()
    if seconds > 0 and value is not None:
        lookup_memo().set(key, value, timeout=seconds)


def forget_lookups(**kwargs: Any) -> None:
    """Empty this process's memo; a signal receiver (any arguments), because any of the watched changes may matter.

    Changes to what is memoised are rare (an admin edits a user, an account, a template), so emptying the whole
    memo costs a handful of queries afterwards and needs no bookkeeping of which entry depends on what.
    """
    lookup_memo().clear()


def forget_lookups_on_change(*models: type[Model]) -> None:
    """Empty the memo whenever an instance of one of ``models`` is saved or deleted, or, for the ``through``
    model of a many-to-many field, whenever that relation changes.  Apps call this in ``ready``."""
    for model in models:
        uid = f"wxnotify.memo:{model._meta.label}"
        if model._meta.auto_created:
            m2m_changed.connect(forget_lookups, sender=model, dispatch_uid=uid)
        else:
            post_save.connect(forget_lookups, sender=model, dispatch_uid=uid)
            post_delete.connect(forget_lookups, sender=model, dispatch_uid=uid)
