"""WeChat's value rule for each keyword type of category templates (docs/keywords.md), one check per type.

Each check takes a non-empty value without line breaks, emoji or control characters (``validation`` refuses those
first) and returns readable, translated error messages; an empty list means the value is acceptable.  WeChat
refuses a value outside its type's rule with errcode 47003.
"""

from __future__ import annotations

import re
import unicodedata

from django.utils.translation import gettext as _

from templates_app.keywords.characters import is_ascii_digit, is_ascii_letter, is_cjk, is_symbol

UNKNOWN_TYPE_MAX_LENGTH = 20
NUMBER_MAX_DIGITS = 32
LETTER_MAX_LENGTH = 32
SYMBOL_MAX_LENGTH = 5
CHARACTER_STRING_MAX_LENGTH = 32
# Two copies of WeChat's table disagree (10 or 12 digits); the stricter figure never causes a 47003.
AMOUNT_MAX_DIGITS = 10
# What the amount pattern lets through at most: a currency symbol, the digits, a decimal point and 元.
AMOUNT_MAX_LENGTH = 1 + AMOUNT_MAX_DIGITS + 1 + 1
# WeChat documents no length for time and date.  Ours fits a range of two dates with times and seconds, spaced
# ("2019年10月01日 15:01:00 ~ 2019年10月01日 16:01:00" is 43), and stops a 1 MB "range" before it is parsed.
MOMENT_MAX_LENGTH = 50
PHONE_NUMBER_MAX_LENGTH = 17
CAR_NUMBER_MAX_LENGTH = 8
NAME_MAX_CHINESE = 10
NAME_MAX_LATIN = 20
PHRASE_MAX_LENGTH = 5
THING_MAX_LENGTH = 20
CONST_MAX_LENGTH = 20
# Enumerated keywords of subscription templates: WeChat documents no length, only "a value of the enumeration";
# ours is the thing limit, for templates whose enumeration WeChat did not list.
ENUM_MAX_LENGTH = 20

_DATE = r"\d{4}(?:年\d{1,2}月\d{1,2}日|-\d{1,2}-\d{1,2}|/\d{1,2}/\d{1,2}|\.\d{1,2}\.\d{1,2})"
_CLOCK = r"\d{1,2}:\d{2}(?::\d{2})?"
_DATE_RE = re.compile(rf"^(?P<date>{_DATE})$")
_CLOCK_RE = re.compile(rf"^(?P<clock>{_CLOCK})$")
_DATETIME_RE = re.compile(rf"^(?P<date>{_DATE})\s*(?P<clock>{_CLOCK})$")
_DATE_PARTS_RE = re.compile(r"\d+")
_NUMBER_RE = re.compile(r"^\d+(?:\.\d+)?$")
_LETTER_RE = re.compile(r"^[A-Za-z]+$")
_AMOUNT_RE = re.compile(r"^(?P<currency>\D)?(?P<number>\d+(?:\.\d+)?)(?P<yuan>元)?$")
_RANGE_SEPARATOR_RE = re.compile(r"[~～]")


def too_long(value: str, limit: int) -> list[str]:
    if len(value) > limit:
        return [_("At most %(limit)d characters (this has %(count)d).") % {"limit": limit, "count": len(value)}]
    return []


def check_thing(value: str) -> list[str]:
    return too_long(value, THING_MAX_LENGTH)


def check_number(value: str) -> list[str]:
    if not _NUMBER_RE.match(value):
        return [_("Only digits, with an optional decimal point (e.g. 3 or 12.50).")]
    digits = sum(char.isdigit() for char in value)
    if digits > NUMBER_MAX_DIGITS:
        return [_("At most %(limit)d digits (this has %(count)d).") % {"limit": NUMBER_MAX_DIGITS, "count": digits}]
    return []


def check_letter(value: str) -> list[str]:
    if not _LETTER_RE.match(value):
        return [_("Only letters A-Z and a-z.")]
    return too_long(value, LETTER_MAX_LENGTH)


def check_symbol(value: str) -> list[str]:
    if not all(is_symbol(char) for char in value):
        return [_("Only symbols such as - / . # ( ) — no letters, digits, Chinese or spaces.")]
    return too_long(value, SYMBOL_MAX_LENGTH)


def check_character_string(value: str) -> list[str]:
    if not all(is_ascii_letter(char) or is_ascii_digit(char) or is_symbol(char) for char in value):
        return [_("Only digits, letters and symbols (no Chinese, no spaces), e.g. an order number or a URL.")]
    return too_long(value, CHARACTER_STRING_MAX_LENGTH)


def _valid_date(text: str) -> bool:
    _year, month, day = (int(part) for part in _DATE_PARTS_RE.findall(text))
    return 1 <= month <= 12 and 1 <= day <= 31


