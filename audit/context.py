"""Who acts and from where, for every audit log entry written while a request, a command or a task runs.

django-auditlog keeps this in a context variable that its pre_save receiver copies onto each entry; we fill it in two
ways.  :class:`AuditMiddleware` does it for requests, with two differences from django-auditlog's own middleware:

* the **actor is read when an entry is written**, not when the request comes in: Django REST framework authenticates
  a token in the view, after every middleware, so the library's middleware saw an anonymous user for every API call;
* the **address** is :func:`wxnotify.login_throttling.client_address` (the peer, or behind our proxy the address it
  appended), not the first entry of ``X-Forwarded-For``, which any client can write.

:func:`acting_as` does it for management commands and tasks, which name themselves ("manage.py sync_templates").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from auditlog.context import auditlog_value, set_extra_data
from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest, HttpResponse
from django.utils.functional import SimpleLazyObject

from wxnotify.login_throttling import client_address
from wxnotify.tracing import get_trace_id

# What a secret field's old and new values become in a change: whether it was set, never what it was.
MASK = "***"


def mask_secret(value: str) -> str:
    """``AUDITLOG_MASK_CALLABLE`` for the secret fields (``audit.tracked``): "***" for any value, "" for none.

    django-auditlog's own mask keeps half of the value; this keeps nothing, so a changed secret shows as
    ``*** → ***``, a new one as ``→ ***``.  ("None" is how django-auditlog writes a value that did not exist.)
    """
    return MASK if value and value != "None" else ""


def current_trace_id() -> str | None:
    """``AUDITLOG_CID_GETTER``: the request's or task's trace id (``X-Request-ID``), so an entry leads to the logs."""
    return get_trace_id() or None


def _authenticated_user(request: HttpRequest) -> AbstractBaseUser | None:
    user = getattr(request, "user", None)
    return user if user is not None and user.is_authenticated else None


@contextmanager
def _entries_context(context_data: dict[str, Any]) -> Iterator[None]:
    """django-auditlog's context, restoring the one it replaces on the way out (the library's leaves the inner
    one current, so an entry written after a nested command or task would lose its request's actor)."""
    outer = auditlog_value.get(None)
    try:
        with set_extra_data(context_data=context_data):
            yield
    finally:
        if outer is not None:
            auditlog_value.set(outer)


class AuditMiddleware:
    """Every entry written while the request is handled gets its user, their username and the client's address.

    Goes after ``AuthenticationMiddleware``.  The user is looked up lazily, when an entry is written, so a user that
    Django REST framework authenticates later (token authentication) is the one recorded.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        context_data = {
            "actor": SimpleLazyObject(lambda: _authenticated_user(request)),
            "default_actor_name": lambda: user.get_username() if (user := _authenticated_user(request)) else "",
            "remote_addr": client_address(request),
            "remote_port": None,
        }
        with _entries_context(context_data):
            return self.get_response(request)


@contextmanager
def acting_as(name: str) -> Iterator[None]:
    """Record ``name`` (a command's "manage.py sync_templates", a task's "task: ...") as who acted for the entries
    written inside the block, with no address."""
    with _entries_context({"actor": None, "default_actor_name": name, "remote_addr": None, "remote_port": None}):
        yield
