"""Template keywords: parse them out of a template's content, check values against WeChat's rules, render previews.

Everything here is pure (no database, no network) so the REST API, the staff console, the admin and the send
pipeline all share one definition of "a valid value", and the console can check fields as people type.

* :mod:`~templates_app.keywords.parsing`: ``{{NAME.DATA}}`` placeholders, keyword types, legacy templates.
* :mod:`~templates_app.keywords.characters`: the character classes the rules are written in.
* :mod:`~templates_app.keywords.checks`: WeChat's value rule per keyword type (docs/keywords.md), for template
  messages and subscription notifications alike.
* :mod:`~templates_app.keywords.rules`: which rule applies to a keyword, type names in words, rules for the console.
* :mod:`~templates_app.keywords.validation`: ``validate_template_data``, the check every sender goes through.
* :mod:`~templates_app.keywords.rendering`: filled-in content and the phone-card preview.

The names below are the package's interface; import them from ``templates_app.keywords``.
"""

from templates_app.keywords.checks import (
    AMOUNT_MAX_DIGITS,
    AMOUNT_MAX_LENGTH,
    CAR_NUMBER_MAX_LENGTH,
    CHARACTER_STRING_MAX_LENGTH,
    CONST_MAX_LENGTH,
    ENUM_MAX_LENGTH,
    LETTER_MAX_LENGTH,
    MOMENT_MAX_LENGTH,
    NAME_MAX_CHINESE,
    NAME_MAX_LATIN,
    NUMBER_MAX_DIGITS,
    PHONE_NUMBER_MAX_LENGTH,
    PHRASE_MAX_LENGTH,
    SYMBOL_MAX_LENGTH,
    THING_MAX_LENGTH,
    UNKNOWN_TYPE_MAX_LENGTH,
)
from templates_app.keywords.parsing import (
    HIDDEN_LEGACY_TYPES,
    LEGACY_TYPES,
    PLACEHOLDER_RE,
    Keyword,
    TemplateLike,
    is_legacy_template,
    parse_keywords,
)
from templates_app.keywords.rendering import MISSING_VALUE_MARK, CardLine, RenderedCard, render_card, render_content
from templates_app.keywords.rules import (
    HIDDEN_LEGACY_RULE,
    LEGACY_BODY_MAX_LENGTH,
    LEGACY_RULE,
    LEGACY_VALUE_MAX_LENGTH,
    TYPE_LABELS,
    TYPE_RULES,
    UNKNOWN_RULE,
    TypeRule,
    keyword_rules,
    type_label,
)
from templates_app.keywords.validation import NON_FIELD_ERRORS, ValidationResult, validate_template_data

__all__ = [
    "AMOUNT_MAX_DIGITS",
    "AMOUNT_MAX_LENGTH",
    "CAR_NUMBER_MAX_LENGTH",
    "CHARACTER_STRING_MAX_LENGTH",
    "CONST_MAX_LENGTH",
    "ENUM_MAX_LENGTH",
    "HIDDEN_LEGACY_RULE",
    "HIDDEN_LEGACY_TYPES",
    "LEGACY_BODY_MAX_LENGTH",
    "LEGACY_RULE",
    "LEGACY_TYPES",
    "LEGACY_VALUE_MAX_LENGTH",
    "LETTER_MAX_LENGTH",
    "MISSING_VALUE_MARK",
    "MOMENT_MAX_LENGTH",
    "NAME_MAX_CHINESE",
    "NAME_MAX_LATIN",
    "NON_FIELD_ERRORS",
    "NUMBER_MAX_DIGITS",
    "PHONE_NUMBER_MAX_LENGTH",
    "PHRASE_MAX_LENGTH",
    "PLACEHOLDER_RE",
    "SYMBOL_MAX_LENGTH",
    "THING_MAX_LENGTH",
    "TYPE_LABELS",
    "TYPE_RULES",
    "UNKNOWN_RULE",
    "UNKNOWN_TYPE_MAX_LENGTH",
    "CardLine",
    "Keyword",
    "RenderedCard",
    "TemplateLike",
    "TypeRule",
    "ValidationResult",
    "is_legacy_template",
    "keyword_rules",
    "parse_keywords",
    "render_card",
    "render_content",
    "type_label",
    "validate_template_data",
]
