"""The admin's name (the product's, not Django's) and its page of sign-in attempts (django-axes).

Sign-in attempts get an action that unlocks locked-out sign-ins.
"""

from __future__ import annotations

from axes.admin import AccessAttemptAdmin
from axes.models import AccessAttempt
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

# Shown in every admin page's header, on the sign-in page and in the browser's title bar.
admin.site.site_header = _("wxnotify administration")
admin.site.site_title = _("wxnotify admin")

admin.site.unregister(AccessAttempt)


@admin.register(AccessAttempt)
class SignInAttemptAdmin(AccessAttemptAdmin):
    """axes' list of failed sign-ins (username, address, count, locked or not) plus "Unlock".

    An attempt row is what locks a username at an address out, so unlocking removes it; the successful sign-ins
    and the record of past failures stay in axes' access logs.
    """

    actions = [*AccessAttemptAdmin.actions, "unlock"]

    @admin.action(description=_("Unlock the selected sign-ins"), permissions=["delete"])
    def unlock(self, request: HttpRequest, queryset: QuerySet[AccessAttempt]) -> None:
        unlocked = queryset.count()
        queryset.delete()
        self.message_user(
            request,
            ngettext("Unlocked %(count)d sign-in.", "Unlocked %(count)d sign-ins.", unlocked) % {"count": unlocked},
            messages.SUCCESS,
        )
