"""Signing deliveries: HMAC-SHA256 over ``<timestamp>.<body>``, sent as ``X-Wxnotify-Signature: t=<unix>,v1=<hex>``.

The timestamp is inside the signed text, so a receiver that also refuses old timestamps (the README's sample allows
five minutes) cannot be fed a captured delivery again later.  ``v1`` names the scheme, so a second one can be added
beside it without breaking receivers.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Wxnotify-Signature"
EVENT_ID_HEADER = "X-Wxnotify-Event-Id"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"
