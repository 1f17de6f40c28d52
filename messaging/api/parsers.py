"""A JSON parser for campaign creation, whose bodies may carry 100,000 recipients.

DRF's ``JSONParser`` parses ``request.body``, which Django caps at ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (2.5 MB by
default) for every request; an explicit list of 100,000 openids is about 3.3 MB.  Raising that global cap would
raise it for every form, admin page and callback too, so this parser reads the request stream itself, with a cap
of its own, and is used only where big lists are expected.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from django.utils.translation import gettext as _
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser, get_encoding

from messaging.api.exceptions import RequestTooLarge

BULK_BODY_MAX_BYTES = 16 * 1024 * 1024


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


class BulkJSONParser(BaseParser):
    media_type = "application/json"
    max_bytes = BULK_BODY_MAX_BYTES

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        raw = stream.read(self.max_bytes + 1)
        if len(raw) > self.max_bytes:
            raise RequestTooLarge()
        try:
            return json.loads(raw.decode(get_encoding(parser_context or {})), parse_constant=_refuse_constant)
        except ValueError as exc:
            raise ParseError(_("JSON parse error - %(error)s") % {"error": exc}) from exc
