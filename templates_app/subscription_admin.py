"""Admin for subscription templates (订阅通知): browse and sync them, add one from WeChat's public library, delete
one at WeChat.

Kept out of ``admin.py`` for size; ``admin.py`` imports it so it registers with the other template admins.  What
WeChat holds is read-only here, as for message templates; every change goes to WeChat first, through
``templates_app.services`` (``add_subscription_template``, ``delete_subscription_template``,
``sync_subscription_templates``), and our rows follow what WeChat then lists.  Scoped like every admin: another
account's templates and accounts answer 404.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext_lazy as _

from accounts.clients import wechat_client_for
from accounts.models import OfficialAccount
from accounts.scoping import ScopedAdminMixin
from accounts.selectors import accounts_for_user
from templates_app.keywords import type_label
from templates_app.models import SubscriptionTemplate, TemplateSync
from templates_app.selectors import subscription_templates_for_user
from templates_app.services import (
    add_subscription_template,
    delete_subscription_template,
    sync_subscription_templates,
)
from wxnotify.wechat.errors import WeChatError, describe_wechat_error
from wxnotify.wechat.subscriptions import (
    KID_LIST_MAX,
    KID_LIST_MIN,
    SCENE_DESC_MAX_LENGTH,
    SUBSCRIPTION_TITLES_PAGE_MAX,
    SubscriptionKeyword,
    SubscriptionTemplateType,
    validate_kid_list,
)

ADD_PERMISSION = "templates_app.add_subscriptiontemplate"
SYNC_PERMISSION = "templates_app.change_subscriptiontemplate"
# The row stays (messages and consent refer to it): "delete" means delete at WeChat and mark removed here.
DELETE_PERMISSION = "templates_app.delete_subscriptiontemplate"
TYPE_NAMES = {
    SubscriptionTemplateType.ONE_TIME: SubscriptionTemplate.Type.ONE_TIME.label,
    SubscriptionTemplateType.LONG_TERM: SubscriptionTemplate.Type.LONG_TERM.label,
}


def sync_subscriptions_and_report(
    model_admin: admin.ModelAdmin, request: HttpRequest, accounts: Iterable[OfficialAccount]
) -> None:
    """Sync each account's subscription templates (the service records the run) and say how each went."""
    for account in sorted(accounts, key=lambda a: a.name):
        try:
            result = sync_subscription_templates(account, source=TemplateSync.Source.ADMIN, requested_by=request.user)
        except WeChatError as exc:
            model_admin.message_user(request, f"{account}: {describe_wechat_error(exc)}", messages.ERROR)
            continue
        text = _(
            "%(account)s: %(created)d created, %(updated)d updated, %(deactivated)d deactivated, "
            "%(reactivated)d reactivated"
        ) % {"account": account, **asdict(result)}
        model_admin.message_user(request, text, messages.SUCCESS)


