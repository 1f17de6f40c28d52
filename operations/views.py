"""HTTP endpoints of operations: ``/healthz`` for load balancers, ``/metrics`` for Prometheus, the admin dashboard."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from operations import health, metrics
from operations.dashboard import build_dashboard


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when every check passes, else 503 naming the failed ones; open to anyone, so it shows no secrets."""
    report = health.run_checks()
    return JsonResponse(report.as_dict(), status=200 if report.ok else 503)


def _metrics_authorized(request: HttpRequest) -> bool:
    expected = settings.WXNOTIFY_METRICS_TOKEN
    if not expected:
        return True
    scheme, _space, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected.encode())


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition of this host's processes; needs ``Authorization: Bearer`` when a token is set."""
    if not _metrics_authorized(request):
        response = HttpResponse(status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body, content_type = metrics.render(request.headers.get("Accept"))
    return HttpResponse(body, content_type=content_type)


def dashboard(request: HttpRequest) -> TemplateResponse:
    """The admin's operations page (wrapped in ``admin_view``: staff only), limited to the user's accounts."""
    context = {
        **admin.site.each_context(request),
        "title": _("Operations dashboard"),
        "dashboard": build_dashboard(request.user),
    }
    return TemplateResponse(request, "operations/dashboard.html", context)
