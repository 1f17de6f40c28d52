"""Admin scoping shared by every app's admin: what lies outside a user's accounts does not exist for them.

The querysets of the admins come from the apps' selectors, limited to the official accounts the user operates
(``accounts.selectors``); the mixin makes the object pages agree with them, and the list filter offers only their
related objects.  It lives outside any ``admin``
module so that one app's admin never imports another app's admin (importing one registers its models).
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.http import Http404, HttpRequest

from accounts.models import OfficialAccount
from accounts.selectors import accounts_for_user


class ScopedAdminMixin:
    """Answer 404 for objects outside the user's scope instead of Django's redirect to the index."""

    def _require_in_scope(self, request: HttpRequest, object_id: str | None) -> None:
        if object_id and not self.get_queryset(request).filter(pk=unquote(object_id)).exists():
            raise Http404

    def change_view(self, request, object_id, form_url="", extra_context=None):
        self._require_in_scope(request, object_id)
        return super().change_view(request, object_id, form_url, extra_context)

    def history_view(self, request, object_id, extra_context=None):
        self._require_in_scope(request, object_id)
        return super().history_view(request, object_id, extra_context)

    def delete_view(self, request, object_id, extra_context=None):
        self._require_in_scope(request, object_id)
        return super().delete_view(request, object_id, extra_context)


class AccountScopedRelatedFilter(admin.RelatedFieldListFilter):
    """A related-object filter offering the objects of the user's accounts: the accounts themselves, or (for a
    template, a campaign, ...) the objects whose ``account`` is one of them.

    Django's ``RelatedOnlyFieldListFilter`` finds its choices with a DISTINCT over every row of the list, which over
    a million messages took longer than the page itself; this asks the small related table instead, so a choice may
    match no row.  No other account's names are ever offered, as with the scoped querysets.
    """

    def field_choices(self, field, request: HttpRequest, model_admin) -> list[tuple]:
        accounts = accounts_for_user(request.user)
        scope = {"pk__in": accounts} if field.related_model is OfficialAccount else {"account__in": accounts}
        ordering = self.field_admin_ordering(field, request, model_admin)
        return field.get_choices(include_blank=False, limit_choices_to=scope, ordering=ordering)
