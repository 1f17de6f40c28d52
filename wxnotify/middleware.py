"""Request middleware of wxnotify."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from wxnotify.http_errors import outage_response
from wxnotify.outages import is_outage, log_outage
from wxnotify.tracing import clean_trace_id, new_trace_id, trace_id_var

logger = logging.getLogger("wxnotify.requests")

REQUEST_ID_HEADER = "X-Request-ID"


class RequestIdMiddleware:
    """Adopt the caller's ``X-Request-ID`` (or make one), expose it as ``request.trace_id`` and echo it.

    A header that is too long or holds unsafe characters is replaced by a generated id rather than
    refused: tracing must never be the reason a request fails, and the echoed header tells the caller
    which id to quote.  The id is the current trace id for everything the request does, so log lines
    and the messages it creates carry it.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        trace_id = clean_trace_id(request.headers.get(REQUEST_ID_HEADER)) or new_trace_id()
        request.trace_id = trace_id
        token = trace_id_var.set(trace_id)
        try:
            response = self.get_response(request)
        finally:
            trace_id_var.reset(token)
        response[REQUEST_ID_HEADER] = trace_id
        return response


class OutageMiddleware:
    """A view that fails because the database or Redis is briefly unavailable answers 503, never 500.

    The API's own views already answer such failures with their JSON 503 (``messaging.api.exceptions``); this
    covers the rest: the admin, the console, the binding page, health pages.  The answer carries ``Retry-After``
    and nothing about the cause; the outage is logged once a minute per process.  Failures raised outside views
    reach the project's ``handler500``, which answers the same way.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_outage(exception):
            return None
        log_outage(logger, "Database or cache", exception)
        return outage_response(request)
