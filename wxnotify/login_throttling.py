"""Sign-in throttling (django-axes) for both login pages, the admin's and the console's.

Failed sign-ins are counted per username *and* client address: an attacker guessing one account's password is
locked out after ``AXES_FAILURE_LIMIT`` failures, while the real user signing in from elsewhere is not, and a whole
office behind one NAT address is not locked out by one colleague's typos.  Attempts are kept in the database on both
configurations (see ``AXES_HANDLER`` in the settings) so admins see and unlock them in the admin.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def _is_ip_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def client_address(request: HttpRequest) -> str | None:
    """The address failed sign-ins are counted by (``AXES_CLIENT_IP_CALLABLE``).

    The peer's address, or behind ``WXNOTIFY_BEHIND_PROXY`` the one the proxy appended last to X-Forwarded-For:
    entries before it come from the client and could be anything.  A value that is not an address is ignored.
    """
    if settings.WXNOTIFY_BEHIND_PROXY:
        appended_by_proxy = request.META.get("HTTP_X_FORWARDED_FOR", "").rsplit(",", 1)[-1].strip()
        if _is_ip_address(appended_by_proxy):
            return appended_by_proxy
    peer = request.META.get("REMOTE_ADDR", "")
    return peer if _is_ip_address(peer) else None


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict | None = None
) -> HttpResponse:
    """The page a locked-out sign-in gets (``AXES_LOCKOUT_CALLABLE``): 429, in the user's language, saying what to
    do next."""
    context = {"cooloff_minutes": settings.WXNOTIFY_LOGIN_COOLOFF_MINUTES, "login_url": request.path}
    return render(request, "security/locked_out.html", context, status=429)
