"""The API's errors in the one JSON error shape (:func:`wxnotify.http_errors.error_body`).

Every error answers ``{"status": 403, "code": "permission_denied", "detail": "...", "errors": {...}}``: ``code``
is stable for programs, ``detail`` is readable and translated, ``errors`` holds field messages (nested for nested
fields, e.g. ``{"data": {"thing1": ["..."]}}``) and is empty when the error is not about fields.  DRF exceptions
and the send pipeline's refusals are mapped here (DRF's ``EXCEPTION_HANDLER``); unknown URLs, server errors and
outages outside a DRF view are answered in the same shape by the project's handlers (``wxnotify.http_errors``).

A brief outage of the database or of Redis (:func:`wxnotify.outages.is_outage`) in a DRF view is not a server
error: it answers 503 ``service_unavailable`` with ``Retry-After``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from messaging.services import ApprovalRefused, CampaignActionRefused, IdempotencyConflict, MessageRejected
from wxnotify.http_errors import ServiceUnavailable, error_body
from wxnotify.outages import is_outage, log_outage

logger = logging.getLogger("wxnotify.requests")

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
    if isinstance(exc, ApprovalRefused):
        return exceptions.PermissionDenied(str(exc))
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
