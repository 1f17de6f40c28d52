"""Template keywords: parse them out of a template's content, check values against WeChat's rules, render previews.

Everything here is pure (no database, no network) so the REST API, the staff console, the admin and the send
pipeline all share one definition of "a valid value", and the console can check fields as people type.

WeChat's rules (docs/wechat-api.md §2.2-2.4):

* Content holds ``{{NAME.DATA}}`` placeholders; the ``data`` key is ``NAME``. Category templates (类目模板, the only
  kind addable since 2023) use typed names (``thing1``, ``time3``, ``character_string9``): the type is the name with
  its trailing digits stripped. WeChat checks those values per type and refuses a message with errcode 47003.
* Legacy industry templates use ``first`` / ``keywordN`` / ``remark``. Since 2023-05-04 WeChat no longer shows
  ``first`` and ``remark`` and cuts every body field to 20 characters without line breaks, silently. Such values still
  deliver, so they only earn warnings.

Lengths are counted as a reader sees them: one Python ``str`` character (one Unicode code point) is one character,
so a Chinese (CJK) character counts as 1, exactly like a Latin letter; WeChat counts the same way (``thing`` takes
20 Chinese characters or 20 letters).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from django.utils.functional import Promise
from django.utils.translation import gettext as _
from django.utils.translation import pgettext_lazy

PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\.DATA\s*\}\}")
NON_FIELD_ERRORS = "__all__"

LEGACY_TYPES = frozenset({"first", "keyword", "remark"})
# Legacy fields WeChat has stopped showing (2023-05-04): never required, never an error.
HIDDEN_LEGACY_TYPES = frozenset({"first", "remark"})
LEGACY_BODY_MAX_LENGTH = 20
UNKNOWN_TYPE_MAX_LENGTH = 20
MISSING_VALUE_MARK = "[{name}]"

_NEWLINE_CHARS = frozenset("\r\n\x0b\x0c\x85\u2028\u2029")
# Code point ranges WeChat treats as emoji (and drops since 2023-05-04); U+FE0F / U+200D glue emoji sequences.
_EMOJI_RANGES = (
    (0x1F000, 0x1FAFF),
    (0x2600, 0x27BF),
    (0x2B05, 0x2B07),
    (0x2B1B, 0x2B1C),
    (0x2B50, 0x2B55),
    (0x231A, 0x231B),
    (0x23E9, 0x23FA),
    (0x3030, 0x3030),
    (0x303D, 0x303D),
    (0x3297, 0x3299),
    (0xFE0F, 0xFE0F),
    (0x200D, 0x200D),
    (0xE0020, 0xE007F),
)
# The same sets as character classes: one regex scan per value instead of Python loops per character, which cost
# about a fifth of a millisecond on every message sent.
_EMOJI_RE = re.compile("[" + "".join(f"\\U{low:08x}-\\U{high:08x}" for low, high in _EMOJI_RANGES) + "]")
_NEWLINE_RE = re.compile("[" + "".join(re.escape(char) for char in sorted(_NEWLINE_CHARS)) + "]")
# Category Cc is exactly U+0000-U+001F and U+007F-U+009F.
_CONTROL_RE = re.compile(
    "["
    + "".join(
        re.escape(chr(code))
        for code in range(0x100)
        if unicodedata.category(chr(code)) == "Cc" and chr(code) not in _NEWLINE_CHARS
    )
    + "]"
)

_DATE = r"\d{4}(?:年\d{1,2}月\d{1,2}日|-\d{1,2}-\d{1,2}|/\d{1,2}/\d{1,2}|\.\d{1,2}\.\d{1,2})"
_CLOCK = r"\d{1,2}:\d{2}(?::\d{2})?"
_DATE_RE = re.compile(rf"^(?P<date>{_DATE})$")
_CLOCK_RE = re.compile(rf"^(?P<clock>{_CLOCK})$")
_DATETIME_RE = re.compile(rf"^(?P<date>{_DATE})\s*(?P<clock>{_CLOCK})$")
_DATE_PARTS_RE = re.compile(r"\d+")
_NUMBER_RE = re.compile(r"^\d+(?:\.\d+)?$")
_LETTER_RE = re.compile(r"^[A-Za-z]+$")
_AMOUNT_RE = re.compile(r"^(?P<currency>\D)?(?P<number>\d+(?:\.\d+)?)(?P<yuan>元)?$")

NUMBER_MAX_DIGITS = 32
LETTER_MAX_LENGTH = 32
SYMBOL_MAX_LENGTH = 5
CHARACTER_STRING_MAX_LENGTH = 32
# Two copies of WeChat's table disagree (10 or 12 digits); the stricter figure never causes a 47003.
AMOUNT_MAX_DIGITS = 10
PHONE_NUMBER_MAX_LENGTH = 17
CAR_NUMBER_MAX_LENGTH = 8
NAME_MAX_CHINESE = 10
NAME_MAX_LATIN = 20
PHRASE_MAX_LENGTH = 5
THING_MAX_LENGTH = 20
CONST_MAX_LENGTH = 20


@dataclass(frozen=True)
class Keyword:
    """One ``{{name.DATA}}`` placeholder of a template; ``type`` selects WeChat's value rule."""

    name: str
    type: str

    @property
    def is_legacy(self) -> bool:
        return self.type in LEGACY_TYPES

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type}

    @classmethod
    def from_name(cls, name: str) -> Keyword:
        return cls(name=name, type=name.rstrip("0123456789") or name)


