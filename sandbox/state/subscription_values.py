"""How WeChat judges a subscription notification's values (docs/wechat-api.md §2.4, the subscription table): the
sandbox's own, deliberately plain reading of each rule's limit and characters, so a value outside it gets the 47003
WeChat would answer.  (The sandbox imports none of wxnotify's apps: the service's validator is tested against this
one, not the other way round.)
"""

from __future__ import annotations

import re
import unicodedata

_CJK_RE = re.compile(r"^[\u3400-\u9fff]+$")
_NUMBER_RE = re.compile(r"^\d+(\.\d+)?$")
_LETTER_RE = re.compile(r"^[A-Za-z]+$")
_AMOUNT_RE = re.compile(r"^(\D)?(\d+(?:\.\d+)?)元?$")
_CAR_RE = re.compile(r"^[\u3400-\u9fffA-Za-z0-9][A-Za-z0-9]*[\u3400-\u9fffA-Za-z0-9]$")
_DATE = r"\d{4}(?:年\d{1,2}月\d{1,2}日|-\d{1,2}-\d{1,2}|/\d{1,2}/\d{1,2})"
_CLOCK = r"\d{1,2}:\d{2}(?::\d{2})?"
_TIME_SIDE_RE = re.compile(rf"^(?:{_DATE}\s*)?{_CLOCK}$")
_DATE_SIDE_RE = re.compile(rf"^{_DATE}(?:\s*{_CLOCK})?$|^{_CLOCK}$")


def _symbolic(char: str) -> bool:
    return unicodedata.category(char)[0] in "PS"


def _range_of(value: str, side: re.Pattern[str]) -> bool:
    parts = [part.strip() for part in re.split(r"[~～]", value)]
    return bool(parts[0]) and all(side.match(part) for part in parts)


def value_is_valid(rule: str, value: str, enum: list[str] | None = None) -> bool:
    """Whether WeChat takes ``value`` for a keyword of ``rule``; unknown rules take up to 20 characters."""
    if not value.strip() or "\n" in value or "\r" in value:
        return False
    length = len(value)
    if rule == "thing":
        return length <= 20
    if rule == "number":
        return _NUMBER_RE.match(value) is not None and sum(c.isdigit() for c in value) <= 32
    if rule == "letter":
        return _LETTER_RE.match(value) is not None and length <= 32
    if rule == "symbol":
        return all(_symbolic(c) for c in value) and length <= 5
    if rule == "character_string":
        return all(c.isascii() and (c.isalnum() or _symbolic(c)) for c in value) and length <= 32
    if rule == "time":
        return length <= 50 and _range_of(value, _TIME_SIDE_RE)
    if rule == "date":
        return length <= 50 and _range_of(value, _DATE_SIDE_RE)
    if rule == "amount":
        match = _AMOUNT_RE.match(value)
        return (
            match is not None
            and (match[1] is None or unicodedata.category(match[1]) == "Sc")
            and (sum(c.isdigit() for c in match[2]) <= 10)
        )
    if rule == "phone_number":
        return all((c.isascii() and c.isdigit()) or _symbolic(c) for c in value) and length <= 17
    if rule == "car_number":
        return _CAR_RE.match(value) is not None and length <= 8
    if rule == "name":
        if any(_CJK_RE.match(c) for c in value):
            return length <= 10
        return all(c.isalpha() or _symbolic(c) or c == " " for c in value) and length <= 20
    if rule == "phrase":
        return _CJK_RE.match(value) is not None and length <= 5
    if rule in ("enum", "enum_string"):
        return value in (enum or [])
    return length <= 20
