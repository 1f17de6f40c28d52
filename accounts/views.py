"""The page where users bind their WeChat; binding tokens and codes live in ``accounts.binding``."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from accounts import binding
from accounts.models import OfficialAccount


@never_cache
@login_required
@require_POST
def unbind(request: HttpRequest, appid: str) -> HttpResponse:
    """The logged-in user releases their WeChat on one account, so it can be bound again (by them or someone else)."""
    account = get_object_or_404(OfficialAccount, appid=appid, is_active=True)
    if binding.unbind(request.user, account):
        messages.success(request, _("Your WeChat is no longer bound on %(account)s.") % {"account": account.name})
    return redirect("accounts:bind")


@never_cache
@login_required
@require_GET
def bind(request: HttpRequest) -> HttpResponse:
    """Per active account: a QR code to scan and a one-time code to send, both binding the visitor's WeChat."""
    return render(
        request,
        "accounts/bind.html",
        {
            "targets": binding.bind_targets_for(request.user),
            "code_minutes": binding.CODE_TTL_SECONDS // 60,
        },
    )
