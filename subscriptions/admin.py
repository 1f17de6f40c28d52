"""The consent ledger in the admin: read-only (WeChat's events write it), scoped to the user's accounts."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.scoping import AccountScopedRelatedFilter, ScopedAdminMixin
from subscriptions.models import SubscriptionConsent
from subscriptions.selectors import consents_for_user


@admin.register(SubscriptionConsent)
class SubscriptionConsentAdmin(ScopedAdminMixin, admin.ModelAdmin):
    """Who accepted or refused which subscription template: looked up by openid when a user asks why nothing came."""

    list_display = ["openid", "pri_tmpl_id", "account", "credits", "long_term", "rejected", "rejected_at", "updated_at"]
    list_filter = [("account", AccountScopedRelatedFilter), "long_term", "rejected", "rejected_by"]
    list_select_related = ["account"]
    search_fields = ["=openid", "=pri_tmpl_id"]
    fields = [
        "account",
        "openid",
        "pri_tmpl_id",
        "credits",
        "long_term",
        "rejected",
        "rejected_at",
        "rejected_by",
        "accepted_at",
        "created_at",
        "updated_at",
    ]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[SubscriptionConsent]:
        return consents_for_user(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Consent comes from the user's own choices in WeChat, never typed in here."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: SubscriptionConsent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: SubscriptionConsent | None = None) -> bool:
        return False
