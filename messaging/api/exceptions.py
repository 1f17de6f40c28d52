"""One JSON error shape for everything under ``/api/``.

Every error answers ``{"status": 403, "code": "permission_denied", "detail": "...", "errors": {...}}``: ``code``
is stable for programs, ``detail`` is readable and translated, ``errors`` holds field messages (nested for nested
fields, e.g. ``{"data": {"thing1": ["..."]}}``) and is empty when the error is not about fields.  DRF exceptions,
the send pipeline's refusals, unknown URLs and server errors all end up in this shape, so a client never has to
parse an HTML error page.

A brief outage of the database or of Redis (:func:`wxnotify.outages.is_outage`) is not a server error: it answers
503 ``service_unavailable`` with ``Retry-After``, from a DRF view, from Django's ``handler500`` (errors raised in a
middleware) and, outside the API, as a plain text page (:func:`outage_response`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from messaging.services import CampaignActionRefused, IdempotencyConflict, MessageRejected
from wxnotify.outages import RETRY_AFTER_SECONDS, is_outage, log_outage

logger = logging.getLogger("wxnotify.requests")

API_PATH_PREFIX = "/api/"
# The pipeline reports errors that concern the whole request under Django's key; the API uses DRF's.
DJANGO_NON_FIELD_ERRORS = "__all__"


class IdempotencyKeyReused(exceptions.APIException):
    """An idempotency key (``client_msg_id`` / ``Idempotency-Key``) came back with a different request body."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = gettext_lazy(
        "This idempotency key was already used for a different request; use a new key for a new message."
    )
    default_code = "idempotency_conflict"


class CampaignConflict(exceptions.APIException):
    """The campaign's state does not allow the action (cancel a finished campaign, retry a cancelled one)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = gettext_lazy("The campaign's state does not allow this.")
    default_code = "conflict"


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = gettext_lazy("The request body is too large.")
    default_code = "request_too_large"


class ServiceUnavailable(exceptions.APIException):
    """The database or Redis failed to answer: the same request will work once it is back."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = gettext_lazy("A service this request needs is briefly unavailable. Try again in a few seconds.")
    default_code = "service_unavailable"
    wait = RETRY_AFTER_SECONDS  # DRF's handler turns it into Retry-After


def error_body(status_code: int, code: str, detail: str, errors: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"status": status_code, "code": code, "detail": detail, "errors": dict(errors or {})}


def _nest_key(errors: dict[str, Any], key: str, messages: Any) -> None:
    """Put ``messages`` at a dotted key ("data.thing1") as nested dicts; "__all__" becomes "non_field_errors"."""
    *parents, leaf = key.split(".")
    node = errors
    for part in parents:
        node = node.setdefault(part, {})
    leaf = api_settings.NON_FIELD_ERRORS_KEY if leaf == DJANGO_NON_FIELD_ERRORS else leaf
    if isinstance(messages, Mapping):
        target = node.setdefault(leaf, {})
        for sub_key, sub_messages in messages.items():
            _nest_key(target, str(sub_key), sub_messages)
    elif isinstance(messages, list | tuple):
        node.setdefault(leaf, []).extend(str(message) for message in messages)
    else:
        node.setdefault(leaf, []).append(str(messages))


def nest_field_errors(errors: Mapping[str, Any]) -> dict[str, Any]:
    """Turn the pipeline's field errors (flat "data.thing1" keys or nested dicts) into DRF's nested shape."""
    nested: dict[str, Any] = {}
    for key, messages in errors.items():
        _nest_key(nested, str(key), messages)
    return nested


def _as_api_exception(exc: Exception) -> Exception:
    """Map the pipeline's and Django's exceptions onto DRF ones; anything else is left for the 500 handler."""
    if isinstance(exc, MessageRejected):
        return exceptions.ValidationError(nest_field_errors(exc.errors))
    if isinstance(exc, IdempotencyConflict):
        return IdempotencyKeyReused()
    if isinstance(exc, CampaignActionRefused):
        return CampaignConflict(str(exc))
    if isinstance(exc, RequestDataTooBig):
        return RequestTooLarge()
    if isinstance(exc, Http404):
        return exceptions.NotFound()
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied()
    if is_outage(exc):
        log_outage(logger, "Database or cache", exc)
        return ServiceUnavailable()
    return exc


def _code_of(exc: exceptions.APIException) -> str:
    codes = exc.get_codes()
    return codes if isinstance(codes, str) else exc.default_code


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's ``EXCEPTION_HANDLER``: DRF's own handling (headers such as Retry-After, rollback), our body shape."""
    exc = _as_api_exception(exc)
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    if isinstance(exc, exceptions.ValidationError):
        errors = exc.detail if isinstance(exc.detail, Mapping) else {api_settings.NON_FIELD_ERRORS_KEY: exc.detail}
        response.data = error_body(response.status_code, "invalid", _("The request has invalid fields."), errors)
    else:
        response.data = error_body(response.status_code, _code_of(exc), str(exc.detail))
    return response


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