@dataclass
class ValidationResult:
    """Outcome of :func:`validate_template_data`.

    ``errors`` and ``warnings`` map a keyword name (or ``NON_FIELD_ERRORS``) to readable, translated messages.
    ``data`` is the payload in WeChat's shape (``{"thing1": {"value": "..."}}``) holding only the template's
    keywords; it is only meant to be sent when ``is_valid``.
    """

    errors: dict[str, list[str]] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)
    data: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def is_valid(self) -> bool:
        return not self.errors

    def add_error(self, key: str, message: str) -> None:
        self.errors.setdefault(key, []).append(message)

    def add_warning(self, key: str, message: str) -> None:
        self.warnings.setdefault(key, []).append(message)


@dataclass(frozen=True)
class CardLine:
    """One line of a phone-card preview: the label WeChat prints in grey, and the value."""

    label: str
    value: str


@dataclass(frozen=True)
class RenderedCard:
    title: str
    lines: list[CardLine]


class TemplateLike(Protocol):
    title: str
    content: str


# --- Parsing ------------------------------------------------------------------------------------------------------


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


def _as_keywords(template_or_keywords: Any) -> list[Keyword]:
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
            keywords.append(Keyword(name=item["name"], type=item.get("type") or Keyword.from_name(item["name"]).type))
        else:
            keywords.append(Keyword.from_name(str(item)))
    return keywords


# --- Character classes --------------------------------------------------------------------------------------------


def _is_emoji(char: str) -> bool:
    return _EMOJI_RE.match(char) is not None


def _is_cjk(char: str) -> bool:
    return unicodedata.name(char, "").startswith("CJK UNIFIED IDEOGRAPH") or "\u3400" <= char <= "\u9fff"


def _is_symbol(char: str) -> bool:
    """Punctuation or symbol (Unicode categories P* and S*), excluding emoji."""
    return unicodedata.category(char)[0] in "PS" and not _is_emoji(char)


def _is_ascii_letter(char: str) -> bool:
    return char.isascii() and char.isalpha()


def _is_ascii_digit(char: str) -> bool:
    return "0" <= char <= "9"


def _has_newline(value: str) -> bool:
    return _NEWLINE_RE.search(value) is not None


def _has_emoji(value: str) -> bool:
    return _EMOJI_RE.search(value) is not None


def _has_control(value: str) -> bool:
    return _CONTROL_RE.search(value) is not None


# --- Per-type rules -----------------------------------------------------------------------------------------------
# Each rule returns a list of error messages for a non-empty value without newlines, emoji or control characters.


def _too_long(value: str, limit: int) -> list[str]:
    if len(value) > limit:
        return [_("At most %(limit)d characters (this has %(count)d).") % {"limit": limit, "count": len(value)}]
    return []


def _check_thing(value: str) -> list[str]:
    return _too_long(value, THING_MAX_LENGTH)


def _check_number(value: str) -> list[str]:
    if not _NUMBER_RE.match(value):
        return [_("Only digits, with an optional decimal point (e.g. 3 or 12.50).")]
    digits = sum(char.isdigit() for char in value)
    if digits > NUMBER_MAX_DIGITS:
        return [_("At most %(limit)d digits (this has %(count)d).") % {"limit": NUMBER_MAX_DIGITS, "count": digits}]
    return []


