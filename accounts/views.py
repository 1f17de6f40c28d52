"""The page where users bind their WeChat; binding tokens and codes live in ``accounts.binding``."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from accounts import binding


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
