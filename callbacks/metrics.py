"""Prometheus series of the callback endpoint: requests by account and outcome, receipts per INSERT.

Counted in the web workers in prometheus_client's multiprocess mode and exposed with every other series of the host
by ``/metrics`` (``operations.metrics``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from prometheus_client import Counter, Histogram

# The label of requests we cannot attribute to a known account (their AppID is whatever the caller typed).
UNKNOWN_ACCOUNT = "unknown"
# Callback outcomes by HTTP status (callbacks.views answers refusals with a bare status).
CALLBACK_OUTCOMES = {
    200: "ok",
    400: "bad_request",
    403: "forbidden",
    404: "unknown_account",
    405: "method_not_allowed",
    413: "too_large",
    503: "unavailable",
}

CALLBACK_REQUESTS = Counter(
    "wxnotify_callback_requests",
    "Requests to the WeChat callback endpoint, by outcome.",
    ["account", "method", "outcome"],
)

# How many encrypted receipts each INSERT of the group commit wrote (callbacks.services.RECEIPT_WRITES): 1 when the
# callbacks come one at a time, more in a burst; a burst that stays at 1 pays a statement and a commit per receipt.
RECEIPTS_PER_INSERT = Histogram(
    "wxnotify_callback_receipts_per_insert",
    "Encrypted delivery receipts stored by one INSERT of the web process's group commit.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 100),
)


def count_callbacks(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Count the requests of the callback view ``view(request, appid)`` by outcome.

    The AppID label is kept only when the view found the account: a 404 carries whatever AppID a prober typed,
    which must not create a new time series per request.
    """

    @functools.wraps(view)
    def wrapper(request: HttpRequest, appid: str, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            response = view(request, appid, *args, **kwargs)
        except Exception:
            CALLBACK_REQUESTS.labels(UNKNOWN_ACCOUNT, request.method, "error").inc()
            raise
        outcome = CALLBACK_OUTCOMES.get(response.status_code, "other")
        account = UNKNOWN_ACCOUNT if response.status_code in (404, 405) else appid
        CALLBACK_REQUESTS.labels(account, request.method, outcome).inc()
        return response

    return wrapper
