"""Recording the actions django-auditlog cannot see: each is one :class:`~audit.models.AuditLogEntry` with an event."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from auditlog.cid import get_cid
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.contenttypes.models import ContentType
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils.encoding import smart_str

from audit.models import AuditEvent, AuditLogEntry

# The model-change action each event is filed under too, so that filtering by "create" finds created campaigns.
_EVENT_ACTIONS = {
    AuditEvent.CAMPAIGN_CREATED: AuditLogEntry.Action.CREATE,
    AuditEvent.TOKEN_READ: AuditLogEntry.Action.ACCESS,
}


def record(
    event: AuditEvent,
    *,
    target: models.Model,
    details: Mapping[str, Any] | None = None,
    actor: AbstractBaseUser | None = None,
) -> AuditLogEntry:
    """Write one entry: ``event`` happened to ``target``, with ``details`` (JSON: counts, options, a reason).

    Who and from where come from the request's or command's context (``audit.context``); ``actor`` names the user
    explicitly when the caller knows it better (a service acting for someone).  Call it inside the transaction of the
    action itself, so an action that rolls back leaves no entry.  ``details`` must never hold a secret.
    """
    entry = AuditLogEntry(
        content_type=ContentType.objects.get_for_model(target),
        object_pk=smart_str(target.pk),
        object_id=target.pk if isinstance(target.pk, int) else None,
        object_repr=smart_str(target)[:1000],
        action=_EVENT_ACTIONS.get(event, AuditLogEntry.Action.UPDATE),
        event=event,
        additional_data=_jsonable(details),
        cid=get_cid(),
    )
    if actor is not None and actor.is_authenticated:
        entry.actor = actor
        entry.actor_name = actor.get_username()
    entry.save()
    return entry


def _jsonable(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """``details`` as plain JSON values (dates and decimals as DjangoJSONEncoder writes them)."""
    return json.loads(DjangoJSONEncoder().encode(dict(details or {})))
