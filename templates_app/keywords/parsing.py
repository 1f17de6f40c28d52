"""Keywords out of a template's content: the ``{{NAME.DATA}}`` placeholders, their types and their labels.

Category templates (类目模板, the only kind addable since 2023) use typed names (``thing1``, ``time3``,
``character_string9``): the type is the name with its trailing digits stripped.  Legacy industry templates use
``first`` / ``keywordN`` / ``remark`` (docs/keywords.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\.DATA\s*\}\}")

LEGACY_TYPES = frozenset({"first", "keyword", "remark"})
# Legacy fields WeChat has stopped showing (2023-05-04): never required, never an error.
HIDDEN_LEGACY_TYPES = frozenset({"first", "remark"})


@dataclass(frozen=True)
class Keyword:
    """One ``{{name.DATA}}`` placeholder of a template; ``type`` selects WeChat's value rule.

    ``choices`` are the values WeChat approved for an enumerated keyword of a subscription template
    (``enum_string2``, listed by ``gettemplate`` as ``keywordEnumValueList``); empty when WeChat names none.
    """

    name: str
    type: str
    choices: tuple[str, ...] = ()

    @property
    def is_legacy(self) -> bool:
        return self.type in LEGACY_TYPES

    def as_dict(self) -> dict[str, Any]:
        """The stored shape (``MessageTemplate.keywords``, ``SubscriptionTemplate.keywords``)."""
        if self.choices:
            return {"name": self.name, "type": self.type, "choices": list(self.choices)}
        return {"name": self.name, "type": self.type}

    @classmethod
    def from_name(cls, name: str) -> Keyword:
        return cls(name=name, type=name.rstrip("0123456789") or name)


class TemplateLike(Protocol):
    title: str
    content: str


def parse_keywords(content: str) -> list[Keyword]:
    """Keywords in order of first appearance, each once, tolerant of spaces inside the braces."""
    seen: dict[str, Keyword] = {}
    for name in PLACEHOLDER_RE.findall(content or ""):
        if name not in seen:
            seen[name] = Keyword.from_name(name)
    return list(seen.values())


def is_legacy_template(keywords: Iterable[Keyword]) -> bool:
    """A template using ``first``/``keywordN``/``remark`` is a legacy industry template, typed rules don't apply."""
    return any(keyword.is_legacy for keyword in keywords)


def as_keywords(template_or_keywords: Any) -> list[Keyword]:
    """Accept a template (anything with ``keywords`` or ``content``), Keyword objects or stored ``{"name", "type"}``."""
    source = template_or_keywords
    if isinstance(source, str):
        return parse_keywords(source)
    if hasattr(source, "keywords") or hasattr(source, "content"):
        stored = getattr(source, "keywords", None)
        if not stored:
            return parse_keywords(getattr(source, "content", "") or "")
        source = stored
    keywords = []
    for item in source:
        if isinstance(item, Keyword):
            keywords.append(item)
        elif isinstance(item, Mapping):
            keywords.append(
                Keyword(
                    name=item["name"],
                    type=item.get("type") or Keyword.from_name(item["name"]).type,
                    choices=tuple(str(choice) for choice in item.get("choices") or ()),
                )
            )
        else:
            keywords.append(Keyword.from_name(str(item)))
    return keywords


def content_of(template: TemplateLike | str) -> str:
    return template if isinstance(template, str) else (template.content or "")


def placeholder_labels(content: str) -> dict[str, str]:
    """Keyword name -> the text before its placeholder on its line ("工单名称:{{thing1.DATA}}" -> "工单名称")."""
    labels: dict[str, str] = {}
    for line in (content or "").splitlines():
        position = 0
        for match in PLACEHOLDER_RE.finditer(line):
            label = line[position : match.start()].strip().rstrip(":：").strip()
            labels.setdefault(match.group(1), label)
            position = match.end()
    return labels