def _check_letter(value: str) -> list[str]:
    if not _LETTER_RE.match(value):
        return [_("Only letters A-Z and a-z.")]
    return _too_long(value, LETTER_MAX_LENGTH)


def _check_symbol(value: str) -> list[str]:
    if not all(_is_symbol(char) for char in value):
        return [_("Only symbols such as - / . # ( ) — no letters, digits, Chinese or spaces.")]
    return _too_long(value, SYMBOL_MAX_LENGTH)


def _check_character_string(value: str) -> list[str]:
    if not all(_is_ascii_letter(char) or _is_ascii_digit(char) or _is_symbol(char) for char in value):
        return [_("Only digits, letters and symbols (no Chinese, no spaces), e.g. an order number or a URL.")]
    return _too_long(value, CHARACTER_STRING_MAX_LENGTH)


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
    parts = [part.strip() for part in re.split(r"[~～]", value)]
    kinds = [_moment_kind(part) for part in parts]
    if kinds[0] not in first_kinds:
        return False
    return all(kind is not None for kind in kinds[1:])


def _check_time(value: str) -> list[str]:
    if not _check_moments(value, {"clock", "datetime"}):
        return [_("A 24-hour time, optionally after a date, e.g. 15:01 or 2019年10月1日 15:01; join a range with ~.")]
    return []


def _check_date(value: str) -> list[str]:
    if not _check_moments(value, {"date", "datetime"}):
        return [
            _("A date, optionally with a 24-hour time, e.g. 2019年10月1日 or 2019-10-01 15:01; join a range with ~.")
        ]
    return []


def _check_amount(value: str) -> list[str]:
    match = _AMOUNT_RE.match(value)
    if match is None or (match["currency"] and unicodedata.category(match["currency"]) != "Sc"):
        return [_("An amount: one optional currency symbol, digits with optional decimals, optionally ending with 元.")]
    digits = sum(char.isdigit() for char in match["number"])
    if digits > AMOUNT_MAX_DIGITS:
        return [_("At most %(limit)d digits (this has %(count)d).") % {"limit": AMOUNT_MAX_DIGITS, "count": digits}]
    return []


def _check_phone_number(value: str) -> list[str]:
    if not all(_is_ascii_digit(char) or _is_symbol(char) for char in value):
        return [_("Only digits and symbols such as + - ( ), e.g. +86-0766-66888866.")]
    return _too_long(value, PHONE_NUMBER_MAX_LENGTH)


def _check_car_number(value: str) -> list[str]:
    middle = value[1:-1] if len(value) > 2 else ""
    ends_ok = all(_is_cjk(char) or _is_ascii_letter(char) or _is_ascii_digit(char) for char in (value[0], value[-1]))
    if not ends_ok or not all(_is_ascii_letter(char) or _is_ascii_digit(char) for char in middle):
        return [_("A licence plate: letters and digits, the first and last may be Chinese, e.g. 粤A8Z888挂.")]
    return _too_long(value, CAR_NUMBER_MAX_LENGTH)


def _check_name(value: str) -> list[str]:
    if not all(_is_cjk(char) or char.isalpha() or _is_symbol(char) or char == " " for char in value):
        return [_("A person's name: Chinese characters, letters or symbols, no digits.")]
    if any(_is_cjk(char) for char in value):
        if len(value) > NAME_MAX_CHINESE:
            return [
                _("A name containing Chinese takes at most %(limit)d characters (this has %(count)d).")
                % {"limit": NAME_MAX_CHINESE, "count": len(value)}
            ]
        return []
    return _too_long(value, NAME_MAX_LATIN)


def _check_phrase(value: str) -> list[str]:
    if not all(_is_cjk(char) for char in value):
        return [_("Only Chinese characters, e.g. 配送中.")]
    return _too_long(value, PHRASE_MAX_LENGTH)


def _check_const(value: str) -> list[str]:
    """``const`` values must be one of the words WeChat approved for this template (status words like 已通过).

    That enumeration is not published through any API, so only the length can be checked here; a value outside it
    is accepted by us and not delivered by WeChat.
    """
    return _too_long(value, CONST_MAX_LENGTH)


