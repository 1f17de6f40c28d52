"""Admin for official accounts, their followers and follower syncs, scoped by ``accounts.selectors``.

Every queryset goes through the selectors, so a business staff member sees and opens only the accounts they
operate (and their followers); anything else answers 404, as if it did not exist.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from accounts.forms import SECRET_FIELDS, OfficialAccountAdminForm
from accounts.models import AccessTokenRead, Follower, FollowerSync, OfficialAccount
from accounts.quota_admin import QuotaAdminMixin
from accounts.scoping import AccountScopedRelatedFilter, ScopedAdminMixin
from accounts.selectors import (
    TOKEN_CONFLICT_ALARM_THRESHOLD,
    TOKEN_CONFLICT_ALARM_WINDOW,
    accounts_for_user,
    follower_syncs_for_user,
    followers_for_user,
    is_account_admin,
    latest_follower_sync,
    token_conflict_alarms,
    token_conflict_counts,
    token_reads_for_user,
)
from accounts.services import (
    announce_quiet_hours_change,
    check_connection,
    queue_follower_sync,
    record_wechat_error,
)
from wxnotify.pagination import EstimatedCountPaginator
from wxnotify.wechat.errors import WeChatError, describe_wechat_error
from wxnotify.wechat.tokens import FORCE_REFRESH_DAILY_LIMIT, default_token_manager

# The callback secrets, with the read-only field that says whether the key is set: for account admins only.
CALLBACK_SECRET_FIELDS = {"token", "encoding_aes_key", "encoding_aes_key_status"}


def _sync_progress(status: str | None, processed: int | None, total: int | None) -> str:
    if status is None:
        return "—"
    label = FollowerSync.Status(status).label
    if total is None:
        return f"{label} ({processed})"
    return f"{label} ({processed}/{total})"


@admin.register(OfficialAccount)
class OfficialAccountAdmin(QuotaAdminMixin, ScopedAdminMixin, admin.ModelAdmin):
    form = OfficialAccountAdminForm
    list_display = [
        "name",
        "appid",
        "message_mode",
        "token_endpoint",
        "is_active",
        "operators_count",
        "last_error",
        "latest_follower_sync",
    ]
    list_filter = ["is_active", "message_mode", "token_endpoint"]
    search_fields = ["name", "appid"]
    filter_horizontal = ["operators"]
    actions = ["test_connection", "sync_templates", "sync_followers", "clear_quota"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "name",
                    "appid",
                    "is_active",
                    "operators",
                    "send_rate_limit",
                    "duplicate_window_minutes",
                ]
            },
        ),
        (
            _("Time zone and quiet hours"),
            {
                "fields": ["time_zone", ("quiet_start", "quiet_end")],
                "description": _(
                    "Campaign messages that fall inside the quiet hours wait until they end; single messages go "
                    "through unless their sender asked otherwise. Changing the hours re-plans the waiting messages."
                ),
            },
        ),
        (
            _("WeChat credentials"),
            {
                "fields": [
                    "app_secret_status",
                    "app_secret",
                    "token_endpoint",
                    "token_source_url",
                    "token_source_secret",
                ],
                "description": _(
                    "An external token source replaces WeChat's token endpoints for this account: wxnotify then "
                    "reads the access_token from that authority and never fetches one with the AppSecret."
                ),
            },
        ),
        (
            _("Callbacks"),
            {
                "fields": [
                    "callback_settings",
                    "token",
                    "message_mode",
                    "encoding_aes_key_status",
                    "encoding_aes_key",
                    "welcome_reply",
                ],
                "description": _("Paste the URL and the Token into WeChat's server settings (消息与事件推送)."),
            },
        ),
        (
            _("Status"),
            {
                "fields": [
                    "last_error_code",
                    "last_error_message",
                    "last_error_at",
                    "token_conflicts",
                    "force_refreshes",
                    "template_send_quota",
                    "latest_follower_sync_detail",
                ]
            },
        ),
    ]
    readonly_fields = [
        "app_secret_status",
        "encoding_aes_key_status",
        "callback_settings",
        "last_error_code",
        "last_error_message",
        "last_error_at",
        "token_conflicts",
        "force_refreshes",
        "template_send_quota",
        "latest_follower_sync_detail",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[OfficialAccount]:
        latest = FollowerSync.objects.filter(account=OuterRef("pk")).order_by("-queued_at", "-id")
        return (
            accounts_for_user(request.user)
            .annotate(
                operators_total=Count("operators", distinct=True),
                latest_sync_status=Subquery(latest.values("status")[:1]),
                latest_sync_processed=Subquery(latest.values("processed")[:1]),
                latest_sync_total=Subquery(latest.values("total")[:1]),
            )
            .order_by("name", "pk")
        )  # an aggregate drops Meta.ordering; autocomplete pages need a stable order

    def get_fieldsets(self, request: HttpRequest, obj: OfficialAccount | None = None):
        """No status fields before the account exists; no secret fields for read-only viewers; the callback Token
        and EncodingAESKey for account admins only (:func:`accounts.selectors.is_account_admin`).

        A read-only field is rendered with its stored value, which for a secret must never happen; a field left out
        of the fieldsets is left out of the form too, so it can be neither seen nor posted.
        """
        hidden = set()
        if obj is None:
            hidden |= {*self.readonly_fields}
        elif not self.has_change_permission(request, obj):
            hidden |= set(SECRET_FIELDS)
        account_admin = is_account_admin(request.user)
        if not account_admin:
            hidden |= CALLBACK_SECRET_FIELDS
        fieldsets = []
        for title, options in super().get_fieldsets(request, obj):
            options = {**options, "fields": [name for name in options["fields"] if name not in hidden]}
            if not account_admin and "callback_settings" in options["fields"]:
                options["description"] = _("The callback secrets are shown to account admins only.")
            fieldsets.append((title, options))
        return fieldsets

    def save_model(self, request: HttpRequest, obj: OfficialAccount, form, change: bool) -> None:
        """Saving new quiet hours (or a new time zone) re-plans the messages waiting for the old ones."""
        super().save_model(request, obj, form, change)
        if change:
            announce_quiet_hours_change(obj, form.changed_data)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """Say at the top of the page when another system keeps replacing the account's access_token."""
        response = super().change_view(request, object_id, form_url, extra_context)
        if request.method == "GET" and object_id:
            alarms = token_conflict_alarms([int(unquote(object_id))], timezone.now())
            if alarms:
                self.message_user(request, conflict_alarm_text(next(iter(alarms.values()))), messages.WARNING)
        return response

    @admin.display(description=_("access_token conflicts"))
    def token_conflicts(self, account: OfficialAccount) -> str:
        now = timezone.now()
        hour = token_conflict_counts([account.pk], now - TOKEN_CONFLICT_ALARM_WINDOW).get(account.pk, 0)
        day = token_conflict_counts([account.pk], now - timedelta(days=1)).get(account.pk, 0)
        text = _("%(hour)d in the last hour, %(day)d in the last 24 hours.") % {"hour": hour, "day": day}
        if hour >= TOKEN_CONFLICT_ALARM_THRESHOLD:
            return f"{text} {conflict_alarm_text(hour)}"
        return text

    @admin.display(description=_("force refreshes today"))
    def force_refreshes(self, account: OfficialAccount) -> str:
        return _(
            "%(used)d of the %(limit)d WeChat allows a day (stable_token force_refresh, at least 30 s apart; the "
            "day is Beijing time). Past the limit wxnotify stays in normal mode."
        ) % {"used": default_token_manager().force_refreshes_today(account.appid), "limit": FORCE_REFRESH_DAILY_LIMIT}

    @admin.display(description=_("operators"), ordering="operators_total")
    def operators_count(self, account: OfficialAccount) -> int:
        return account.operators_total

    @admin.display(description=_("last WeChat error"), ordering="last_error_at")
    def last_error(self, account: OfficialAccount) -> str:
        if account.last_error_at is None:
            return "—"
        return f"{account.last_error_code}: {account.last_error_message}"

    @admin.display(description=_("latest follower sync"))
    def latest_follower_sync(self, account: OfficialAccount) -> str:
        return _sync_progress(account.latest_sync_status, account.latest_sync_processed, account.latest_sync_total)

    @admin.display(description=_("latest follower sync"))
    def latest_follower_sync_detail(self, account: OfficialAccount) -> str:
        sync = latest_follower_sync(account)
        if sync is None:
            return "—"
        text = _sync_progress(sync.status, sync.processed, sync.total)
        if sync.error:
            text = f"{text}: {sync.error}"
        return text

    @admin.display(description=_("AppSecret"))
    def app_secret_status(self, account: OfficialAccount) -> str:
        return _("set") if account.app_secret else _("not set")

    @admin.display(description=_("EncodingAESKey"))
    def encoding_aes_key_status(self, account: OfficialAccount) -> str:
        return _("set") if account.encoding_aes_key else _("not set")

    @admin.display(description=_("callback URL"))
    def callback_settings(self, account: OfficialAccount) -> str:
        return format_html("<code>{}</code>", account.callback_url())

    @admin.action(description=_("Test connection"), permissions=["view"])
    def test_connection(self, request: HttpRequest, queryset: QuerySet[OfficialAccount]) -> None:
        for account in queryset:
            try:
                check_connection(account)
            except WeChatError as error:
                record_wechat_error(account, error)
                self.message_user(request, f"{account}: {describe_wechat_error(error)}", messages.ERROR)
            else:
                self.message_user(request, _("%(account)s: OK") % {"account": account}, messages.SUCCESS)

    @admin.action(description=_("Sync templates"), permissions=["change"])
    def sync_templates(self, request: HttpRequest, queryset: QuerySet[OfficialAccount]) -> HttpResponseRedirect:
        """To the templates app's start page for these accounts (by URL name: this app imports no templates code);
        it asks to confirm, syncs and records each run."""
        query = urlencode([("account", pk) for pk in queryset.values_list("pk", flat=True)])
        return HttpResponseRedirect(f"{reverse('admin:templates_app_templatesync_start')}?{query}")

    @admin.action(description=_("Sync followers"), permissions=["change"])
    def sync_followers(self, request: HttpRequest, queryset: QuerySet[OfficialAccount]) -> None:
        queued = 0
        for account in queryset:
            if queue_follower_sync(account, requested_by=request.user) is None:
                self.message_user(
                    request,
                    _("%(account)s: a follower sync is already running.") % {"account": account},
                    messages.WARNING,
                )
            else:
                queued += 1
        if queued:
            self.message_user(
                request,
                ngettext(
                    "Follower sync queued for %(count)d account; its progress shows in the list.",
                    "Follower sync queued for %(count)d accounts; their progress shows in the list.",
                    queued,
                )
                % {"count": queued},
                messages.SUCCESS,
            )


