"""The audit log in the admin: read-only for everyone (superusers too), with filters, search and CSV export.

Only superusers and the "wxnotify admins" group (``view_auditlogentry``, migration 0002) see it: the entries speak of
every account, so business staff are refused it like the other global pages.  django-auditlog registers an admin of
its own for the log entry model; ours replaces it.
"""

from __future__ import annotations

import json
from typing import Any

from auditlog.admin import LogEntryAdmin
from auditlog.render import get_field_verbose_name
from django.contrib import admin
from django.contrib.contenttypes.models import ContentType
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from audit.export import csv_lines
from audit.models import AuditEvent, AuditLogEntry

admin.site.unregister(AuditLogEntry)

# How many changed field names the list shows before "…".
SUMMARY_FIELDS = 6
# How many of the latest entries the "by" and "object type" filters take their choices from.
RECENT_ENTRIES = 10_000
# A membership change as the changes table words it (the "before" column of a many-to-many row).
M2M_OPERATIONS = {"add": pgettext_lazy("audit log", "added"), "delete": pgettext_lazy("audit log", "removed")}


class ActionFilter(admin.SimpleListFilter):
    """Model changes (created, changed, deleted) and the recorded events, in one list."""

    title = pgettext_lazy("audit log", "action")
    parameter_name = "action"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, Any]]:
        changes = [(str(value), label) for value, label in AuditLogEntry.Action.choices]
        return changes + [(value, label) for value, label in AuditEvent.choices]

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuditLogEntry]) -> QuerySet[AuditLogEntry]:
        value = self.value()
        if value is None:
            return queryset
        if value in AuditEvent.values:
            return queryset.filter(event=value)
        if value.isdigit():
            return queryset.filter(event="", action=int(value))
        return queryset.none()


def recent_entries(queryset: QuerySet[AuditLogEntry]) -> QuerySet[AuditLogEntry]:
    """The last ``RECENT_ENTRIES`` entries (by id, through the primary key's index): where the "by" and "object type"
    filters find their choices, so that listing them costs the same on a log of any length.  Older names and types
    are still found through the search box or the filter's parameter in the URL."""
    latest = queryset.order_by("-pk").values_list("pk", flat=True).first()
    return queryset.filter(pk__gt=(latest or 0) - RECENT_ENTRIES)


class ActorFilter(admin.SimpleListFilter):
    """Who acted: each user, command or task of the recent entries ("system" when nothing said who)."""

    title = pgettext_lazy("audit log", "by")
    parameter_name = "by"
    SYSTEM = "-"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, Any]]:
        names = (
            recent_entries(model_admin.get_queryset(request))
            .exclude(actor_name="")
            .order_by("actor_name")
            .values_list("actor_name", flat=True)
            .distinct()
        )
        return [(self.SYSTEM, pgettext_lazy("audit log", "system")), *((name, name) for name in names)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuditLogEntry]) -> QuerySet[AuditLogEntry]:
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(actor_name="" if value == self.SYSTEM else value)


class ObjectTypeFilter(admin.SimpleListFilter):
    """What kind of object: the types of the recent entries, by their names in the admin's language."""

    title = _("object type")
    parameter_name = "type"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, Any]]:
        ids = (
            recent_entries(model_admin.get_queryset(request))
            .order_by()
            .values_list("content_type_id", flat=True)
            .distinct()
        )
        types = [ContentType.objects.get_for_id(type_id) for type_id in ids]
        named = [(str(content_type.pk), capfirst(_type_name(content_type))) for content_type in types]
        return sorted(named, key=lambda choice: str(choice[1]))

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuditLogEntry]) -> QuerySet[AuditLogEntry]:
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(content_type_id=int(value)) if value.isdigit() else queryset.none()


def _type_name(content_type: ContentType) -> str:
    model = content_type.model_class()
    return str(model._meta.verbose_name) if model is not None else f"{content_type.app_label}.{content_type.model}"


