"""Keep secrets out of every log line.

WeChat puts the access_token in the query string of every API URL, so any library that logs a URL
(urllib3, requests, django-q2 task arguments, tracebacks) can leak it.  The filter below rewrites each
record before any handler formats it: known secret values registered at run time are masked wherever
they appear, and secret-looking parameters (``access_token=…``, ``"secret": "…"``) are masked by shape.
"""

from __future__ import annotations

import logging
import re
import threading

MASK = "***"
MIN_REGISTERED_SECRET_LENGTH = 8

_SECRET_NAMES = r"access_token|secret|appsecret|app_secret|encoding_aes_key|encodingaeskey|aes_key"
# key=value in URLs and form bodies, "key": "value" in JSON, key: value / key=value in reprs.
_PATTERNS = [
    re.compile(rf"(?i)((?:{_SECRET_NAMES})=)[^&\s'\"<>]+"),
    re.compile(rf"(?i)(['\"](?:{_SECRET_NAMES})['\"]\s*:\s*['\"])[^'\"]*"),
    re.compile(rf"(?i)(\b(?:{_SECRET_NAMES})\s*[:=]\s*['\"])[^'\"]*"),
]

_registered: set[str] = set()
_registered_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Mask this exact value in every later log line (tokens, AppSecrets, AES keys)."""
    if value and len(value) >= MIN_REGISTERED_SECRET_LENGTH:
        with _registered_lock:
            _registered.add(value)


def redact(text: str) -> str:
    """Return ``text`` with every known or secret-shaped value masked."""
    for pattern in _PATTERNS:
        text = pattern.sub(rf"\g<1>{MASK}", text)
    if _registered:
        with _registered_lock:
            secrets = sorted(_registered, key=len, reverse=True)
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, MASK)
    return text


class RedactSecretsFilter(logging.Filter):
    """A handler filter that formats the message, masks secrets in it and in any traceback."""

    _traceback_formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record must still be logged, never raise from logging
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._traceback_formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