def _check_unknown(value: str) -> list[str]:
    """Types WeChat has not documented (e.g. ``short_thing``) get the ``thing`` limit; 47003 will tell otherwise."""
    return _too_long(value, UNKNOWN_TYPE_MAX_LENGTH)


@dataclass(frozen=True)
class TypeRule:
    """How one keyword type is checked and described; ``help`` is called per use so it follows the active language."""

    check: Callable[[str], list[str]] | None
    max_length: int | None
    pattern: str | None
    help: Callable[[], str]


TYPE_RULES: dict[str, TypeRule] = {
    "thing": TypeRule(
        _check_thing,
        THING_MAX_LENGTH,
        None,
        lambda: _("Up to 20 characters: Chinese, letters, digits or symbols; meant for names of things and places."),
    ),
    "number": TypeRule(
        _check_number,
        NUMBER_MAX_DIGITS + 1,
        r"\d+(\.\d+)?",
        lambda: _("Up to 32 digits, decimals allowed."),
    ),
    "letter": TypeRule(_check_letter, LETTER_MAX_LENGTH, r"[A-Za-z]+", lambda: _("Up to 32 letters.")),
    "symbol": TypeRule(_check_symbol, SYMBOL_MAX_LENGTH, None, lambda: _("Up to 5 symbols.")),
    "character_string": TypeRule(
        _check_character_string,
        CHARACTER_STRING_MAX_LENGTH,
        r"[\x21-\x7e]+",
        lambda: _("Up to 32 digits, letters or symbols, e.g. an order number."),
    ),
    "time": TypeRule(
        _check_time,
        None,
        None,
        lambda: _("A 24-hour time, optionally after a date (15:01, 2019年10月1日 15:01); a range joined with ~."),
    ),
    "date": TypeRule(
        _check_date,
        None,
        None,
        lambda: _("A date, optionally with a 24-hour time (2019年10月1日, 2019-10-01 15:01); a range joined with ~."),
    ),
    "amount": TypeRule(
        _check_amount,
        None,
        None,
        lambda: _("An optional currency symbol and up to 10 digits, decimals allowed, may end with 元 (¥12.50, 8元)."),
    ),
    "phone_number": TypeRule(
        _check_phone_number,
        PHONE_NUMBER_MAX_LENGTH,
        None,
        lambda: _("Up to 17 digits and symbols, e.g. +86-0766-66888866."),
    ),
    "car_number": TypeRule(
        _check_car_number,
        CAR_NUMBER_MAX_LENGTH,
        None,
        lambda: _("Up to 8 characters, letters and digits; first and last may be Chinese (粤A8Z888挂)."),
    ),
    "name": TypeRule(
        _check_name,
        NAME_MAX_LATIN,
        None,
        lambda: _("Up to 10 Chinese characters, or up to 20 letters and symbols; mixed counts as Chinese."),
    ),
    "phrase": TypeRule(_check_phrase, PHRASE_MAX_LENGTH, None, lambda: _("Up to 5 Chinese characters, e.g. 配送中.")),
    "const": TypeRule(
        _check_const,
        CONST_MAX_LENGTH,
        None,
        lambda: _("Up to 20 characters; must be one of the values WeChat approved for this template."),
    ),
}
UNKNOWN_RULE = TypeRule(
    _check_unknown,
    UNKNOWN_TYPE_MAX_LENGTH,
    None,
    lambda: _("Up to 20 characters, no line breaks (WeChat has not documented this type's rule)."),
)
LEGACY_RULE = TypeRule(
    None,
    None,
    None,
    lambda: _("Legacy field: WeChat shows at most 20 characters on one line and cuts the rest."),
)
HIDDEN_LEGACY_RULE = TypeRule(
    None,
    None,
    None,
    lambda: _("Legacy field WeChat no longer shows (since 2023-05-04); optional."),
)

