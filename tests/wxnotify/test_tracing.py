"""X-Request-ID in and out, and the trace id on log lines."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.http import HttpResponse
from django.test import RequestFactory

from wxnotify.middleware import RequestIdMiddleware
from wxnotify.tracing import (
    TraceIdFilter,
    clean_trace_id,
    context_with_trace_id,
    get_trace_id,
    traced,
)


@pytest.mark.parametrize(
    "value",
    ["abc", "0af7651916cd43dd8448eb211c80319c", "req-1.2:3/x@y+z=w", "a" * 64],
)
def test_safe_ids_are_kept(value):
    assert clean_trace_id(value) == value


@pytest.mark.parametrize(
    "value",
    ["", None, "a" * 65, "has space", "line\nbreak", "<script>", "-starts-with-dash", "中文", "semi;colon"],
)
def test_unsafe_ids_are_refused(value):
    assert clean_trace_id(value) is None


def _view_seeing_trace_id(request):
    return HttpResponse(f"{request.trace_id}|{get_trace_id()}")


def test_middleware_adopts_and_echoes_a_valid_request_id():
    middleware = RequestIdMiddleware(_view_seeing_trace_id)
    response = middleware(RequestFactory().get("/", HTTP_X_REQUEST_ID="client-42"))
    assert response["X-Request-ID"] == "client-42"
    assert response.content.decode() == "client-42|client-42"
    assert get_trace_id() == ""


def test_middleware_replaces_an_unsafe_request_id_and_generates_missing_ones():
    middleware = RequestIdMiddleware(_view_seeing_trace_id)
    bad = middleware(RequestFactory().get("/", HTTP_X_REQUEST_ID="x" * 65))
    missing = middleware(RequestFactory().get("/"))
    for response in (bad, missing):
        generated = response["X-Request-ID"]
        assert len(generated) == 32
        assert response.content.decode() == f"{generated}|{generated}"
    assert bad["X-Request-ID"] != missing["X-Request-ID"]


def test_the_installed_middleware_echoes_the_header(client):
    response = client.get("/no-such-page/", HTTP_X_REQUEST_ID="echo-me")
    assert response["X-Request-ID"] == "echo-me"


def _record(message: str = "hello") -> logging.LogRecord:
    return logging.LogRecord("wxnotify.test", logging.INFO, __file__, 1, message, None, None)


def test_log_filter_puts_the_current_trace_id_on_records():
    log_filter = TraceIdFilter()
    outside = _record()
    log_filter.filter(outside)
    with traced("trace-in-block"):
        inside = _record()
        log_filter.filter(inside)
    formatter = logging.Formatter("[%(trace_id)s] %(message)s")
    assert formatter.format(outside) == "[-] hello"
    assert formatter.format(inside) == "[trace-in-block] hello"


def test_trace_id_reaches_pool_threads_through_a_copied_context():
    with ThreadPoolExecutor(max_workers=2) as pool:
        plain = pool.submit(get_trace_id).result()
        carried = pool.submit(context_with_trace_id("msg-7").run, get_trace_id).result()
    assert plain == ""
    assert carried == "msg-7"


def test_configured_console_handler_prints_the_trace_id(settings):
    handler_config = settings.LOGGING["handlers"]["console"]
    assert "trace_id" in handler_config["filters"]
    assert "%(trace_id)s" in settings.LOGGING["formatters"][handler_config["formatter"]]["format"]
