"""The template-send quota on the account admin: WeChat's latest count, and the admin-only "clear quota" action.

Clearing spends one of the 10 resets WeChat allows an account a month (its console's clears count too), so only
account admins (superusers and wxnotify admins, :func:`accounts.selectors.is_account_admin`) see the action, and it
asks to confirm on a page that says how many of this month's are left.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import OfficialAccount
from accounts.selectors import (
    CLEAR_QUOTA_MONTHLY_LIMIT,
    is_account_admin,
    quota_clears_this_month,
    quota_readings,
    remaining_today,
)
from accounts.services import QuotaClearRefused, clear_quota
from wxnotify.wechat.errors import WeChatError, describe_wechat_error


class QuotaAdminMixin:
    """For ``OfficialAccountAdmin``: the ``template_send_quota`` field and the ``clear_quota`` action."""

    def has_clear_quota_permission(self, request: HttpRequest) -> bool:
        return is_account_admin(request.user)

    @admin.display(description=_("template send quota"))
    def template_send_quota(self, account: OfficialAccount) -> str:
        now = timezone.now()
        reading = quota_readings([account.pk]).get(account.pk)
        clears = _("Quota clears this month: %(used)d of %(limit)d.") % {
            "used": quota_clears_this_month(account.pk, now),
            "limit": CLEAR_QUOTA_MONTHLY_LIMIT,
        }
        if reading is None:
            return f"{_('Not read from WeChat yet.')} {clears}"
        text = _("%(remain)d of %(limit)d left today (%(used)d used; read %(read_at)s).") % {
            "remain": remaining_today(reading, now),
            "limit": reading.daily_limit,
            "used": reading.used,
            "read_at": timezone.localtime(reading.read_at).strftime("%Y-%m-%d %H:%M"),
        }
        return f"{text} {clears}"

    @admin.action(description=_("Clear quota at WeChat"), permissions=["clear_quota"])
    def clear_quota(self, request: HttpRequest, queryset: QuerySet[OfficialAccount]) -> TemplateResponse | None:
        """Ask to confirm first (the page names the accounts and this month's clears), then clear each."""
        accounts = list(queryset.order_by("name", "pk"))
        if request.POST.get("confirm") != "yes":
            now = timezone.now()
            rows = [(account, quota_clears_this_month(account.pk, now)) for account in accounts]
            context = {
                **self.admin_site.each_context(request),
                "title": _("Clear quota at WeChat"),
                "opts": self.model._meta,
                "rows": rows,
                "limit": CLEAR_QUOTA_MONTHLY_LIMIT,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, "admin/accounts/officialaccount/clear_quota.html", context)
        for account in accounts:
            try:
                reading = clear_quota(account, cleared_by=request.user)
            except QuotaClearRefused:
                self.message_user(
                    request,
                    _("%(account)s: this month's %(limit)d quota clears are used up; nothing was asked of WeChat.")
                    % {"account": account, "limit": CLEAR_QUOTA_MONTHLY_LIMIT},
                    messages.ERROR,
                )
            except WeChatError as error:
                self.message_user(request, f"{account}: {describe_wechat_error(error)}", messages.ERROR)
            else:
                text = _("%(account)s: quota cleared at WeChat; held messages are sent again.") % {"account": account}
                if reading is not None:
                    text = f"{text} {self.template_send_quota(account)}"
                self.message_user(request, text, messages.SUCCESS)
        return None
