"""Request middleware of wxnotify."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse

from wxnotify.http_errors import outage_response
from wxnotify.outages import is_outage, log_outage
from wxnotify.tracing import clean_trace_id, new_trace_id, trace_id_var

logger = logging.getLogger("wxnotify.requests")

REQUEST_ID_HEADER = "X-Request-ID"
# The same header as WSGI names it: read from META, since request.headers builds a mapping of every header first.
REQUEST_ID_META = "HTTP_X_REQUEST_ID"
DRAIN_CHUNK_BYTES = 64 * 1024


def drain_body(request: HttpRequest, at_most: int) -> None:
    """Read and drop what is left of the request body, ``at_most`` bytes in all, in 64 KiB pieces."""
    left = at_most
    while left > 0:
        try:
            chunk = request.read(min(left, DRAIN_CHUNK_BYTES))
        except OSError:  # the client went away (Django's UnreadablePostError): nothing left to be polite to
            return
        if not chunk:
            return
        left -= len(chunk)


class UnreadBodyMiddleware:
    """Read what a view left of the request body (up to ``WXNOTIFY_UNREAD_BODY_DRAIN_BYTES``) before answering.

    An answer given without reading the body (401 for an anonymous POST, the HTTPS redirect, a CSRF refusal) is
    followed by gunicorn closing the connection; with request bytes still unread the kernel resets it, and the
    client, or nginx in front (which then answers 502), gets the reset instead of the answer.  A body declared
    larger than the bound is not read at all (reading gigabytes to be polite is a denial of service); nginx's
    client_max_body_size keeps bodies within it (deploy/nginx/wxnotify.conf).  A 413 is left alone: the view that
    refused the body as too large has decided how much of it to read (``callbacks.messages.read_body``).  First in
    MIDDLEWARE, so it sees every answer.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if response.status_code != 413 and 0 < declared <= settings.WXNOTIFY_UNREAD_BODY_DRAIN_BYTES:
            drain_body(request, declared)
        return response


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
        trace_id = clean_trace_id(request.META.get(REQUEST_ID_META)) or new_trace_id()
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


FORWARDED_HEADERS = ("HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_FOR")


def proxy_networks(addresses: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None:
    """The networks of ``FORWARDED_ALLOW_IPS`` (None for ``*``: any peer), refused at start-up when malformed."""
    if "*" in addresses:
        return None
    try:
        return [ipaddress.ip_network(address) for address in addresses]
    except ValueError as exc:
        raise ImproperlyConfigured(f"FORWARDED_ALLOW_IPS: {exc}") from exc


class ForwardedHeadersMiddleware:
    """Behind ``WXNOTIFY_BEHIND_PROXY``, ``X-Forwarded-Proto`` and ``X-Forwarded-For`` count only from the proxy.

    ``SECURE_PROXY_SSL_HEADER`` believes the header from whoever sends it, and sign-in throttling counts by the
    address last in ``X-Forwarded-For``: a client that reaches gunicorn without the proxy could otherwise claim
    HTTPS (skipping the redirect) or a new address for every password guess.  On a connection from anywhere but
    ``FORWARDED_ALLOW_IPS`` both headers are dropped, which is what gunicorn does for the scheme with the same list.
    Goes before ``SecurityMiddleware`` and django-axes, which read them.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.networks = proxy_networks(settings.WXNOTIFY_PROXY_ADDRESSES)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if settings.WXNOTIFY_BEHIND_PROXY and not self.from_proxy(request.META.get("REMOTE_ADDR", "")):
            for header in FORWARDED_HEADERS:
                request.META.pop(header, None)
        return self.get_response(request)

    def from_proxy(self, peer: str) -> bool:
        if self.networks is None:
            return True
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.networks)
