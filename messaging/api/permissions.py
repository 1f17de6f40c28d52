"""Who may call what.

Two layers: the model permissions of Django's auth (reading needs ``view_<model>``, sending needs ``add_<model>``;
the "business staff" and "wxnotify admins" groups hold them) decide whether a user may use an endpoint at all, and
``accounts.selectors.accounts_for_user`` decides which official accounts' data they see and send for.  The second
layer lives in the views' querysets and the serializers' ``account`` field, so an account a user may not use looks
exactly like one that does not exist (404 on details, "unknown account" on sends) and its existence never leaks.
"""

from __future__ import annotations

from rest_framework.permissions import DjangoModelPermissions


class ModelActionPermission(DjangoModelPermissions):
    """Django model permissions, with reads guarded too (DRF's class lets anyone authenticated read).

    POST — creating a message or campaign, and the campaign actions cancel / retry-failed, which control sending —
    needs ``add_<model>``.  Methods not listed are refused with 405.
    """

    perms_map = {
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": ["%(app_label)s.view_%(model_name)s"],
        "POST": ["%(app_label)s.add_%(model_name)s"],
    }

    def _queryset(self, view):
        """Only the model matters here: take the view's class-level ``queryset`` (``Model.objects.none()``) when set.

        DRF would call ``get_queryset()``, which scopes to the user's accounts and costs two queries per request
        before the view has even started.
        """
        queryset = getattr(view, "queryset", None)
        if queryset is not None:
            return queryset
        return super()._queryset(view)
