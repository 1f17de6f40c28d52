"""Admin for the message log, campaigns and delivery receipts, scoped by ``accounts.selectors``.

The message log is a record of what happened, so nothing here edits it: messages and receipts are
view-only, campaigns are changed only through the cancel, retry, approve and reject actions, which call the
services.  Approval policies are the one thing edited here, by whoever has their model permissions (wxnotify
admins, migration 0009), for the accounts they see.

Size: over 450 lines because it is the app's one admin module, as in Django's contrib apps; the rule admins
(caps, approval policies) share its scoping mixins and would otherwise import them from here anyway.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from accounts.scoping import AccountScopedRelatedFilter, ScopedAdminMixin
from accounts.selectors import accounts_for_user, in_user_accounts
from messaging import rules
from messaging.models import ApprovalPolicy, Campaign, DeliveryReceipt, Message, SendingCap
from messaging.scheduling import campaign_wait_text, message_wait_text
from messaging.selectors import (
    campaign_progress,
    campaign_status_counts,
    campaigns_for_user,
    caps_for_user,
    messages_for_user,
    receipts_for_user,
    status_counts_by_campaign,
)
from messaging.services import (
    ApprovalRefused,
    CampaignActionRefused,
    MessageActionRefused,
    MessageRejected,
    approve_campaign,
    cancel_campaign,
    cancel_message,
    reject_campaign,
    retry_failed,
    wechat_record,
)
from messaging.services.approval import NOTE_MAX_LENGTH
from templates_app.models import MessageTemplate
from wxnotify.pagination import EstimatedCountPaginator
from wxnotify.wechat.errors import describe_failure


class ReadOnlyAdminMixin:
    """A log: viewable by whoever has the view permission, never added to, changed or deleted by hand."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


def _link(obj, label: str | None = None) -> str:
    if obj is None:
        return "—"
    meta = obj._meta
    url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, label or str(obj))