def _valid_clock(text: str) -> bool:
    hour, minute, *second = (int(part) for part in text.split(":"))
    return hour <= 23 and minute <= 59 and all(s <= 59 for s in second)


def _moment_kind(text: str) -> str | None:
    """Classify one side of a range as "date", "clock" or "datetime"; None when it is neither or out of range."""
    for kind, pattern in (("datetime", _DATETIME_RE), ("date", _DATE_RE), ("clock", _CLOCK_RE)):
        match = pattern.match(text)
        if match is None:
            continue
        groups = match.groupdict()
        if "date" in groups and not _valid_date(groups["date"]):
            return None
        if "clock" in groups and not _valid_clock(groups["clock"]):
            return None
        return kind
    return None


def _check_moments(value: str, first_kinds: set[str]) -> bool:
    """A moment, or a range ``A~B`` whose later sides may also be a bare time of day (``…15:00~16:00``)."""
    parts = [part.strip() for part in _RANGE_SEPARATOR_RE.split(value)]
    kinds = [_moment_kind(part) for part in parts]
    if kinds[0] not in first_kinds:
        return False
    return all(kind is not None for kind in kinds[1:])


def check_time(value: str) -> list[str]:
    if len(value) > MOMENT_MAX_LENGTH:
        return too_long(value, MOMENT_MAX_LENGTH)
    if not _check_moments(value, {"clock", "datetime"}):
        return [_("A 24-hour time, optionally after a date, e.g. 15:01 or 2019年10月1日 15:01; join a range with ~.")]
    return []


def check_date(value: str) -> list[str]:
    if len(value) > MOMENT_MAX_LENGTH:
        return too_long(value, MOMENT_MAX_LENGTH)
    if not _check_moments(value, {"date", "datetime"}):
        return [
            _("A date, optionally with a 24-hour time, e.g. 2019年10月1日 or 2019-10-01 15:01; join a range with ~.")
        ]
    return []


def check_amount(value: str) -> list[str]:
    match = _AMOUNT_RE.match(value)
    if match is None or (match["currency"] and unicodedata.category(match["currency"]) != "Sc"):
        return [_("An amount: one optional currency symbol, digits with optional decimals, optionally ending with 元.")]
    digits = sum(char.isdigit() for char in match["number"])
    if digits > AMOUNT_MAX_DIGITS:
        return [_("At most %(limit)d digits (this has %(count)d).") % {"limit": AMOUNT_MAX_DIGITS, "count": digits}]
    return []


def check_phone_number(value: str) -> list[str]:
    if not all(is_ascii_digit(char) or is_symbol(char) for char in value):
        return [_("Only digits and symbols such as + - ( ), e.g. +86-0766-66888866.")]
    return too_long(value, PHONE_NUMBER_MAX_LENGTH)


def check_car_number(value: str) -> list[str]:
    middle = value[1:-1] if len(value) > 2 else ""
    ends_ok = all(is_cjk(char) or is_ascii_letter(char) or is_ascii_digit(char) for char in (value[0], value[-1]))
    if not ends_ok or not all(is_ascii_letter(char) or is_ascii_digit(char) for char in middle):
        return [_("A licence plate: letters and digits, the first and last may be Chinese, e.g. 粤A8Z888挂.")]
    return too_long(value, CAR_NUMBER_MAX_LENGTH)


def check_name(value: str) -> list[str]:
    if not all(is_cjk(char) or char.isalpha() or is_symbol(char) or char == " " for char in value):
        return [_("A person's name: Chinese characters, letters or symbols, no digits.")]
    if any(is_cjk(char) for char in value):
        if len(value) > NAME_MAX_CHINESE:
            return [
                _("A name containing Chinese takes at most %(limit)d characters (this has %(count)d).")
                % {"limit": NAME_MAX_CHINESE, "count": len(value)}
            ]
        return []
    return too_long(value, NAME_MAX_LATIN)


def check_phrase(value: str) -> list[str]:
    if not all(is_cjk(char) for char in value):
        return [_("Only Chinese characters, e.g. 配送中.")]
    return too_long(value, PHRASE_MAX_LENGTH)


def check_const(value: str) -> list[str]:
    """``const`` values must be one of the words WeChat approved for this template (status words like 已通过).

    That enumeration is not published through any API, so only the length can be checked here; a value outside it
    is accepted by us and not delivered by WeChat.
    """
    return too_long(value, CONST_MAX_LENGTH)


def check_enum(value: str) -> list[str]:
    """``enum`` / ``enum_string`` values must be one of the values WeChat approved for the keyword; the
    enumeration comes with the template (``validation`` checks it), so only the length is checked here."""
    return too_long(value, ENUM_MAX_LENGTH)


def check_unknown(value: str) -> list[str]:
    """Types WeChat has not documented (e.g. ``short_thing``) get the ``thing`` limit; 47003 will tell otherwise."""
    return too_long(value, UNKNOWN_TYPE_MAX_LENGTH)
