"""Admin for message templates and their syncs, scoped by ``accounts.selectors`` like the other admins.

What WeChat holds is read-only here, only our own switches are editable.  A business staff member sees and opens
only the templates and syncs of the accounts they operate; anything else answers 404, and the account filters list
only those accounts.  Template sync is started here (the template list's action, or the start page the account
list's action leads to) and always through ``templates_app.services.sync_templates``, which records each run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from accounts.models import OfficialAccount
from accounts.scoping import ScopedAdminMixin
from accounts.selectors import accounts_for_user
from templates_app.keywords import render_card, type_label
from templates_app.models import MessageTemplate, TemplateSync
from templates_app.selectors import latest_template_syncs, template_syncs_for_user, templates_for_user
from templates_app.services import clear_template_problem, sync_templates

# Registers the subscription templates' admin (its own module for size), beside the message templates'.
from templates_app.subscription_admin import SubscriptionTemplateAdmin as SubscriptionTemplateAdmin
from wxnotify.wechat.errors import WeChatError, describe_wechat_error

# Starting a sync rewrites an account's templates, so it takes the right to change templates.
SYNC_PERMISSION = "templates_app.change_messagetemplate"
VIEW_PERMISSION = "templates_app.view_messagetemplate"


def sync_and_report(model_admin: admin.ModelAdmin, request: HttpRequest, accounts: Iterable[OfficialAccount]) -> None:
    """Sync each account (``sync_templates`` records the run) and tell the admin user how each went."""
    for account in sorted(accounts, key=lambda a: a.name):
        try:
            result = sync_templates(account, source=TemplateSync.Source.ADMIN, requested_by=request.user)
        except WeChatError as exc:
            model_admin.message_user(request, f"{account}: {describe_wechat_error(exc)}", messages.ERROR)
            continue
        # Not str(result): that stays English for the logs and the sync_templates command.
        text = _(
            "%(account)s: %(created)d created, %(updated)d updated, %(deactivated)d deactivated, "
            "%(reactivated)d reactivated"
        ) % {"account": account, **asdict(result)}
        model_admin.message_user(request, text, messages.SUCCESS)


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
class MessageTemplateAdmin(ScopedAdminMixin, admin.ModelAdmin):
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
    # RelatedOnlyFieldListFilter lists only accounts present in the scoped queryset, never other accounts' names.
    list_filter = [("account", admin.RelatedOnlyFieldListFilter), "is_active", HasProblemFilter]
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

    def get_queryset(self, request: HttpRequest) -> QuerySet[MessageTemplate]:
        return templates_for_user(request.user)

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
        sync_and_report(self, request, accounts.values())


@admin.register(TemplateSync)
class TemplateSyncAdmin(ScopedAdminMixin, admin.ModelAdmin):
    """Every template sync and how it went, whoever started it; read-only, and the place to start one.

    The rows carry no permissions of their own: whoever may see an account's templates sees its syncs, and whoever
    may change templates may start one (``SYNC_PERMISSION``).
    """

    list_display = [
        "account",
        "channel",
        "status",
        "created",
        "updated",
        "deactivated",
        "reactivated",
        "error",
        "source",
        "requested_by",
        "started_at",
    ]
    list_filter = [("account", admin.RelatedOnlyFieldListFilter), "channel", "status", "source"]
    list_select_related = ["account", "requested_by"]
    search_fields = ["account__name", "account__appid"]
    date_hierarchy = "started_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[TemplateSync]:
        return template_syncs_for_user(request.user)

    def has_view_permission(self, request: HttpRequest, obj: TemplateSync | None = None) -> bool:
        return request.user.has_perm(VIEW_PERMISSION) or request.user.has_perm(SYNC_PERMISSION)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: TemplateSync | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: TemplateSync | None = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        start = path("start/", self.admin_site.admin_view(self.start_view), name="templates_app_templatesync_start")
        return [start, *super().get_urls()]

    def start_view(self, request: HttpRequest) -> HttpResponse:
        """Sync the accounts named by ``?account=<id>`` (repeatable): GET asks to confirm, POST syncs.

        The account list's "Sync templates" action leads here by URL name, so ``accounts`` needs no import of this
        app.  Accounts the user may not see answer 404, as everywhere in the admin.
        """
        if not request.user.has_perm(SYNC_PERMISSION):
            raise PermissionDenied
        accounts = self._accounts_to_sync(request)
        if request.method == "POST":
            sync_and_report(self, request, accounts)
            changelist = reverse("admin:templates_app_templatesync_changelist")
            if len(accounts) == 1:
                changelist = f"{changelist}?account__id__exact={accounts[0].pk}"
            return HttpResponseRedirect(changelist)
        latest = latest_template_syncs(accounts)
        context = {
            **self.admin_site.each_context(request),
            "title": _("Sync templates from WeChat"),
            "opts": self.opts,
            "rows": [(account, latest.get(account.pk)) for account in accounts],
            "account_ids": [account.pk for account in accounts],
        }
        return TemplateResponse(request, "admin/templates_app/templatesync/start.html", context)

    def _accounts_to_sync(self, request: HttpRequest) -> list[OfficialAccount]:
        raw = request.POST.getlist("account") if request.method == "POST" else request.GET.getlist("account")
        try:
            wanted = {int(value) for value in raw}
        except ValueError:
            raise Http404 from None
        accounts = list(accounts_for_user(request.user).filter(pk__in=wanted).order_by("name"))
        if not wanted or len(accounts) != len(wanted):
            raise Http404
        return accounts
