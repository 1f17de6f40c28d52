"""The two middlewares the deployment relies on, without nginx: forwarded headers only from the proxy, and unread
request bodies read before the answer (test_deploy_proxy.py shows what each prevents behind the real proxy)."""

from __future__ import annotations

import io

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpResponse
from django.test import RequestFactory

from wxnotify.middleware import ForwardedHeadersMiddleware, UnreadBodyMiddleware, proxy_networks

FORWARDED = {"HTTP_X_FORWARDED_PROTO": "https", "HTTP_X_FORWARDED_FOR": "198.51.100.7"}


def seen_headers(request) -> dict[str, str]:
    ForwardedHeadersMiddleware(lambda request: HttpResponse())(request)
    return {name: request.META[name] for name in FORWARDED if name in request.META}


@pytest.mark.parametrize(
    ("behind_proxy", "peer", "believed"),
    [
        (True, "127.0.0.1", True),
        (True, "::1", True),
        (True, "127.0.0.2", False),
        (True, "", False),
        (False, "10.0.0.9", True),
    ],
)
def test_forwarded_headers_count_only_from_the_proxy(settings, behind_proxy, peer, believed):
    settings.WXNOTIFY_BEHIND_PROXY = behind_proxy
    request = RequestFactory().get("/", REMOTE_ADDR=peer, **FORWARDED)
    # Without WXNOTIFY_BEHIND_PROXY the headers stay, and Django's settings ignore them.
    assert seen_headers(request) == (FORWARDED if believed else {})


def test_proxy_networks(settings):
    settings.WXNOTIFY_BEHIND_PROXY = True
    settings.WXNOTIFY_PROXY_ADDRESSES = ["10.1.0.0/16"]
    assert seen_headers(RequestFactory().get("/", REMOTE_ADDR="10.1.2.3", **FORWARDED)) == FORWARDED
    settings.WXNOTIFY_PROXY_ADDRESSES = ["*"]
    assert seen_headers(RequestFactory().get("/", REMOTE_ADDR="203.0.113.5", **FORWARDED)) == FORWARDED
    with pytest.raises(ImproperlyConfigured, match="FORWARDED_ALLOW_IPS"):
        proxy_networks(["10.1.2.3/8"])


def request_with_body(size: int) -> tuple[WSGIRequest, io.BytesIO]:
    stream = io.BytesIO(b"x" * size)
    request = RequestFactory().post("/", data=b"", content_type="application/json")
    request.environ["wsgi.input"], request.META["CONTENT_LENGTH"] = stream, str(size)
    return WSGIRequest(request.environ), stream


@pytest.mark.parametrize(
    ("status", "size", "read"), [(401, 3_000_000, True), (413, 3_000_000, False), (401, 17 << 20, False)]
)
def test_unread_body_is_read_before_the_answer(settings, status, size, read):
    """Read when the view left it, up to the bound; a 413 (the view's own decision) and a larger body are left."""
    settings.WXNOTIFY_UNREAD_BODY_DRAIN_BYTES = 16 << 20
    request, stream = request_with_body(size)
    response = UnreadBodyMiddleware(lambda request: HttpResponse(status=status))(request)
    assert response.status_code == status
    assert stream.tell() == (size if read else 0)