# What each type is called in words (WeChat's own Chinese names, docs/wechat-api.md §2.4), for people who should not
# need to know what ``character_string`` means; the raw type stays in the keyword name and in the API's ``type``.
# The context keeps other apps' catalogues, which translate "date", "time" or "name" their own way, out of these.
TYPE_LABELS: dict[str, Promise] = {
    "thing": pgettext_lazy("keyword type", "thing"),
    "number": pgettext_lazy("keyword type", "number"),
    "letter": pgettext_lazy("keyword type", "letters"),
    "symbol": pgettext_lazy("keyword type", "symbols"),
    "character_string": pgettext_lazy("keyword type", "character string"),
    "time": pgettext_lazy("keyword type", "time"),
    "date": pgettext_lazy("keyword type", "date"),
    "amount": pgettext_lazy("keyword type", "amount"),
    "phone_number": pgettext_lazy("keyword type", "phone number"),
    "car_number": pgettext_lazy("keyword type", "licence plate"),
    "name": pgettext_lazy("keyword type", "person's name"),
    "phrase": pgettext_lazy("keyword type", "Chinese characters"),
    "const": pgettext_lazy("keyword type", "constant"),
    "first": pgettext_lazy("keyword type", "opening line"),
    "keyword": pgettext_lazy("keyword type", "keyword"),
    "remark": pgettext_lazy("keyword type", "remark"),
}


def type_label(keyword_type: str) -> str:
    """A keyword type in words, in the active language; a type WeChat has not documented shows as itself."""
    label = TYPE_LABELS.get(keyword_type)
    return keyword_type if label is None else str(label)


def _rule_for(keyword: Keyword, legacy_template: bool) -> TypeRule:
    if keyword.type in HIDDEN_LEGACY_TYPES:
        return HIDDEN_LEGACY_RULE
    if legacy_template:
        return LEGACY_RULE
    return TYPE_RULES.get(keyword.type, UNKNOWN_RULE)


# --- Validation ---------------------------------------------------------------------------------------------------


def _coerce_value(raw: Any) -> tuple[str | None, str | None]:
    """Return (value, error). Strings pass, numbers become strings, anything else is refused."""
    if isinstance(raw, Mapping):
        if "value" not in raw:
            return None, _('Give the value as a string, or as {"value": "..."}.')
        raw = raw["value"]
    if isinstance(raw, str):
        return raw, None
    if isinstance(raw, int | float | Decimal) and not isinstance(raw, bool):
        return str(raw), None
    return None, _("The value must be a string.")


def _check_category_value(value: str, rule: TypeRule) -> list[str]:
    if _has_newline(value):
        return [_("Line breaks are not allowed: WeChat drops them from template messages.")]
    if _has_emoji(value):
        return [_("Emoji are not allowed: WeChat drops them from template messages.")]
    if _has_control(value):
        return [_("Control characters are not allowed.")]
    return rule.check(value)


def _legacy_warnings(keyword: Keyword, value: str) -> list[str]:
    if keyword.type in HIDDEN_LEGACY_TYPES:
        return [_("WeChat no longer shows “%(name)s” (since 2023-05-04).") % {"name": keyword.name}]
    warnings = []
    if _has_newline(value):
        warnings.append(_("WeChat removes line breaks from this field."))
    if _has_emoji(value):
        warnings.append(_("WeChat removes emoji from this field."))
    if len(value) > LEGACY_BODY_MAX_LENGTH:
        warnings.append(
            _("WeChat shows only the first %(limit)d characters of this field (this has %(count)d).")
            % {"limit": LEGACY_BODY_MAX_LENGTH, "count": len(value)}
        )
    return warnings


