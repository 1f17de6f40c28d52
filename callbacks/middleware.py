"""The callback URLs leave the middleware chain early: WeChat is not a browser.

Django has no per-URL middleware, and a burst of delivery receipts after a big campaign hits the callback endpoint
hundreds of times a second: the session, locale, CSRF, authentication, messages, clickjacking and sign-in
throttling (django-axes) middleware were about a quarter of the CPU of each callback while doing nothing for it
(no cookie, no user, no form, no page; the view is ``csrf_exempt`` and authenticates with WeChat's signature).

:class:`CallbackShortcutMiddleware` stands in ``MIDDLEWARE`` just below the middleware every URL needs: what is
above it applies to the callback URLs as to every other (the unread-body rule, the request id, the forwarded-headers
rule, ``SecurityMiddleware``'s HTTPS redirect and headers); for a path under :data:`CALLBACK_PATH_PREFIX` it
resolves the URL (in ``callbacks.urls``) and calls the view itself, so nothing below it runs.  Other URLs go on down
the chain unchanged.  The body size limit is the view's own (``callbacks.messages.read_body``), so it holds on this
path too.

Why a middleware rather than a second WSGI application for the callback URLs in ``wxnotify/wsgi.py``: gunicorn,
``runserver`` (the demo), ASGI and Django's test client all build their chain from ``MIDDLEWARE``, so the tests
exercise the chain production runs, and there is no second list of middleware to keep in step with the first.

What the skipped part did that the callbacks still need is done here: the language is the site's default
(``LocaleMiddleware`` would pick it for WeChat, which sends no cookie and no ``Accept-Language``; a thread must not
answer in the language of the last page it served).  An exception of the view reaches Django's exception handling
above (``handler500`` answers an outage with 503, as ``OutageMiddleware`` would); the view itself answers database
failures with 503.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import resolve
from django.utils import translation

# The URLs WeChat calls; nothing else of the site may live under this prefix.
CALLBACK_PATH_PREFIX = "/wechat/callback/"
# Where they are defined: the project includes it at the root, so a path resolves there as it would in the project's
# URLconf, without trying the admin's and the API's patterns first.
CALLBACK_URLCONF = "callbacks.urls"


class CallbackShortcutMiddleware:
    """For the callback URLs, the end of the middleware chain: the view is called here (see the module)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path_info.startswith(CALLBACK_PATH_PREFIX):
            return self.get_response(request)
        match = resolve(request.path_info, urlconf=CALLBACK_URLCONF)
        request.resolver_match = match
        with translation.override(settings.LANGUAGE_CODE):
            return match.func(request, *match.args, **match.kwargs)
