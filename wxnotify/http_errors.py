"""How the whole site answers errors Django raises before or around any view: 400, CSRF failures, unknown API URLs,
500, outages.

Under ``/api/`` every answer has the API's JSON error shape (:func:`error_body`), so a client never has to parse
an HTML page; elsewhere Django's own pages are kept.  A brief outage of the database or of Redis
(:func:`wxnotify.outages.is_outage`) is not a server error: it answers 503 with ``Retry-After`` and nothing about
the cause, from the project's ``handler500`` (errors raised in a middleware), from ``OutageMiddleware`` (any
view) and from the API's exception handler (``messaging.api.exceptions``, which maps the API's own errors onto
the same shape).  These are the project's, not an app's: ``wxnotify.urls`` and ``wxnotify.middleware`` use them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views import csrf, defaults
from rest_framework import exceptions, status

from wxnotify.outages import RETRY_AFTER_SECONDS, is_outage, log_outage

logger = logging.getLogger("wxnotify.requests")

API_PATH_PREFIX = "/api/"


class ServiceUnavailable(exceptions.APIException):
    """The database or Redis failed to answer: the same request will work once it is back."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = gettext_lazy("A service this request needs is briefly unavailable. Try again in a few seconds.")
    default_code = "service_unavailable"
    wait = RETRY_AFTER_SECONDS  # DRF's handler turns it into Retry-After


def error_body(status_code: int, code: str, detail: str, errors: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"status": status_code, "code": code, "detail": detail, "errors": dict(errors or {})}


def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Unknown URLs under ``/api/`` answer JSON, whatever DEBUG says (Django's own 404 page is HTML)."""
    return JsonResponse(
        error_body(status.HTTP_404_NOT_FOUND, "not_found", _("No API endpoint at this URL.")),
        status=status.HTTP_404_NOT_FOUND,
    )


def bad_request(request: HttpRequest, exception: Exception, *args: Any, **kwargs: Any) -> HttpResponse:
    """The project's ``handler400`` (suspicious requests Django refuses before any view): JSON under ``/api/``."""
    if request.path.startswith(API_PATH_PREFIX):
        return JsonResponse(
            error_body(status.HTTP_400_BAD_REQUEST, "bad_request", _("Bad request.")),
            status=status.HTTP_400_BAD_REQUEST,
        )
    return defaults.bad_request(request, exception, *args, **kwargs)


def csrf_failure(request: HttpRequest, reason: str = "", **kwargs: Any) -> HttpResponse:
    """The project's ``CSRF_FAILURE_VIEW``: under ``/api/`` a JSON 403 like the one DRF's session authentication
    answers (views outside DRF, such as unknown API URLs, are checked by Django's middleware); elsewhere Django's page.

    ``reason`` is one of Django's fixed sentences, at most naming the Origin or Referer the client itself sent.
    """
    if request.path.startswith(API_PATH_PREFIX):
        return JsonResponse(
            error_body(
                status.HTTP_403_FORBIDDEN,
                "permission_denied",
                _("CSRF check failed: %(reason)s Session-authenticated writes need the CSRF token.")
                % {"reason": reason},
            ),
            status=status.HTTP_403_FORBIDDEN,
        )
    return csrf.csrf_failure(request, reason=reason, **kwargs)


def outage_response(request: HttpRequest) -> HttpResponse:
    """503 with ``Retry-After``: the API JSON under ``/api/``, plain text elsewhere; nothing about the cause."""
    if request.path.startswith(API_PATH_PREFIX):
        response: HttpResponse = JsonResponse(
            error_body(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                ServiceUnavailable.default_code,
                str(ServiceUnavailable.default_detail),
            ),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    else:
        response = HttpResponse(
            _("Service briefly unavailable. Try again in a few seconds."),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            content_type="text/plain; charset=utf-8",
        )
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def server_error(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """The project's ``handler500``: JSON under ``/api/``, Django's page elsewhere.  Says nothing about the cause.

    Django calls it while handling the exception, so an outage raised outside any view (a session saved by its
    middleware, say) is recognised here and answers 503 instead.
    """
    exc = sys.exc_info()[1]
    if is_outage(exc):
        log_outage(logger, "Database or cache", exc)
        return outage_response(request)
    if request.path.startswith(API_PATH_PREFIX):
        return JsonResponse(
            error_body(status.HTTP_500_INTERNAL_SERVER_ERROR, "server_error", _("Internal server error.")),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    return defaults.server_error(request, *args, **kwargs)