def conflict_alarm_text(count: int) -> str:
    """The warning of an account in token-conflict alarm, with what to do about it."""
    return _(
        "WeChat rejected %(count)d access_tokens of this account in the last hour while they were still valid: "
        "another system is fetching tokens with this AppSecret and invalidating ours. Find that system (a test "
        "environment, an old deployment, a WeChat SDK in another service) and have it read the token from wxnotify's "
        "token API (GET /api/v1/accounts/<appid>/access-token/) instead, or switch it to stable_token; if the "
        "AppSecret may have leaked, reset it in WeChat's console."
    ) % {"count": count}


class BoundFilter(admin.SimpleListFilter):
    title = _("bound to a user")
    parameter_name = "bound"

    def lookups(self, request, model_admin):
        return [("yes", _("Yes")), ("no", _("No"))]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(user__isnull=False)
        if self.value() == "no":
            return queryset.filter(user__isnull=True)
        return queryset


@admin.register(Follower)
class FollowerAdmin(ScopedAdminMixin, admin.ModelAdmin):
    list_display = ["openid", "account", "user", "subscribed", "source", "subscribed_at", "last_interaction_at"]
    # Only the user's accounts, never other accounts' names.
    list_filter = [("account", AccountScopedRelatedFilter), "subscribed", "source", BoundFilter]
    search_fields = ["openid", "unionid", "user__username"]
    list_select_related = ["account", "user"]
    # Newest first by primary key: the model's default ordering joins the account, too slow for big lists.
    ordering = ["-id"]
    # A million followers: no count of the unfiltered list, an estimated count past 10,000 rows.
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    raw_id_fields = ["user"]
    # Only the binding and our note are editable: the rest mirrors WeChat and history refers to it.
    fields = [
        "account",
        "openid",
        "unionid",
        "user",
        "remark",
        "subscribed",
        "subscribed_at",
        "unsubscribed_at",
        "source",
        "subscribe_scene",
        "qr_scene_str",
        "last_interaction_at",
        "synced_at",
        "created_at",
        "updated_at",
    ]
    readonly_fields = [name for name in fields if name not in {"user", "remark"}]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Follower]:
        return followers_for_user(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Followers come from WeChat (callbacks, sync), never typed in."""
        return False


@admin.register(FollowerSync)
class FollowerSyncAdmin(ScopedAdminMixin, admin.ModelAdmin):
    list_display = ["account", "status", "progress", "created", "updated", "unsubscribed", "queued_at", "finished_at"]
    list_filter = ["status", ("account", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["account"]
    search_fields = ["account__name", "account__appid"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[FollowerSync]:
        return follower_syncs_for_user(request.user)

    @admin.display(description=_("progress"))
    def progress(self, sync: FollowerSync) -> str:
        return sync.progress_text()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: FollowerSync | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: FollowerSync | None = None) -> bool:
        return False


@admin.register(AccessTokenRead)
class AccessTokenReadAdmin(ScopedAdminMixin, admin.ModelAdmin):
    """Who read which account's access_token through the token API, when and from where: a record, never edited."""

    list_display = ["read_at", "account", "username", "address", "min_ttl", "refreshed", "expires_at"]
    list_filter = [("account", admin.RelatedOnlyFieldListFilter), "refreshed"]
    list_select_related = ["account"]
    search_fields = ["username", "address", "account__appid"]
    date_hierarchy = "read_at"
    fields = ["account", "user", "username", "address", "min_ttl", "refreshed", "expires_at", "read_at"]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[AccessTokenRead]:
        return token_reads_for_user(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AccessTokenRead | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AccessTokenRead | None = None) -> bool:
        return False
