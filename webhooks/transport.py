"""Posting to a webhook without letting it reach internal services.

Two checks.  When an endpoint is registered its URL must be https (plain http only to a loopback address, and only
with DEBUG on, for local development).  When a delivery is sent the host name is resolved *once*; if any address it
resolves to is not a public one (private, loopback, link-local, shared, reserved, multicast) the delivery is refused
unless that address lies in ``WXNOTIFY_WEBHOOK_ALLOWED_NETWORKS``.  The connection is then made to the address that
was checked, with the URL's host name kept in the ``Host`` header and as TLS SNI (and checked against the
certificate), so a DNS answer that changes between the check and the connect (DNS rebinding) cannot redirect it.
Redirects are not followed and no proxy from the environment is used.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import urllib3
from django.conf import settings
from django.utils.translation import gettext as _

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
LOOPBACK_NAMES = frozenset({"localhost"})
# Bytes of an answer kept for the delivery log.
ANSWER_PEEK_BYTES = 200


class WebhookRefused(Exception):
    """The endpoint may not be called (its address is internal); the message says why, without any secret."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: str


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a webhook endpoint, or None (checked when an endpoint is registered or changed)."""
    parts = urlsplit(url)
    if not parts.hostname:
        return _("Give an absolute URL.")
    if parts.username or parts.password:
        return _("The URL must not carry a user name or password; the signature proves the sender.")
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and settings.DEBUG and _is_loopback_name(parts.hostname):
        return None
    return _("The URL must be https (plain http only to this machine, with DEBUG on).")


def _is_loopback_name(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _plain(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (``::ffff:10.0.0.1``) judged as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_allowed(address: IPAddress) -> bool:
    """Public addresses, and the networks of ``WXNOTIFY_WEBHOOK_ALLOWED_NETWORKS``."""
    address = _plain(address)
    if address.is_global and not address.is_multicast:
        return True
    return any(
        address in ipaddress.ip_network(network, strict=False) for network in settings.WXNOTIFY_WEBHOOK_ALLOWED_NETWORKS
    )


def lookup(host: str, port: int) -> list[str]:
    """The addresses DNS gives for ``host`` (the one look-up a delivery makes)."""
    return [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def resolve(host: str, port: int) -> str:
    """The address to connect to for ``host``; raises :class:`WebhookRefused` when any address it has is internal."""
    try:
        found = lookup(host, port)
    except OSError as error:
        raise WebhookRefused(_("Cannot resolve %(host)s: %(error)s") % {"host": host, "error": error}) from None
    addresses = [ipaddress.ip_address(address.split("%", 1)[0]) for address in found]
    for address in addresses:
        if not address_allowed(address):
            raise WebhookRefused(
                _("%(host)s resolves to %(address)s, which is not a public address; refused.")
                % {"host": host, "address": address}
            )
    return str(_plain(addresses[0]))


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float) -> Answer:
    """POST ``body`` to ``url`` through the address :func:`resolve` checked; network errors propagate."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    address = resolve(host, port)
    host_header = f"[{host}]" if ":" in host else host
    if parts.port:
        host_header = f"{host_header}:{port}"
    pool_timeout = urllib3.Timeout(connect=min(timeout, 5.0), read=timeout)
    if https:
        pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
            address,
            port,
            timeout=pool_timeout,
            retries=False,
            cert_reqs=ssl.CERT_REQUIRED,
            ca_certs=certifi.where(),
            server_hostname=host,
            assert_hostname=host,
        )
    else:
        pool = urllib3.HTTPConnectionPool(address, port, timeout=pool_timeout, retries=False)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    try:
        response = pool.urlopen(
            "POST",
            path,
            body=body,
            headers={**headers, "Host": host_header},
            redirect=False,
            assert_same_host=False,
            preload_content=False,
        )
        try:
            peek = response.read(ANSWER_PEEK_BYTES, decode_content=False)
        finally:
            response.release_conn()
        return Answer(status=response.status, body=peek.decode("utf-8", "replace"))
    finally:
        pool.close()
