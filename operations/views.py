"""HTTP endpoints of operations: ``/healthz`` for load balancers, ``/metrics`` for Prometheus, the admin dashboard."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound, JsonResponse
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from operations import access, health, metrics
from operations.dashboard import build_dashboard


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when every check passes, else 503.  Anonymous callers (load balancers) read only ``{"status": "ok"}`` or
    ``{"status": "fail"}``; the checks, queue depth and lag need what ``/metrics`` needs (:mod:`operations.access`)."""
    report = health.run_checks()
    body = report.as_dict() if access.may_read_details(request) else report.summary()
    return JsonResponse(body, status=200 if report.ok else 503)


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition of this host's processes, for the bearer token (or open: :mod:`operations.access`).

    Without a configured token (and not made public) production has no way in, so the endpoint answers 404 as if it
    did not exist; with one, a missing or wrong token answers 401 with the ``WWW-Authenticate`` challenge.
    """
    refusal = access.metrics_refusal(request.headers.get("Authorization", ""))
    if refusal == 404:
        return HttpResponseNotFound()
    if refusal is not None:
        response = HttpResponse(status=refusal)
        response["WWW-Authenticate"] = access.BEARER_CHALLENGE
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
