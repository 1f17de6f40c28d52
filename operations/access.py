"""Who may read ``/metrics`` and the details of ``/healthz``.

Both show the same class of operational data (the AppIDs served, per-account volumes and errcodes, queue depth and
lag), so one rule decides for both.  When ``WXNOTIFY_METRICS_TOKEN`` is set, a request must present
``Authorization: Bearer <token>``, whatever else is set.  Without a token they are open to anyone only when
``WXNOTIFY_METRICS_PUBLIC=1`` (a port only Prometheus reaches) or in a DEBUG run (the demo); otherwise ``/metrics``
does not exist (404).  Anonymous ``/healthz`` always answers ok / not ok: load balancers call it without credentials.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest

BEARER_CHALLENGE = 'Bearer realm="wxnotify operations"'


def open_to_anyone() -> bool:
    """True when no token is configured and the details are made public on purpose, or in a DEBUG run."""
    return not settings.WXNOTIFY_METRICS_TOKEN and (settings.WXNOTIFY_METRICS_PUBLIC or settings.DEBUG)


def presents_token(request: HttpRequest) -> bool:
    """True when the request carries the configured bearer token.

    Compared in constant time over bytes (a string compare would return at the first differing character, and
    ``hmac.compare_digest`` refuses non-ASCII ``str``); no configured token matches nothing.
    """
    return authorization_matches(request.headers.get("Authorization", ""))


def authorization_matches(authorization: str) -> bool:
    """True when an ``Authorization`` header value is ``Bearer <the configured token>``; also what the worker hosts'
    metrics listener (``manage.py serve_metrics``) asks, which sees no Django request."""
    expected = settings.WXNOTIFY_METRICS_TOKEN
    if not expected:
        return False
    scheme, _space, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected.encode())


def may_read_details(request: HttpRequest) -> bool:
    return open_to_anyone() or presents_token(request)


def metrics_refusal(authorization: str) -> int | None:
    """How a scrape with this ``Authorization`` header is refused, or None when it may read the metrics.

    Without a configured token (and not open) there is no way in, so 404 as if the endpoint did not exist; with one,
    a missing or wrong token is 401 (with :data:`BEARER_CHALLENGE`).  ``/metrics`` and ``serve_metrics`` both ask.
    """
    if open_to_anyone() or authorization_matches(authorization):
        return None
    return 401 if settings.WXNOTIFY_METRICS_TOKEN else 404
