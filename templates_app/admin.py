"""Admin for message templates: what WeChat holds is read-only here, only our own switches are editable."""

from __future__ import annotations

from dataclasses import asdict

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from templates_app.keywords import render_card, type_label
from templates_app.models import MessageTemplate
from templates_app.services import clear_template_problem, sync_templates
from wxnotify.wechat.errors import WeChatError, describe_wechat_error


class HasProblemFilter(admin.SimpleListFilter):
    title = _("problem")
    parameter_name = "has_problem"

    def lookups(self, request, model_admin):
        return [("yes", _("Has a problem")), ("no", _("No problem"))]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(problem_code__isnull=False)
        if self.value() == "no":
            return queryset.filter(problem_code__isnull=True)
        return queryset


class MessageTemplateForm(forms.ModelForm):
    clear_problem = forms.BooleanField(
        label=_("Clear the problem"),
        required=False,
        help_text=_("Tick once the cause is fixed (e.g. the template was added again at WeChat)."),
    )

    class Meta:
        model = MessageTemplate
        fields = ["is_active"]


@admin.register(MessageTemplate)
class MessageTemplateAdmin(admin.ModelAdmin):
    """Templates come from WeChat: editing them here would make our history disagree with what was sent."""

    form = MessageTemplateForm
    list_display = [
        "title",
        "account",
        "template_id",
        "keywords_summary",
        "is_active",
        "problem_summary",
        "synced_at",
    ]
    list_filter = ["account", "is_active", HasProblemFilter]
    list_select_related = ["account"]
    search_fields = ["title", "template_id"]
    actions = ["sync_from_wechat"]
    readonly_fields = [
        "account",
        "template_id",
        "title",
        "primary_industry",
        "deputy_industry",
        "content",
        "example",
        "keywords_summary",
        "preview",
        "problem_code",
        "problem_message",
        "problem_at",
        "synced_at",
        "removed_at",
        "created_at",
        "updated_at",
    ]
    fieldsets = [
        (None, {"fields": ["account", "template_id", "title", "is_active"]}),
        (_("Content"), {"fields": ["content", "keywords_summary", "example", "preview"]}),
        (_("Problem"), {"fields": ["problem_code", "problem_message", "problem_at", "clear_problem"]}),
        (_("Sync"), {"fields": ["primary_industry", "deputy_industry", "synced_at", "removed_at"]}),
        (pgettext_lazy("message template", "History"), {"fields": ["created_at", "updated_at"]}),
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: MessageTemplate | None = None) -> bool:
        return False

    @admin.display(description=_("keywords"))
    def keywords_summary(self, obj: MessageTemplate) -> str:
        """Each keyword as the API's data names it, with its type in words ("thing1 · 事物")."""
        return ", ".join(f"{item['name']} · {type_label(item['type'])}" for item in obj.keywords) or "—"

    @admin.display(description=_("problem"))
    def problem_summary(self, obj: MessageTemplate) -> str:
        if not obj.has_problem:
            return "—"
        return f"{obj.problem_code}: {obj.problem_message}"

    @admin.display(description=_("preview"))
    def preview(self, obj: MessageTemplate) -> str:
        """The phone card with each value still to fill shown as [name]; legacy first/remark are hidden as at WeChat."""
        card = render_card(obj, {})
        rows = format_html_join(
            "",
            '<tr><td style="color:#888;padding-right:1em">{}</td><td>{}</td></tr>',
            ((line.label, line.value) for line in card.lines),
        )
        return format_html(
            '<div style="border:1px solid #ddd;border-radius:6px;padding:.8em;max-width:28em">'
            "<strong>{}</strong><table>{}</table></div>",
            card.title,
            rows,
        )

    def save_model(self, request: HttpRequest, obj: MessageTemplate, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if form.cleaned_data.get("clear_problem") and obj.has_problem:
            clear_template_problem(obj)

    @admin.action(description=_("Sync templates from WeChat"), permissions=["change"])
    def sync_from_wechat(self, request: HttpRequest, queryset: QuerySet[MessageTemplate]) -> None:
        """Sync every account the selected templates belong to (WeChat lists a whole account's templates at once)."""
        accounts = {template.account_id: template.account for template in queryset.select_related("account")}
        for account in sorted(accounts.values(), key=lambda a: a.name):
            try:
                result = sync_templates(account)
            except WeChatError as exc:
                self.message_user(request, f"{account}: {describe_wechat_error(exc)}", messages.ERROR)
                continue
            # Not str(result): that stays English for the logs and the sync_templates command.
            text = _(
                "%(account)s: %(created)d created, %(updated)d updated, %(deactivated)d deactivated, "
                "%(reactivated)d reactivated"
            ) % {"account": account, **asdict(result)}
            self.message_user(request, text, messages.SUCCESS)
