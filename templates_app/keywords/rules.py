"""Which rule applies to a keyword, how each type is described to people, and the rules served to the console.

One table for both channels: template messages (category templates) and subscription notifications (订阅通知)
share WeChat's value table (docs/wechat-api.md §2.4); ``const`` occurs only in template messages, ``enum`` /
``enum_string`` only in subscription notifications.

Category templates get their type's check (``checks``); legacy templates (first/keywordN/remark) only earn warnings,
because since 2023-05-04 WeChat silently cuts each body field to 20 characters without line breaks and hides
``first`` and ``remark``, and still delivers (docs/keywords.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.utils.functional import Promise
from django.utils.translation import gettext as _
from django.utils.translation import pgettext_lazy

from templates_app.keywords import checks
from templates_app.keywords.parsing import (
    HIDDEN_LEGACY_TYPES,
    Keyword,
    TemplateLike,
    as_keywords,
    content_of,
    is_legacy_template,
    placeholder_labels,
)

LEGACY_BODY_MAX_LENGTH = 20
# Legacy values are free text WeChat cuts to 20 characters; past that, only a warning.  The hard cap is the longest
# value WeChat documents for any template-style message (the one-time subscribe message's ``content``, 200), so a
# value is never refused for a length WeChat would take, while a 1,000,000-character one is.
LEGACY_VALUE_MAX_LENGTH = 200


@dataclass(frozen=True)
class TypeRule:
    """How one keyword type is checked and described; ``help`` is called per use so it follows the active language.

    ``max_length`` is the hard cap in characters every value of the type is held to (see docs/keywords.md);
    ``check`` is the type's own rule (None for legacy fields, which only earn warnings).
    """

    check: Callable[[str], list[str]] | None
    max_length: int
    pattern: str | None
    help: Callable[[], str]


TYPE_RULES: dict[str, TypeRule] = {
    "thing": TypeRule(
        checks.check_thing,
        checks.THING_MAX_LENGTH,
        None,
        lambda: _("Up to 20 characters: Chinese, letters, digits or symbols; meant for names of things and places."),
    ),
    "number": TypeRule(
        checks.check_number,
        checks.NUMBER_MAX_DIGITS + 1,
        r"\d+(\.\d+)?",
        lambda: _("Up to 32 digits, decimals allowed."),
    ),
    "letter": TypeRule(checks.check_letter, checks.LETTER_MAX_LENGTH, r"[A-Za-z]+", lambda: _("Up to 32 letters.")),
    "symbol": TypeRule(checks.check_symbol, checks.SYMBOL_MAX_LENGTH, None, lambda: _("Up to 5 symbols.")),
    "character_string": TypeRule(
        checks.check_character_string,
        checks.CHARACTER_STRING_MAX_LENGTH,
        r"[\x21-\x7e]+",
        lambda: _("Up to 32 digits, letters or symbols, e.g. an order number."),
    ),
    "time": TypeRule(
        checks.check_time,
        checks.MOMENT_MAX_LENGTH,
        None,
        lambda: _("A 24-hour time, optionally after a date (15:01, 2019年10月1日 15:01); a range joined with ~."),
    ),
    "date": TypeRule(
        checks.check_date,
        checks.MOMENT_MAX_LENGTH,
        None,
        lambda: _("A date, optionally with a 24-hour time (2019年10月1日, 2019-10-01 15:01); a range joined with ~."),
    ),
    "amount": TypeRule(
        checks.check_amount,
        checks.AMOUNT_MAX_LENGTH,
        None,
        lambda: _("An optional currency symbol and up to 10 digits, decimals allowed, may end with 元 (¥12.50, 8元)."),
    ),
    "phone_number": TypeRule(
        checks.check_phone_number,
        checks.PHONE_NUMBER_MAX_LENGTH,
        None,
        lambda: _("Up to 17 digits and symbols, e.g. +86-0766-66888866."),
    ),
    "car_number": TypeRule(
        checks.check_car_number,
        checks.CAR_NUMBER_MAX_LENGTH,
        None,
        lambda: _("Up to 8 characters, letters and digits; first and last may be Chinese (粤A8Z888挂)."),
    ),
    "name": TypeRule(
        checks.check_name,
        checks.NAME_MAX_LATIN,
        None,
        lambda: _("Up to 10 Chinese characters, or up to 20 letters and symbols; mixed counts as Chinese."),
    ),
    "phrase": TypeRule(
        checks.check_phrase, checks.PHRASE_MAX_LENGTH, None, lambda: _("Up to 5 Chinese characters, e.g. 配送中.")
    ),
    "const": TypeRule(
        checks.check_const,
        checks.CONST_MAX_LENGTH,
        None,
        lambda: _("Up to 20 characters; must be one of the values WeChat approved for this template."),
    ),
}
_ENUM_RULE = TypeRule(
    checks.check_enum,
    checks.ENUM_MAX_LENGTH,
    None,
    lambda: _("One of the values WeChat approved for this keyword (subscription notifications)."),
)
TYPE_RULES["enum"] = _ENUM_RULE
TYPE_RULES["enum_string"] = _ENUM_RULE
UNKNOWN_RULE = TypeRule(
    checks.check_unknown,
    checks.UNKNOWN_TYPE_MAX_LENGTH,
    None,
    lambda: _("Up to 20 characters, no line breaks (WeChat has not documented this type's rule)."),
)
LEGACY_RULE = TypeRule(
    None,
    LEGACY_VALUE_MAX_LENGTH,
    None,
    lambda: _("Legacy field: WeChat shows at most 20 characters on one line and cuts the rest."),
)
HIDDEN_LEGACY_RULE = TypeRule(
    None,
    LEGACY_VALUE_MAX_LENGTH,
    None,
    lambda: _("Legacy field WeChat no longer shows (since 2023-05-04); optional."),
)

# What each type is called in words (WeChat's own Chinese names, docs/keywords.md), for people who should not
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
    "enum": pgettext_lazy("keyword type", "enumerated value"),
    "enum_string": pgettext_lazy("keyword type", "enumerated value"),
    "first": pgettext_lazy("keyword type", "opening line"),
    "keyword": pgettext_lazy("keyword type", "keyword"),
    "remark": pgettext_lazy("keyword type", "remark"),
}


def type_label(keyword_type: str) -> str:
    """A keyword type in words, in the active language; a type WeChat has not documented shows as itself."""
    label = TYPE_LABELS.get(keyword_type)
    return keyword_type if label is None else str(label)


def rule_for(keyword: Keyword, legacy_template: bool) -> TypeRule:
    if keyword.type in HIDDEN_LEGACY_TYPES:
        return HIDDEN_LEGACY_RULE
    if legacy_template:
        return LEGACY_RULE
    return TYPE_RULES.get(keyword.type, UNKNOWN_RULE)


def keyword_rules(template: TemplateLike | str) -> list[dict[str, Any]]:
    """A JSON-serialisable description of each keyword, for the console to check fields as people type.

    ``type_label`` is the type in words (:func:`type_label`); ``label`` is the text before the placeholder in the
    content. ``max_length`` is the hard character limit of the keyword's type (docs/keywords.md); ``pattern`` is a
    JavaScript regular expression for the whole value where one captures the rule (a hint: the server's check
    decides); ``required`` is False for fields WeChat no longer shows.
    """
    keywords = as_keywords(template)
    legacy = is_legacy_template(keywords)
    labels = placeholder_labels(content_of(template))
    rules = []
    for keyword in keywords:
        rule = rule_for(keyword, legacy)
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