@admin.register(Message)
class MessageAdmin(ScopedAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "account",
        "template_title",
        "touser",
        "status",
        "waiting",
        "attempts",
        "error",
        "msgid",
        "campaign",
        "created_at",
    ]
    list_filter = [
        "status",
        "channel",
        ("account", AccountScopedRelatedFilter),
        ("template", AccountScopedRelatedFilter),
        ("campaign", AccountScopedRelatedFilter),
        ("created_at", admin.DateFieldListFilter),
    ]
    list_select_related = ["account", "template", "subscription_template", "campaign"]
    search_fields = ["touser", "client_msg_id", "trace_id"]
    search_help_text = _("Search by openid, client_msg_id, trace id, or a WeChat msgid (digits).")
    # Over millions of rows: no count of the unfiltered list, an estimated count past 10,000 rows, and no
    # date_hierarchy (its year and month links need a DISTINCT over every row; the created_at filter has the dates).
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    actions = ["look_up_wechat_record", "cancel_scheduled"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "account",
                    "channel",
                    "template_title",
                    "template_id_sent",
                    "touser",
                    "follower_link",
                    "campaign_link",
                ]
            },
        ),
        (_("Content"), {"fields": ["data", "url", "miniprogram"]}),
        (
            _("Delivery"),
            {
                "fields": [
                    "status",
                    "waiting",
                    "send_at",
                    "respect_quiet_hours",
                    "error",
                    "wechat_rid",
                    "wechat_rid_at",
                    "msgid",
                    "attempts",
                    "attempted_at",
                    "next_attempt_at",
                    "outcome_unknown_since",
                    "lease_expires_at",
                    "sent_at",
                    "finished_at",
                ]
            },
        ),
        (
            _("Tracing"),
            {"fields": ["client_msg_id", "trace_id", "created_by", "created_at", "updated_at"]},
        ),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        return messages_for_user(request.user).select_related(
            "account", "template", "subscription_template", "campaign"
        )

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        """A number is also looked up as WeChat's msgid (a 64-bit integer, so no text search on it)."""
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if term.isdigit() and len(term) <= 19:
            results |= queryset.filter(msgid=int(term))
        return results, may_have_duplicates

    @admin.display(description=_("template"), ordering="template__title")
    def template_title(self, obj: Message) -> str:
        """The template of either channel: a subscription notification has no template, its subscription
        template's title stands in."""
        template = obj.template or obj.subscription_template
        return template.title if template is not None else "—"

    @admin.display(description=_("waiting for"))
    def waiting(self, obj: Message) -> str:
        """Why a scheduled message waits and until when, on its account's clock."""
        return message_wait_text(obj) or "—"

    @admin.display(description=_("error"))
    def error(self, obj: Message) -> str:
        """The last attempt's errcode with its meaning, and WeChat's (or our) words."""
        return describe_failure(obj.errcode, obj.errmsg) or "—"

    @admin.action(description=_("Look up at WeChat (rid)"), permissions=["view"])
    def look_up_wechat_record(self, request: HttpRequest, queryset: QuerySet[Message]) -> TemplateResponse | None:
        """What WeChat recorded of one message's last failed call (``rid/get``), secrets masked."""
        selected = list(queryset.select_related("account")[:2])
        if len(selected) != 1:
            self.message_user(request, _("Select exactly one message to look up at WeChat."), messages.WARNING)
            return None
        message = selected[0]
        context = {
            **self.admin_site.each_context(request),
            "title": _("What WeChat recorded"),
            "opts": self.model._meta,
            "message": message,
            "lookup": wechat_record(message),
        }
        return TemplateResponse(request, "admin/messaging/message/wechat_record.html", context)

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return rules.may_operate_campaigns(request.user)

    @admin.action(description=_("Cancel selected scheduled messages"), permissions=["operate"])
    def cancel_scheduled(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        """Stop single messages still waiting for their send time or quiet hours (campaign messages are cancelled
        with their campaign); the others are left alone and counted."""
        cancelled = skipped = 0
        for message in queryset.select_related("campaign"):
            try:
                cancel_message(message)
            except MessageActionRefused:
                skipped += 1
            else:
                cancelled += 1
        if cancelled:
            self.message_user(
                request,
                ngettext("Cancelled %(count)d scheduled message.", "Cancelled %(count)d scheduled messages.", cancelled)
                % {"count": cancelled},
                messages.SUCCESS,
            )
        if skipped:
            self.message_user(
                request,
                ngettext(
                    "%(count)d message was not cancelled: only single messages still scheduled can be.",
                    "%(count)d messages were not cancelled: only single messages still scheduled can be.",
                    skipped,
                )
                % {"count": skipped},
                messages.WARNING,
            )

    @admin.display(description=_("follower"))
    def follower_link(self, obj: Message) -> str:
        return _link(obj.follower)

    @admin.display(description=_("campaign"))
    def campaign_link(self, obj: Message) -> str:
        return _link(obj.campaign)


@admin.register(Campaign)
class CampaignAdmin(ScopedAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "name",
        "account",
        "channel",
        "template",
        "state",
        "send_at",
        "recipient_count",
        "status_counts",
        "progress",
        "created_at",
    ]
    list_filter = ["state", ("account", admin.RelatedOnlyFieldListFilter), "channel", "recipient_kind"]
    list_select_related = ["account", "template"]
    search_fields = ["name", "trace_id"]
    actions = [
        "approve_selected",
        "reject_selected",
        "cancel_selected",
        "retry_failed_messages",
        "retry_failed_messages_including_unknown",
    ]
    readonly_fields = ["waiting", "status_counts", "progress", "messages_link"]
    fields = [
        "name",
        "account",
        "channel",
        "template",
        "subscription_template",
        "data",
        "subscription_data",
        "url",
        "page",
        "miniprogram",
        "recipient_kind",
        "recipient_count",
        "recipients_with_credit",
        "state",
        "send_at",
        "waiting",
        "status_counts",
        "progress",
        "messages_link",
        "created_by",
        "trace_id",
        "created_at",
        "finished_at",
        "cancelled_at",
        "decided_by",
        "decided_at",
        "decision_note",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Campaign]:
        # A stable order for autocomplete pages.  No counts here: joined to the messages, every look-up of one
        # campaign (the scope check, the change page) aggregated all its messages, 0.7 s for 400,000 of them.
        return campaigns_for_user(request.user).order_by("-created_at", "-id")

    def get_changelist_instance(self, request: HttpRequest):
        """The page's campaigns with their counts by status, in one GROUP BY over the (campaign, status) index."""
        changelist = super().get_changelist_instance(request)
        counts = status_counts_by_campaign(campaign.pk for campaign in changelist.result_list)
        for campaign in changelist.result_list:
            campaign.status_counts_by_status = counts[campaign.pk]
        return changelist

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return rules.may_operate_campaigns(request.user)

    def has_approve_permission(self, request: HttpRequest) -> bool:
        return rules.may_approve_campaigns(request.user)

    @admin.action(description=_("Approve selected campaigns"), permissions=["approve"])
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> TemplateResponse | None:
        return self._decide(request, queryset, approve=True)

    @admin.action(description=_("Reject selected campaigns"), permissions=["approve"])
    def reject_selected(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> TemplateResponse | None:
        return self._decide(request, queryset, approve=False)

    def _decide(self, request: HttpRequest, queryset: QuerySet[Campaign], *, approve: bool) -> TemplateResponse | None:
        """First a page with the selected campaigns and a note (required to reject), then the decision on each;
        each refusal (not waiting, the user's own campaign, no note) is reported by campaign."""
        campaigns = list(queryset.select_related("account", "created_by").order_by("pk"))
        form = DecisionForm(request.POST if request.POST.get("confirm") == "yes" else None, required=not approve)
        if not form.is_bound or not form.is_valid():
            context = {
                **self.admin_site.each_context(request),
                "title": _("Approve campaigns") if approve else _("Reject campaigns"),
                "opts": self.model._meta,
                "campaigns": campaigns,
                "form": form,
                "approve": approve,
                "action": "approve_selected" if approve else "reject_selected",
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, "admin/messaging/campaign/decide.html", context)
        note = form.cleaned_data["note"]
        decided = 0
        for campaign in campaigns:
            try:
                if approve:
                    approve_campaign(campaign, by=request.user, note=note)
                else:
                    reject_campaign(campaign, by=request.user, note=note)
            except (ApprovalRefused, CampaignActionRefused) as refused:
                self.message_user(request, f"{campaign}: {refused}", messages.ERROR)
            except MessageRejected as rejected:
                texts = [str(text) for field_messages in rejected.errors.values() for text in field_messages]
                self.message_user(request, f"{campaign}: {' '.join(texts)}", messages.ERROR)
            else:
                decided += 1
        if decided:
            text = (
                ngettext("%(count)d campaign approved.", "%(count)d campaigns approved.", decided)
                if approve
                else ngettext("%(count)d campaign rejected.", "%(count)d campaigns rejected.", decided)
            )
            self.message_user(request, text % {"count": decided}, messages.SUCCESS)
        return None

    def _counts(self, obj: Campaign) -> dict[str, int]:
        """Counted for the list's page at once, or here once for the change page (which shows them twice)."""
        if not hasattr(obj, "status_counts_by_status"):
            obj.status_counts_by_status = campaign_status_counts(obj)
        return obj.status_counts_by_status

    @admin.display(description=_("waiting for"))
    def waiting(self, obj: Campaign) -> str:
        """When a scheduled campaign starts, on its account's clock."""
        return campaign_wait_text(obj) or "—"

    @admin.display(description=_("messages by status"))
    def status_counts(self, obj: Campaign) -> str:
        counts = self._counts(obj)
        return ", ".join(f"{Message.Status(status).label}: {count}" for status, count in counts.items() if count) or "—"

    @admin.display(description=_("progress"))
    def progress(self, obj: Campaign) -> str:
        return f"{campaign_progress(obj, self._counts(obj)).percent:g}%"

    @admin.display(description=_("messages"))
    def messages_link(self, obj: Campaign) -> str:
        url = reverse("admin:messaging_message_changelist") + f"?campaign__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, _("Show the messages of this campaign"))

    @admin.action(description=_("Cancel selected campaigns"), permissions=["operate"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        cancelled = 0
        for campaign in queryset.filter(state__in=rules.CANCELLABLE_STATES):
            cancelled += cancel_campaign(campaign)
        self.message_user(
            request,
            ngettext(
                "Cancelled; %(count)d queued message will not be sent.",
                "Cancelled; %(count)d queued messages will not be sent.",
                cancelled,
            )
            % {"count": cancelled},
            messages.SUCCESS,
        )

    @admin.action(description=_("Retry the failed messages of selected campaigns"), permissions=["operate"])
    def retry_failed_messages(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        self._retry_failed(request, queryset, include_unknown=False)

    @admin.action(
        description=_("Retry the failed messages of selected campaigns, also those that may have been delivered"),
        permissions=["operate"],
    )
    def retry_failed_messages_including_unknown(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        self._retry_failed(request, queryset, include_unknown=True)

    def _retry_failed(self, request: HttpRequest, queryset: QuerySet[Campaign], *, include_unknown: bool) -> None:
        results, refused = [], 0
        for campaign in queryset:
            try:
                results.append(retry_failed(campaign, include_unknown=include_unknown))
            except CampaignActionRefused:
                refused += 1
        if refused:
            self.message_user(
                request,
                _("Cancelled, rejected and waiting campaigns are not retried; they were left out."),
                messages.WARNING,
            )
        retried = sum(result.retried for result in results)
        left = sum(result.left_unknown for result in results)
        self.message_user(
            request,
            ngettext("%(count)d failed message queued again.", "%(count)d failed messages queued again.", retried)
            % {"count": retried},
            messages.SUCCESS if retried else messages.INFO,
        )
        if left:
            self.message_user(
                request,
                ngettext(
                    "%(count)d failed message may have been delivered (WeChat did not answer) and was left alone.",
                    "%(count)d failed messages may have been delivered (WeChat did not answer) and were left alone.",
                    left,
                )
                % {"count": left},
                messages.WARNING,
            )


class DecisionForm(forms.Form):
    """The note of an approval or a rejection, on the admin's page between the action and the decision."""

    note = forms.CharField(
        label=_("Note"),
        max_length=NOTE_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60}),
        help_text=_("Shown to the campaign's creator."),
    )

    def __init__(self, *args: object, required: bool, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.fields["note"].required = required


class ApprovalPolicyForm(forms.ModelForm):
    class Meta:
        model = ApprovalPolicy
        fields = ["account", "every_campaign", "recipient_threshold", "templates"]

    def clean(self) -> dict:
        """The templates must be the account's own (the list offers every template of the user's accounts)."""
        cleaned = super().clean()
        account, templates = cleaned.get("account"), cleaned.get("templates")
        if account is not None and templates is not None:
            others = [template for template in templates if template.account_id != account.pk]
            if others:
                self.add_error(
                    "templates",
                    _("These templates are not the account's: %(names)s.")
                    % {"names": ", ".join(str(template) for template in others)},
                )
        return cleaned


@admin.register(ApprovalPolicy)
class ApprovalPolicyAdmin(ScopedAdminMixin, admin.ModelAdmin):
    """Per account: which campaigns wait for an admin's approval (see ``ApprovalPolicy``)."""

    form = ApprovalPolicyForm
    list_display = ["account", "every_campaign", "recipient_threshold", "updated_at"]
    list_select_related = ["account"]
    filter_horizontal = ["templates"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApprovalPolicy]:
        return ApprovalPolicy.objects.filter(in_user_accounts(request.user))

    def formfield_for_foreignkey(self, db_field, request: HttpRequest, **kwargs):
        if db_field.name == "account":
            kwargs["queryset"] = accounts_for_user(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request: HttpRequest, **kwargs):
        if db_field.name == "templates":
            kwargs["queryset"] = MessageTemplate.objects.filter(in_user_accounts(request.user)).select_related(
                "account"
            )
        return super().formfield_for_manytomany(db_field, request, **kwargs)


@admin.register(DeliveryReceipt)
class DeliveryReceiptAdmin(ScopedAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "account",
        "channel",
        "msgid",
        "openid",
        "template_id",
        "wechat_status",
        "error_code",
        "state",
        "message_link",
        "received_at",
    ]
    list_filter = [
        "state",
        "channel",
        ("account", AccountScopedRelatedFilter),
        ("received_at", admin.DateFieldListFilter),
    ]
    list_select_related = ["account", "message"]
    search_fields = ["openid"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[DeliveryReceipt]:
        return receipts_for_user(request.user).select_related("account", "message")

    @admin.display(description=_("message"))
    def message_link(self, obj: DeliveryReceipt) -> str:
        return _link(obj.message, f"#{obj.message_id}") if obj.message_id else "—"


@admin.register(SendingCap)
class SendingCapAdmin(ScopedAdminMixin, admin.ModelAdmin):
    """The accounts' daily caps per user, edited by wxnotify admins (messaging.caps applies them at send time).

    Only the user's accounts and their templates are offered; a second cap for the same account and template (or
    for all templates), or a template of another account, is refused with the field's error.  A change applies to
    running delivery tasks within ``messaging.caps.CAPS_MEMO_SECONDS``; today's counts are kept.
    """

    list_display = ["account", "scope", "limit", "action", "updated_at"]
    list_filter = [("account", AccountScopedRelatedFilter), "action"]
    list_select_related = ["account", "template"]
    fields = ["account", "template", "limit", "action"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[SendingCap]:
        return caps_for_user(request.user)

    def formfield_for_foreignkey(self, db_field, request: HttpRequest, **kwargs):
        accounts = accounts_for_user(request.user)
        if db_field.name == "account":
            kwargs["queryset"] = accounts
        elif db_field.name == "template":
            kwargs["queryset"] = MessageTemplate.objects.filter(account__in=accounts).select_related("account")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description=_("templates"), ordering="template__title")
    def scope(self, obj: SendingCap) -> str:
        return obj.template.title if obj.template_id else _("all templates")
