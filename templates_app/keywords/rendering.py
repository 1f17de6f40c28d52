"""Previews: a template's content with the values filled in, and the card a follower's phone shows."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from templates_app.keywords.characters import without_newlines
from templates_app.keywords.parsing import (
    HIDDEN_LEGACY_TYPES,
    PLACEHOLDER_RE,
    Keyword,
    TemplateLike,
    content_of,
    is_legacy_template,
    parse_keywords,
)
from templates_app.keywords.rules import LEGACY_BODY_MAX_LENGTH
from templates_app.keywords.validation import coerce_value

MISSING_VALUE_MARK = "[{name}]"


@dataclass(frozen=True)
class CardLine:
    """One line of a phone-card preview: the label WeChat prints in grey, and the value."""

    label: str
    value: str


@dataclass(frozen=True)
class RenderedCard:
    title: str
    lines: list[CardLine]


def _plain_values(data: Any) -> dict[str, str]:
    """Values as strings from either input shape, without judging them (previews show whatever was typed)."""
    values: dict[str, str] = {}
    if not isinstance(data, Mapping):
        return values
    for name, raw in data.items():
        value, error = coerce_value(raw)
        if error is None:
            values[str(name)] = value
    return values


def render_content(template: TemplateLike | str, data: Any) -> str:
    """The template's content with placeholders filled; a missing value shows as ``[name]`` so gaps are visible."""
    values = _plain_values(data)

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        return values.get(name, MISSING_VALUE_MARK.format(name=name))

    return PLACEHOLDER_RE.sub(fill, content_of(template))


def render_card(template: TemplateLike, data: Any) -> RenderedCard:
    """What a follower's phone shows: the title, then one (label, value) line per content line.

    Legacy ``first``/``remark`` lines are left out and legacy body values are cut to 20 characters on one line,
    as WeChat has done since 2023-05-04, so the preview doesn't promise what won't be shown.
    """
    values = _plain_values(data)
    keywords = parse_keywords(template.content)
    legacy = is_legacy_template(keywords)
    lines = []
    for line in (template.content or "").splitlines():
        matches = list(PLACEHOLDER_RE.finditer(line))
        if not matches:
            if line.strip():
                lines.append(CardLine(label="", value=line.strip()))
            continue
        if legacy and all(Keyword.from_name(match.group(1)).type in HIDDEN_LEGACY_TYPES for match in matches):
            continue
        first = matches[0]
        label = line[: first.start()].strip().rstrip(":：").strip()

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in values:
                return MISSING_VALUE_MARK.format(name=name)
            value = values[name]
            if legacy:
                value = without_newlines(value)[:LEGACY_BODY_MAX_LENGTH]
            return value

        value = PLACEHOLDER_RE.sub(fill, line[first.start() :]).strip()
        lines.append(CardLine(label=label, value=value))
    return RenderedCard(title=template.title or "", lines=lines)
