"""The bare reference of the receipt burst (``bench/callback_throughput.py --receipt-burst``): the least any callback
endpoint must do for a safe-mode receipt, and so the limit of the machine for that work.

A plain WSGI callable, no framework and no storage: it checks the URL signature and ``msg_signature``, decrypts the
``<Encrypt>`` part with the project's own :mod:`wxnotify.wechat.crypto`, parses both XML layers with ``defusedxml``
(DTDs, entities and external references refused, as the real endpoint does) and answers ``success``; anything that
does not pass is answered 403.  The burst serves it under gunicorn with the same workers and threads as wxnotify.

The account it stands for comes from the environment: ``REFERENCE_CALLBACK_TOKEN``, ``REFERENCE_CALLBACK_AES_KEY``
and ``REFERENCE_CALLBACK_APPID``.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl

import defusedxml.ElementTree as DefusedET

from wxnotify.wechat.crypto import CallbackCrypto, CallbackCryptoError, verify_signature

TOKEN = os.environ["REFERENCE_CALLBACK_TOKEN"]
CRYPTO = CallbackCrypto(TOKEN, os.environ["REFERENCE_CALLBACK_AES_KEY"], os.environ["REFERENCE_CALLBACK_APPID"])
MAX_BODY_BYTES = 64 * 1024


def parse(data: bytes) -> ET.Element:
    return DefusedET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)


def receipt_accepted(query: dict[str, str], body: bytes) -> bool:
    """Whether the request is a correctly signed, decryptable receipt: the work every endpoint must do."""
    timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
    if not verify_signature(TOKEN, query.get("signature"), timestamp, nonce):
        return False
    try:
        encrypt = (parse(body).findtext("Encrypt") or "").strip()
        message = parse(CRYPTO.decrypt_message(query.get("msg_signature"), timestamp, nonce, encrypt))
    except (CallbackCryptoError, DefusedET.ParseError, ValueError):
        return False
    return message.tag == "xml" and bool((message.findtext("MsgID") or "").strip())


def application(environ: dict, start_response: Callable) -> Iterable[bytes]:
    query = dict(parse_qsl(environ.get("QUERY_STRING", "")))
    length = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_BODY_BYTES)
    body = environ["wsgi.input"].read(length)
    status, answer = ("200 OK", b"success") if receipt_accepted(query, body) else ("403 Forbidden", b"")
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(answer)))])
    return [answer]
