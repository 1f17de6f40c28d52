"""The audit log's one table: django-auditlog's log entry with what our action records add, append-only.

django-auditlog writes an entry for each change of a tracked model (``action`` create/update/delete, ``changes`` the
fields with their old and new values, secrets masked); :func:`audit.services.record` writes the actions it cannot see,
with an ``event`` and their ``additional_data``.  Who, when and from where are filled the same way for both: by the
request's context (``audit.context``), or by the command or task that acts (``actor_name``).

Rows are never changed or removed through the ORM: saving an existing row, deleting one, and a queryset's
``update``/``delete``/``bulk_update`` raise :class:`AppendOnlyError`.  Should old entries ever have to go, that is a
management command of its own that records its run here first (none exists; django-auditlog's ``auditlogflush`` is
replaced by one that refuses).  The two changes the database itself may still make: deleting a user sets ``actor`` to
NULL (``actor_name`` keeps their username), and a content type in use cannot be deleted.
"""

from __future__ import annotations

from typing import Any, NoReturn

from auditlog.models import AbstractLogEntry, LogEntryManager
from django.db import models
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy


class AppendOnlyError(Exception):
    """An attempt to change or remove an audit log entry."""

    def __init__(self, what: str) -> None:
        super().__init__(f"The audit log is append-only: {what} is refused.")


class AuditLogQuerySet(models.QuerySet):
    """Reads and inserts only: every bulk change of existing rows raises."""

    def update(self, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("updating entries")

    def bulk_update(self, objs: Any, fields: Any, batch_size: int | None = None) -> NoReturn:
        raise AppendOnlyError("updating entries")

    def delete(self) -> NoReturn:
        raise AppendOnlyError("deleting entries")

    delete.queryset_only = True


class AuditLogManager(LogEntryManager.from_queryset(AuditLogQuerySet)):
    """django-auditlog's manager (``log_create``, ``get_for_object`` ...) over the append-only queryset."""


class AuditEvent(models.TextChoices):
    """The actions recorded by :func:`audit.services.record`, beside django-auditlog's model changes."""

    SECRETS_REENCRYPTED = "secrets.reencrypted", _("secrets re-encrypted under the first key")
    TEMPLATES_SYNCED = "templates.synced", _("templates synced from WeChat")
    CAMPAIGN_CREATED = "campaign.created", _("campaign created")
    CAMPAIGN_APPROVED = "campaign.approved", _("campaign approved")
    CAMPAIGN_REJECTED = "campaign.rejected", _("campaign rejected")
    CAMPAIGN_CANCELLED = "campaign.cancelled", _("campaign cancelled")
    CAMPAIGN_RETRIED = "campaign.retried", _("failed messages of a campaign retried")
    TOKEN_READ = "token.read", _("access_token read through the token API")


class AuditLogEntry(AbstractLogEntry):
    """One sensitive action: a tracked model created, changed or deleted, or an :class:`AuditEvent`."""

    # PROTECT, not django-auditlog's CASCADE: removing a content type must not take its entries with it.
    content_type = models.ForeignKey(
        "contenttypes.ContentType", on_delete=models.PROTECT, related_name="+", verbose_name=_("object type")
    )
    event = models.CharField(
        pgettext_lazy("audit log", "event"), max_length=40, choices=AuditEvent.choices, blank=True, db_index=True
    )
    actor_name = models.CharField(
        pgettext_lazy("audit log", "by"),
        max_length=150,
        blank=True,
        db_index=True,
        help_text=_("The user's username at the time, or the command or task that acted; empty: the system."),
    )

    objects = AuditLogManager()

    class Meta(AbstractLogEntry.Meta):
        verbose_name = _("audit log entry")
        verbose_name_plural = _("audit log")
        indexes = [models.Index(fields=["content_type", "object_pk"], name="audit_entry_object_idx")]

    def __str__(self) -> str:
        return f"{self.timestamp:%Y-%m-%d %H:%M:%S} {self.action_label} {self.object_repr}"

    @property
    def action_label(self) -> str:
        """The event's name for an action record, else the model change's (create, update, delete)."""
        if self.event:
            return str(self.get_event_display())
        return str(self.get_action_display())

    @property
    def who(self) -> str:
        """The user's name, the command's or task's, or "system" when nothing said who acted."""
        return self.actor_name or str(pgettext_lazy("audit log", "system"))

    @property
    def default_actor_name(self) -> str:
        return self.actor_name

    @default_actor_name.setter
    def default_actor_name(self, value: str) -> None:
        """Set by the request's or command's context (``audit.context``) as each entry is written: a name given
        explicitly (:func:`audit.services.record` with ``actor``) wins."""
        if not self.actor_name:
            self.actor_name = (value or "")[:150]

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError("changing an entry")
        if not self.actor_name and self.actor_id:
            self.actor_name = self.actor.get_username()
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("deleting an entry")
