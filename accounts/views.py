"""HTTP endpoints of the accounts app: WeChat's callback and the page where users bind their WeChat.

The views stay thin: checking, parsing and dispatching callbacks live in ``accounts.callbacks``, binding
tokens and codes in ``accounts.binding``.
"""

from __future__ import annotations

import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import binding, callbacks
from accounts.models import OfficialAccount
from wxnotify.ops.metrics import count_callbacks

logger = logging.getLogger("wxnotify.accounts.callbacks")


@csrf_exempt
@require_http_methods(["GET", "POST"])
@count_callbacks
def wechat_callback(request: HttpRequest, appid: str) -> HttpResponse:
    """WeChat's server calls: GET verifies the URL, POST delivers messages and events.

    csrf_exempt because WeChat authenticates with its signature, not a cookie; refusals carry no body so a
    prober learns nothing beyond the status.
    """
    try:
        account = callbacks.active_account(appid)
    except callbacks.INFRASTRUCTURE_ERRORS as exc:
        callbacks.log_failure(exc, appid)
        return HttpResponse(status=503, headers={"Retry-After": "1"})
    if account is None:
        return HttpResponse(status=404)
    try:
        if request.method == "GET":
            return HttpResponse(callbacks.verify_url(account, request.GET), content_type=callbacks.TEXT_CONTENT_TYPE)
        body = callbacks.read_body(request)
        answer = callbacks.handle_post(account, request.GET, body)
    except callbacks.CallbackRejected as exc:
        logger.warning("Callback for %s refused with %s: %s", account.appid, exc.status, exc)
        return HttpResponse(status=exc.status, headers={"Retry-After": "1"} if exc.status == 503 else None)
    return HttpResponse(answer.body, content_type=answer.content_type)


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
