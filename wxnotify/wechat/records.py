"""Masking what WeChat recorded of a call (``/cgi-bin/openapi/rid/get``) before a person sees it.

WeChat's record of a failed call holds the request as it arrived: the query string with the access_token, and for
some APIs a body with the AppSecret; the recorded answer of a token call holds a token.  Any of them would be live
or recent credentials, so every value of a secret-bearing name is replaced, in query strings and JSON alike, and
whatever the log's secret registry knows is redacted on top.
"""

from __future__ import annotations

import re
from typing import Any

from wxnotify.log import redact

MASK = "***"
SECRET_NAMES = ("access_token", "authorizer_access_token", "component_access_token", "secret", "appsecret")
_NAMES = "|".join(SECRET_NAMES)
# name=value in a query string (up to the next & or the end).
_QUERY_RE = re.compile(rf"(?i)(\b(?:{_NAMES})=)[^&\s\"]*")
# "name": "value" in JSON, the quotes possibly escaped (a JSON body recorded inside a JSON string).
_JSON_RE = re.compile(rf'(?i)((?:\\)?"(?:{_NAMES})(?:\\)?"\s*:\s*(?:\\)?")[^"\\]*')


def mask_text(text: str) -> str:
    """``text`` with the values of every secret-bearing name masked."""
    return redact(_JSON_RE.sub(rf"\g<1>{MASK}", _QUERY_RE.sub(rf"\g<1>{MASK}", text)))


def mask_record(record: dict[str, Any]) -> dict[str, Any]:
    """A rid record with its text fields masked (numbers such as ``invoke_time`` kept as they are)."""
    return {key: mask_text(value) if isinstance(value, str) else value for key, value in record.items()}
