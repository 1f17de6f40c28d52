"""Admin scoping shared by every app's admin: what lies outside a user's accounts does not exist for them.

The querysets of the admins come from the apps' selectors, limited to the official accounts the user operates
(``accounts.selectors``); this mixin makes the object pages agree with them.  It lives outside any ``admin``
module so that one app's admin never imports another app's admin (importing one registers its models).
"""

from __future__ import annotations

from django.contrib.admin.utils import unquote
from django.http import Http404, HttpRequest


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