@admin.register(AuditLogEntry)
class AuditLogEntryAdmin(LogEntryAdmin):
    date_hierarchy = "timestamp"
    list_display = ["timestamp", "action_label", "who", "remote_addr", "content_type", "object_repr", "summary"]
    list_display_links = ["timestamp"]
    list_filter = [ActionFilter, ActorFilter, ObjectTypeFilter, "timestamp"]
    list_select_related = ["content_type", "actor"]
    search_fields = ["object_repr", "object_pk", "actor_name", "=remote_addr", "=cid"]
    show_full_result_count = False
    actions = ["export_csv"]
    fieldsets = [
        (None, {"fields": ["timestamp", "action_label", "who", "actor", "remote_addr", "cid"]}),
        (pgettext_lazy("audit log", "object"), {"fields": ["content_type", "object_pk", "resource_url"]}),
        (pgettext_lazy("audit log", "what"), {"fields": ["changes_table", "details"]}),
    ]
    readonly_fields = [
        "timestamp",
        "action_label",
        "who",
        "actor",
        "remote_addr",
        "cid",
        "content_type",
        "object_pk",
        "resource_url",
        "changes_table",
        "details",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditLogEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditLogEntry | None = None) -> bool:
        return False

    @admin.display(description=pgettext_lazy("audit log", "action"))
    def action_label(self, obj: AuditLogEntry) -> str:
        return obj.action_label

    @admin.display(description=pgettext_lazy("audit log", "by"), ordering="actor_name")
    def who(self, obj: AuditLogEntry) -> str:
        return obj.who

    @admin.display(description=pgettext_lazy("audit log", "what"))
    def summary(self, obj: AuditLogEntry) -> str:
        """The changed fields' names (a model change) or the details' keys and values (an event)."""
        if obj.event:
            return json.dumps(obj.additional_data or {}, ensure_ascii=False, sort_keys=True)[:200]
        names = list((obj.changes or {}).keys())
        shown = ", ".join(names[:SUMMARY_FIELDS])
        return f"{shown}, …" if len(names) > SUMMARY_FIELDS else shown

    @admin.display(description=pgettext_lazy("audit log", "changes"))
    def changes_table(self, obj: AuditLogEntry) -> str:
        """One row per field: its name, and the value before and after (a membership: added or removed, whom).

        Ours rather than django-auditlog's table, whose "From" and "To" other catalogues translate as dates.
        """
        if not obj.changes:
            return "-"
        rows = []
        for name, change in obj.changes.items():
            label = get_field_verbose_name(obj, name)
            if isinstance(change, dict):  # many-to-many: {"type": "m2m", "operation": "add"|"delete", "objects"}
                verb = M2M_OPERATIONS.get(change.get("operation"), change.get("operation"))
                rows.append((label, verb, ", ".join(str(item) for item in change.get("objects", []))))
            else:
                before, after = change
                rows.append((label, before, after))
        header = format_html(
            "<tr><th>{}</th><th>{}</th><th>{}</th></tr>",
            pgettext_lazy("audit log", "field"),
            pgettext_lazy("audit log", "before"),
            pgettext_lazy("audit log", "after"),
        )
        body = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", rows)
        return format_html("<table>{}{}</table>", header, body)

    @admin.display(description=pgettext_lazy("audit log", "details"))
    def details(self, obj: AuditLogEntry) -> str:
        if not obj.additional_data:
            return "-"
        return format_html("<pre>{}</pre>", json.dumps(obj.additional_data, ensure_ascii=False, indent=2))

    @admin.action(description=_("Export the selected entries as CSV"), permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[AuditLogEntry]) -> StreamingHttpResponse:
        """Streams: "Select all" over any number of entries (the filters applied) costs flat memory."""
        filename = f"audit-log-{timezone.now():%Y%m%d-%H%M%S}.csv"
        response = StreamingHttpResponse(csv_lines(queryset), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
