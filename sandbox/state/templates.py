"""Message templates as the sandbox holds them, and the checks WeChat makes of a send's data against one."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

THING_MAX_CHARS = 20
KEYWORD_RE = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\.DATA\s*\}\}")
TRAILING_DIGITS_RE = re.compile(r"\d+$")
# Legacy templates' first line and remark: WeChat stopped showing them in 2023 (docs/wechat-api.md) and takes a send
# without them, so an empty one is no 47003.
RETIRED_KEYWORDS = frozenset({"first", "remark"})


def keyword_type(keyword: str) -> str:
    """``character_string9`` → ``character_string``: the value type WeChat validates a keyword against."""
    return TRAILING_DIGITS_RE.sub("", keyword)


@dataclass(frozen=True)
class Template:
    template_id: str
    title: str
    content: str
    primary_industry: str = "IT科技"
    deputy_industry: str = "互联网|电子商务"
    example: str = ""

    @property
    def keywords(self) -> list[str]:
        return KEYWORD_RE.findall(self.content)

    def as_api(self) -> dict[str, str]:
        return asdict(self)

    def data_problem(self, data: dict[str, Any]) -> str | None:
        """The 47003 detail WeChat gives for ``data`` (an empty keyword, a ``thing`` too long), or None when valid."""
        for keyword in self.keywords:
            if keyword in RETIRED_KEYWORDS:
                continue
            item = data.get(keyword)
            value = item.get("value") if isinstance(item, dict) else None
            text = "" if value is None else str(value)
            if not text.strip():
                return f"argument invalid! data.{keyword}.value is empty"
            if keyword_type(keyword) == "thing" and len(text) > THING_MAX_CHARS:
                return f"argument invalid! data.{keyword}.value invalid"
        return None
