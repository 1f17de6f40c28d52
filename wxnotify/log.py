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
from collections import OrderedDict

MASK = "***"
MIN_REGISTERED_SECRET_LENGTH = 8
# The registry of values to mask keeps the most recently registered (or re-registered) ones: every AppSecret, callback
# Token and EncodingAESKey is registered again whenever its account is loaded, and an access_token whenever it is
# fetched or read from the shared cache, so live values stay in while expired tokens age out.  A process that serves
# a few hundred accounts holds about four values per account.
MAX_REGISTERED_SECRETS = 1024
# Below this many values each one is looked for in the text; above it, only those whose first characters occur in
# the text (a line costs time in proportion to its length then, not to the registry's size).
_SCAN_EVERY_VALUE_UP_TO = 256

_SECRET_NAMES = r"access_token|secret|appsecret|app_secret|encoding_aes_key|encodingaeskey|aes_key"
# key=value in URLs and form bodies, "key": "value" in JSON, key: value / key=value in reprs.
_PATTERNS = [
    re.compile(rf"(?i)((?:{_SECRET_NAMES})=)[^&\s'\"<>]+"),
    re.compile(rf"(?i)(['\"](?:{_SECRET_NAMES})['\"]\s*:\s*['\"])[^'\"]*"),
    re.compile(rf"(?i)(\b(?:{_SECRET_NAMES})\s*[:=]\s*['\"])[^'\"]*"),
]


class _SecretRegistry:
    """Values to mask, least recently registered first, bounded by ``MAX_REGISTERED_SECRETS``.

    ``redact`` reads an immutable snapshot (values longest first, and by their first characters) that is rebuilt
    only when a value comes in or drops out, so logging takes no lock and does no sorting.
    """

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self._values: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        # (values longest first, {first characters: values}); replaced whole, so a reader never sees half of it.
        self._snapshot: tuple[tuple[str, ...], dict[str, tuple[str, ...]]] = ((), {})

    def add(self, value: str) -> None:
        with self._lock:
            if value in self._values:
                self._values.move_to_end(value)
                return
            self._values[value] = None
            while len(self._values) > self.bound:
                self._values.popitem(last=False)
            self._rebuild()

    def __contains__(self, value: str) -> bool:
        return value in self._values

    def __len__(self) -> int:
        return len(self._values)

    def _rebuild(self) -> None:
        longest_first = tuple(sorted(self._values, key=len, reverse=True))
        by_prefix: dict[str, list[str]] = {}
        for value in longest_first:
            by_prefix.setdefault(value[:MIN_REGISTERED_SECRET_LENGTH], []).append(value)
        self._snapshot = (longest_first, {prefix: tuple(values) for prefix, values in by_prefix.items()})

    def found_in(self, text: str) -> list[str]:
        """The registered values that occur in ``text``, longest first (so one inside another is masked whole)."""
        longest_first, by_prefix = self._snapshot
        if len(longest_first) <= _SCAN_EVERY_VALUE_UP_TO:
            return [value for value in longest_first if value in text]
        width = MIN_REGISTERED_SECRET_LENGTH
        present = {text[start : start + width] for start in range(len(text) - width + 1)} & by_prefix.keys()
        found = [value for prefix in present for value in by_prefix[prefix] if value in text]
        return sorted(found, key=len, reverse=True)


_registry = _SecretRegistry(MAX_REGISTERED_SECRETS)


def register_secret(value: str | None) -> None:
    """Mask this exact value in every later log line (tokens, AppSecrets, AES keys, callback Tokens).

    Values shorter than ``MIN_REGISTERED_SECRET_LENGTH`` are not registered: masking them would garble ordinary
    words.  Registering a value again marks it as recently used, which keeps it among the
    ``MAX_REGISTERED_SECRETS`` the registry holds.
    """
    if value and len(value) >= MIN_REGISTERED_SECRET_LENGTH:
        _registry.add(value)


def redact(text: str) -> str:
    """Return ``text`` with every known or secret-shaped value masked."""
    for pattern in _PATTERNS:
        text = pattern.sub(rf"\g<1>{MASK}", text)
    for secret in _registry.found_in(text):
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
