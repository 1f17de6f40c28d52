"""One trace id per request, carried to every log line about the work it started.

The API accepts a caller's ``X-Request-ID`` (or makes one), stores it on the messages and campaigns it
creates and hands it to the delivery tasks, which set it again while they work on those messages.  A
context variable holds the current id, so it follows the code through calls, threads started with a
copied context and asyncio tasks without being passed around; :class:`TraceIdFilter` puts it on each
log record as ``%(trace_id)s``.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

TRACE_ID_MAX_LENGTH = 64
NO_TRACE_ID = "-"

# Letters, digits and a few separators: enough for UUIDs, W3C/B3 ids and "service:123" styles, and
# nothing that could forge a log line (newlines), break a header or smuggle markup into the admin.
_SAFE_TRACE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,63}$")

trace_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("wxnotify_trace_id", default="")


def new_trace_id() -> str:
    """A fresh random id (32 hex characters)."""
    return uuid.uuid4().hex


def clean_trace_id(value: str | None) -> str | None:
    """Return ``value`` if it is a safe trace id (≤64 safe characters), else None."""
    if not value or len(value) > TRACE_ID_MAX_LENGTH:
        return None
    return value if _SAFE_TRACE_ID.match(value) else None


def get_trace_id() -> str:
    """The trace id of the work in progress, or "" outside any traced work."""
    return trace_id_var.get()


@contextmanager
def traced(trace_id: str) -> Iterator[str]:
    """Run a block with ``trace_id`` as the current id (restored afterwards, also on errors)."""
    token = trace_id_var.set(trace_id or "")
    try:
        yield trace_id
    finally:
        trace_id_var.reset(token)


def context_with_trace_id(trace_id: str) -> contextvars.Context:
    """A copy of the current context with ``trace_id`` set, for ``executor.submit(ctx.run, fn, ...)``.

    Threads of a pool do not inherit the submitter's context variables; running the job inside such a
    context makes the client's log lines about a message carry that message's trace id.
    """
    context = contextvars.copy_context()
    context.run(trace_id_var.set, trace_id or "")
    return context


class TraceIdFilter(logging.Filter):
    """Set ``record.trace_id`` (the current trace id, or "-") so formatters can print ``%(trace_id)s``.

    Attached to handlers, it also covers records of third-party loggers, which would otherwise make a
    formatter that names ``trace_id`` fail.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "trace_id", None):
            record.trace_id = trace_id_var.get() or NO_TRACE_ID
        return True