class LibraryAddForm(forms.Form):
    """The keywords of one library title in the order the notification shows them (2 to 5), and the scene."""

    scene_desc = forms.CharField(
        label=_("Scene description"),
        max_length=SCENE_DESC_MAX_LENGTH,
        help_text=_("Where the notification is used, for WeChat's review (at most 15 characters), e.g. 订单发货提醒."),
    )

    def __init__(self, *args: Any, keywords: list[SubscriptionKeyword], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = [("", "—")] + [
            (str(keyword.kid), f"{keyword.name} · {type_label(keyword.rule)} ({keyword.example})")
            for keyword in keywords
        ]
        for position in range(1, KID_LIST_MAX + 1):
            self.fields[f"kid_{position}"] = forms.TypedChoiceField(
                label=_("Keyword %(position)d") % {"position": position},
                choices=choices,
                coerce=int,
                empty_value=None,
                required=position <= KID_LIST_MIN,
            )
        self.order_fields([f"kid_{position}" for position in range(1, KID_LIST_MAX + 1)] + ["scene_desc"])

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        kids = [cleaned.get(f"kid_{position}") for position in range(1, KID_LIST_MAX + 1)]
        chosen = [kid for kid in kids if kid is not None]
        try:
            cleaned["kid_list"] = validate_kid_list(chosen)
        except ValueError:
            raise forms.ValidationError(
                _("Choose %(min)d to %(max)d different keywords, in the order the notification shows them.")
                % {"min": KID_LIST_MIN, "max": KID_LIST_MAX}
            ) from None
        return cleaned


@admin.register(SubscriptionTemplate)
class SubscriptionTemplateAdmin(ScopedAdminMixin, admin.ModelAdmin):
    """The account's subscription templates as WeChat lists them; only ``is_active`` is ours to change."""

    list_display = ["title", "account", "type", "pri_tmpl_id", "keywords_summary", "is_active", "synced_at"]
    list_filter = [("account", admin.RelatedOnlyFieldListFilter), "type", "is_active"]
    list_select_related = ["account"]
    search_fields = ["title", "pri_tmpl_id"]
    actions = ["sync_from_wechat", "delete_at_wechat"]
    fields = [
        "account",
        "pri_tmpl_id",
        "title",
        "type",
        "is_active",
        "content",
        "keywords_summary",
        "example",
        "synced_at",
        "removed_at",
        "created_at",
        "updated_at",
    ]
    readonly_fields = [name for name in fields if name != "is_active"]
    change_list_template = "admin/templates_app/subscriptiontemplate/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[SubscriptionTemplate]:
        return subscription_templates_for_user(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Templates are added at WeChat, from the library page, never typed in here."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: SubscriptionTemplate | None = None) -> bool:
        return False

    def has_wechat_delete_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(DELETE_PERMISSION)

    @admin.display(description=_("keywords"))
    def keywords_summary(self, obj: SubscriptionTemplate) -> str:
        """Each keyword as a send's data names it, its rule in words and, when enumerated, its values."""
        parts = []
        for keyword in obj.keyword_list():
            text = f"{keyword.name} · {type_label(keyword.type)}"
            if keyword.choices:
                text += f" ({' / '.join(keyword.choices)})"
            parts.append(text)
        return ", ".join(parts) or "—"

    @admin.action(description=_("Sync subscription templates from WeChat"), permissions=["change"])
    def sync_from_wechat(self, request: HttpRequest, queryset: QuerySet[SubscriptionTemplate]) -> None:
        """Sync every account the selected templates belong to (WeChat lists an account's templates at once)."""
        accounts = {template.account_id: template.account for template in queryset.select_related("account")}
        sync_subscriptions_and_report(self, request, accounts.values())

    @admin.action(description=_("Delete the selected templates at WeChat"), permissions=["wechat_delete"])
    def delete_at_wechat(self, request: HttpRequest, queryset: QuerySet[SubscriptionTemplate]) -> HttpResponse | None:
        """Asks first (the page lists what goes); on "Yes" deletes each at WeChat and marks it removed here."""
        templates = list(queryset.select_related("account").filter(removed_at__isnull=True))
        if request.POST.get("confirmed") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "title": _("Delete subscription templates at WeChat"),
                "opts": self.opts,
                "templates": templates,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, "admin/templates_app/subscriptiontemplate/delete_at_wechat.html", context)
        for template in templates:
            try:
                delete_subscription_template(template)
            except WeChatError as exc:
                self.message_user(request, f"{template}: {describe_wechat_error(exc)}", messages.ERROR)
                continue
            self.message_user(request, _("%(template)s: deleted at WeChat.") % {"template": template}, messages.SUCCESS)
        return None

    # --- extra pages: sync an account, add from the public library ---------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("sync/", view(self.sync_view), name="templates_app_subscriptiontemplate_sync"),
            path("library/", view(self.library_view), name="templates_app_subscriptiontemplate_library"),
            *super().get_urls(),
        ]

    def _account(self, request: HttpRequest, raw: str | None) -> OfficialAccount | None:
        """The account ``raw`` names among those the user may see; 404 for any other."""
        if not raw:
            return None
        if not raw.isdigit():
            raise Http404
        account = accounts_for_user(request.user).filter(pk=int(raw)).first()
        if account is None:
            raise Http404
        return account

    def _context(self, request: HttpRequest, title: Any, **extra: Any) -> dict[str, Any]:
        return {**self.admin_site.each_context(request), "title": title, "opts": self.opts, **extra}

    def sync_view(self, request: HttpRequest) -> HttpResponse:
        """Pick an account (GET), sync its subscription templates (POST)."""
        if not request.user.has_perm(SYNC_PERMISSION):
            raise PermissionDenied
        if request.method == "POST":
            account = self._account(request, request.POST.get("account"))
            if account is None:
                raise Http404
            sync_subscriptions_and_report(self, request, [account])
            changelist = reverse("admin:templates_app_subscriptiontemplate_changelist")
            return HttpResponseRedirect(f"{changelist}?account__id__exact={account.pk}")
        accounts = accounts_for_user(request.user).order_by("name")
        context = self._context(request, _("Sync subscription templates from WeChat"), accounts=accounts)
        return TemplateResponse(request, "admin/templates_app/subscriptiontemplate/sync.html", context)

    def library_view(self, request: HttpRequest) -> HttpResponse:
        """Account → category → title → 2 to 5 keywords in order and the scene → ``addtemplate`` → sync.

        Each step is a GET with the choices so far in the query (``account``, ``category``, ``start``, ``tid``);
        the last is a POST.  WeChat's refusals are shown on the step that met them.
        """
        if not request.user.has_perm(ADD_PERMISSION):
            raise PermissionDenied
        params = request.POST if request.method == "POST" else request.GET
        account = self._account(request, params.get("account"))
        if account is None:
            accounts = accounts_for_user(request.user).order_by("name")
            context = self._context(request, _("Add from WeChat's public library"), step="account", accounts=accounts)
            return TemplateResponse(request, "admin/templates_app/subscriptiontemplate/library.html", context)
        client = wechat_client_for(account)
        context = self._context(request, _("Add from WeChat's public library"), account=account)
        try:
            if params.get("tid", "").isdigit():
                return self._keywords_step(request, account, int(params["tid"]), params, context)
            if params.get("category", "").isdigit():
                start = int(params["start"]) if params.get("start", "").isdigit() else 0
                page = client.get_public_subscription_titles([int(params["category"])], start=start)
                context.update(
                    step="title",
                    category=int(params["category"]),
                    titles=[(title, TYPE_NAMES.get(title.type, title.type)) for title in page.titles],
                    previous_start=max(start - SUBSCRIPTION_TITLES_PAGE_MAX, 0) if start else None,
                    next_start=start + SUBSCRIPTION_TITLES_PAGE_MAX
                    if start + SUBSCRIPTION_TITLES_PAGE_MAX < page.count
                    else None,
                    count=page.count,
                )
            else:
                context.update(step="category", categories=client.get_subscription_categories())
        except WeChatError as exc:
            context.update(step="error", error=describe_wechat_error(exc))
        return TemplateResponse(request, "admin/templates_app/subscriptiontemplate/library.html", context)

    def _keywords_step(
        self, request: HttpRequest, account: OfficialAccount, tid: int, params: Any, context: dict[str, Any]
    ) -> HttpResponse:
        keywords = wechat_client_for(account).get_public_subscription_keywords(tid)
        form = LibraryAddForm(request.POST if request.method == "POST" else None, keywords=keywords)
        if request.method == "POST" and form.is_valid():
            try:
                template = add_subscription_template(
                    account,
                    tid=tid,
                    kid_list=form.cleaned_data["kid_list"],
                    scene_desc=form.cleaned_data["scene_desc"],
                    requested_by=request.user,
                )
            except WeChatError as exc:
                form.add_error(None, describe_wechat_error(exc))
            except SubscriptionTemplate.DoesNotExist:
                self.message_user(
                    request,
                    _("WeChat added the template but does not list it yet: sync again in a moment."),
                    messages.WARNING,
                )
                return HttpResponseRedirect(reverse("admin:templates_app_subscriptiontemplate_changelist"))
            else:
                self.message_user(
                    request, _("%(template)s: added at WeChat.") % {"template": template}, messages.SUCCESS
                )
                return HttpResponseRedirect(
                    reverse("admin:templates_app_subscriptiontemplate_change", args=[template.pk])
                )
        context.update(
            step="keywords",
            tid=tid,
            category=params.get("category", ""),
            keywords=[(keyword, type_label(keyword.rule)) for keyword in keywords],
            form=form,
        )
        return TemplateResponse(request, "admin/templates_app/subscriptiontemplate/library.html", context)
