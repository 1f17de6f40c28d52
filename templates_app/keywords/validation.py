"""Whether a message's data is acceptable for its template: the one definition of "a valid value".

The REST API, the staff console (also as people type), the admin and the send pipeline all ask here, so people see
field errors instead of WeChat's 47003.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.utils.translation import gettext as _

from templates_app.keywords.characters import has_control, has_emoji, has_invisible, has_newline
from templates_app.keywords.checks import too_long
from templates_app.keywords.parsing import HIDDEN_LEGACY_TYPES, Keyword, as_keywords, is_legacy_template
from templates_app.keywords.rules import LEGACY_BODY_MAX_LENGTH, TypeRule, rule_for

NON_FIELD_ERRORS = "__all__"


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
    # One line per error naming the keyword, its type and the type's limit, e.g.
    # "thing2 (thing, at most 20 characters): At most 20 characters (this has 21).": a refusal reason that
    # stands on its own (a message's failure text, a campaign recipient's reason, a log line).
    reasons: list[str] = field(default_factory=list)

    @property
    def is_valid(self) -> bool:
        return not self.errors

    def add_error(self, key: str, message: str, rule: tuple[str, int] | None = None) -> None:
        """Record ``message`` against ``key``; ``rule`` is the keyword's (type, max_length) when it has one."""
        self.errors.setdefault(key, []).append(message)
        if rule is None:
            self.reasons.append(f"{key}: {message}")
        else:
            self.reasons.append(
                _("%(keyword)s (%(type)s, at most %(limit)d characters): %(message)s")
                % {"keyword": key, "type": rule[0], "limit": rule[1], "message": message}
            )

    def add_warning(self, key: str, message: str) -> None:
        self.warnings.setdefault(key, []).append(message)


def coerce_value(raw: Any) -> tuple[str | None, str | None]:
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


def _refused_characters(value: str) -> list[str]:
    """Characters no keyword value may hold, whatever its type: control characters (NUL among them, which
    PostgreSQL cannot store) and invisible formatting, which makes a value read differently from what it is.
    Most types refuse them by their own character rule anyway; free-text types (thing, name, phrase, const,
    undocumented types and legacy fields) have no other defence, and all get the same clear message."""
    if has_control(value):
        return [_("Control characters are not allowed.")]
    if has_invisible(value):
        return [
            _(
                "Invisible characters are not allowed (bidirectional controls such as U+202E, zero-width spaces "
                "or joiners, byte order marks): they make the text read differently from what it is."
            )
        ]
    return []


def _check_category_value(value: str, rule: TypeRule, keyword: Keyword) -> list[str]:
    if has_newline(value):
        return [_("Line breaks are not allowed: WeChat drops them from template messages.")]
    refused = _refused_characters(value)
    if refused:
        return refused
    if has_emoji(value):
        return [_("Emoji are not allowed: WeChat drops them from template messages.")]
    messages = rule.check(value)
    if not messages and keyword.choices and value not in keyword.choices:
        return [_("Must be one of the values WeChat approved: %(choices)s.") % {"choices": ", ".join(keyword.choices)}]
    return messages


def _check_legacy_value(value: str, rule: TypeRule) -> list[str]:
    """Legacy values are free text: line breaks and emoji only earn warnings (WeChat removes them and delivers),
    but the hard cap and the refused characters apply as to every value."""
    return too_long(value, rule.max_length) or _refused_characters(value)


def _legacy_warnings(keyword: Keyword, value: str) -> list[str]:
    if keyword.type in HIDDEN_LEGACY_TYPES:
        return [_("WeChat no longer shows “%(name)s” (since 2023-05-04).") % {"name": keyword.name}]
    warnings = []
    if has_newline(value):
        warnings.append(_("WeChat removes line breaks from this field."))
    if has_emoji(value):
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
    with 47003; for every value, legacy ones included, a length over its type's cap, control characters (NUL
    among them) and invisible bidirectional or zero-width characters (docs/keywords.md). Legacy templates
    (first/keywordN/remark) otherwise only get warnings for what WeChat silently cuts, because those messages are
    still delivered. ``first`` and ``remark`` are never required since WeChat hides them.
    """
    keywords = as_keywords(template_or_keywords)
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
        rule = rule_for(keyword, legacy)
        described = (keyword.type, rule.max_length)
        if keyword.name not in data:
            if keyword.type not in HIDDEN_LEGACY_TYPES:
                result.add_error(keyword.name, _("This keyword is missing."), described)
            continue
        raw = data[keyword.name]
        if isinstance(raw, Mapping) and raw.get("color"):
            result.add_warning(keyword.name, _("WeChat no longer shows custom colours (since 2023-05-04)."))
        value, error = coerce_value(raw)
        if error:
            result.add_error(keyword.name, error, described)
            continue
        result.data[keyword.name] = {"value": value}
        # Blank means nothing to show; a blank value that is too long or holds control characters is judged below.
        if not value.strip() and len(value) <= rule.max_length and not has_control(value):
            if keyword.type in HIDDEN_LEGACY_TYPES:
                continue
            if keyword.type == "const" and not legacy:
                result.add_warning(keyword.name, _("An empty value is shown as blank."))
                continue
            result.add_error(keyword.name, _("This value is empty."), described)
            continue
        messages = _check_legacy_value(value, rule) if legacy else _check_category_value(value, rule, keyword)
        for message in messages:
            result.add_error(keyword.name, message, described)
        if legacy and not messages:
            for warning in _legacy_warnings(keyword, value):
                result.add_warning(keyword.name, warning)
    return result