def validate_template_data(template_or_keywords: Any, data: Any) -> ValidationResult:
    """Check ``data`` for a template before it goes to WeChat, so people see field errors instead of a 47003.

    ``template_or_keywords`` is a ``MessageTemplate``, its content, or a list of :class:`Keyword` / stored
    ``{"name", "type"}`` dicts. ``data`` maps keyword names to a string (numbers are turned into strings) or to
    ``{"value": ...}`` (WeChat's shape; a ``color`` key is ignored with a warning, WeChat no longer shows colours).

    Errors: missing, unknown and empty values and the per-type rules of category templates, which WeChat enforces
    with 47003. Legacy templates (first/keywordN/remark) only get warnings for what WeChat silently cuts, because
    those messages are still delivered. ``first`` and ``remark`` are never required since WeChat hides them.
    """
    keywords = _as_keywords(template_or_keywords)
    legacy = is_legacy_template(keywords)
    result = ValidationResult()
    if not isinstance(data, Mapping):
        result.add_error(NON_FIELD_ERRORS, _("The data must be an object mapping each keyword to its value."))
        return result

    known = {keyword.name for keyword in keywords}
    for name in data:
        if name not in known:
            result.add_error(str(name), _("“%(name)s” is not a keyword of this template.") % {"name": name})

    for keyword in keywords:
        if keyword.name not in data:
            if keyword.type not in HIDDEN_LEGACY_TYPES:
                result.add_error(keyword.name, _("This keyword is missing."))
            continue
        raw = data[keyword.name]
        if isinstance(raw, Mapping) and raw.get("color"):
            result.add_warning(keyword.name, _("WeChat no longer shows custom colours (since 2023-05-04)."))
        value, error = _coerce_value(raw)
        if error:
            result.add_error(keyword.name, error)
            continue
        result.data[keyword.name] = {"value": value}
        rule = _rule_for(keyword, legacy)
        if not value.strip():
            if keyword.type in HIDDEN_LEGACY_TYPES:
                continue
            if keyword.type == "const" and not legacy:
                result.add_warning(keyword.name, _("An empty value is shown as blank."))
                continue
            result.add_error(keyword.name, _("This value is empty."))
            continue
        if legacy:
            for warning in _legacy_warnings(keyword, value):
                result.add_warning(keyword.name, warning)
            continue
        for message in _check_category_value(value, rule):
            result.add_error(keyword.name, message)
    return result


# --- Rules for the console ----------------------------------------------------------------------------------------


def _labels(content: str) -> dict[str, str]:
    """Keyword name -> the text before its placeholder on its line ("工单名称:{{thing1.DATA}}" -> "工单名称")."""
    labels: dict[str, str] = {}
    for line in (content or "").splitlines():
        position = 0
        for match in PLACEHOLDER_RE.finditer(line):
            label = line[position : match.start()].strip().rstrip(":：").strip()
            labels.setdefault(match.group(1), label)
            position = match.end()
    return labels


def _content_of(template: TemplateLike | str) -> str:
    return template if isinstance(template, str) else (template.content or "")


def keyword_rules(template: TemplateLike | str) -> list[dict[str, Any]]:
    """A JSON-serialisable description of each keyword, for the console to check fields as people type.

    ``type_label`` is the type in words (:func:`type_label`); ``label`` is the text before the placeholder in the
    content. ``max_length`` is the hard character limit where there is one (None otherwise); ``pattern`` is a
    JavaScript regular expression for the whole value where one captures the rule (a hint: the server's check
    decides); ``required`` is False for fields WeChat no longer shows.
    """
    content = _content_of(template)
    keywords = _as_keywords(template)
    legacy = is_legacy_template(keywords)
    labels = _labels(content)
    rules = []
    for keyword in keywords:
        rule = _rule_for(keyword, legacy)
        rules.append(
            {
                "name": keyword.name,
                "type": keyword.type,
                "type_label": type_label(keyword.type),
                "label": labels.get(keyword.name) or keyword.name,
                "max_length": rule.max_length,
                "pattern": rule.pattern,
                "help": str(rule.help()),
                "required": keyword.type not in HIDDEN_LEGACY_TYPES,
                "legacy": legacy,
            }
        )
    return rules


# --- Rendering ----------------------------------------------------------------------------------------------------


def _plain_values(data: Any) -> dict[str, str]:
    """Values as strings from either input shape, without judging them (previews show whatever was typed)."""
    values: dict[str, str] = {}
    if not isinstance(data, Mapping):
        return values
    for name, raw in data.items():
        value, error = _coerce_value(raw)
        if error is None:
            values[str(name)] = value
    return values


def render_content(template: TemplateLike | str, data: Any) -> str:
    """The template's content with placeholders filled; a missing value shows as ``[name]`` so gaps are visible."""
    values = _plain_values(data)

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        return values.get(name, MISSING_VALUE_MARK.format(name=name))

    return PLACEHOLDER_RE.sub(fill, _content_of(template))


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
                value = "".join(char for char in value if char not in _NEWLINE_CHARS)[:LEGACY_BODY_MAX_LENGTH]
            return value

        value = PLACEHOLDER_RE.sub(fill, line[first.start() :]).strip()
        lines.append(CardLine(label=label, value=value))
    return RenderedCard(title=template.title or "", lines=lines)
