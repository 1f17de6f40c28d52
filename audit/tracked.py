"""The one place that says which models django-auditlog records, and how (read by ``AuditConfig.ready``).

Each entry names a model by label, so this app imports none of the apps above it.  ``mask_fields`` are secrets: a
change is recorded with the field's name and ``***`` for both values (``audit.context.mask_secret``), never the value,
old or new.  ``exclude_fields`` are left out altogether: bookkeeping the service writes itself (last error, timestamps),
which says nothing about who changed what.  ``m2m_fields`` record memberships added and removed.

A model added later goes here in one entry, as the sending rules (daily caps, the campaign approval policy) did.
A secret of a new model must be listed in its ``mask_fields``: ``tests/audit`` checks that every
``EncryptedTextField`` of a tracked model is masked.
"""

from __future__ import annotations

from typing import Any

from auditlog.registry import auditlog
from django.apps import apps

MASK_CALLABLE = "audit.context.mask_secret"

TRACKED_MODELS: list[dict[str, Any]] = [
    {
        "model": "accounts.OfficialAccount",
        "mask_fields": ["app_secret", "token", "encoding_aes_key", "token_source_url", "token_source_secret"],
        "exclude_fields": ["last_error_code", "last_error_message", "last_error_at", "created_at", "updated_at"],
        "m2m_fields": ["operators"],
    },
    {
        "model": "templates_app.MessageTemplate",
        "exclude_fields": ["synced_at", "problem_code", "problem_message", "problem_at", "created_at", "updated_at"],
    },
    {
        "model": "auth.User",
        # A new password shows as "password: *** → ***", never its hash; a sign-in is axes' record, not ours.
        "mask_fields": ["password"],
        "exclude_fields": ["last_login"],
        "m2m_fields": ["groups", "user_permissions"],
    },
    {"model": "auth.Group", "m2m_fields": ["permissions"]},
    # The sending rules; quiet hours, the time zone and the duplicate window are fields of the account above.
    {"model": "messaging.SendingCap", "exclude_fields": ["created_at", "updated_at"]},
    {"model": "messaging.ApprovalPolicy", "exclude_fields": ["updated_at"], "m2m_fields": ["templates"]},
    {
        "model": "webhooks.Endpoint",
        "mask_fields": ["secret"],
        "exclude_fields": ["created_at", "updated_at"],
    },
]


def register_tracked_models() -> None:
    """Register every model of :data:`TRACKED_MODELS` with django-auditlog (again, replacing any earlier options)."""
    for options in TRACKED_MODELS:
        model = apps.get_model(options["model"])
        auditlog.unregister(model)
        auditlog.register(
            model,
            mask_fields=list(options.get("mask_fields", [])),
            mask_callable=MASK_CALLABLE,
            exclude_fields=list(options.get("exclude_fields", [])),
            m2m_fields=set(options.get("m2m_fields", [])),
        )
