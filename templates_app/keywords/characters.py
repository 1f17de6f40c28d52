"""Character classes the value rules are written in: line breaks, emoji, control characters, CJK, symbols.

Lengths are counted as a reader sees them: one Python ``str`` character (one Unicode code point) is one character,
so a Chinese (CJK) character counts as 1, exactly like a Latin letter; WeChat counts the same way (``thing`` takes
20 Chinese characters or 20 letters).
"""

from __future__ import annotations

import re
import unicodedata

NEWLINE_CHARS = frozenset("\r\n\x0b\x0c\x85\u2028\u2029")
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
_NEWLINE_RE = re.compile("[" + "".join(re.escape(char) for char in sorted(NEWLINE_CHARS)) + "]")
# Category Cc is exactly U+0000-U+001F and U+007F-U+009F.
_CONTROL_RE = re.compile(
    "["
    + "".join(
        re.escape(chr(code))
        for code in range(0x100)
        if unicodedata.category(chr(code)) == "Cc" and chr(code) not in NEWLINE_CHARS
    )
    + "]"
)


# Unicode's Bidi_Control characters: embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069) and the
# invisible direction marks (U+061C, U+200E, U+200F).  They make text display in another order than it is written:
# after a right-to-left override (U+202E) "exe.txt" displays as "txt.exe", and an amount reads backwards.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Characters that take no space: two names that look the same can differ by one of them.  U+200D (zero-width
# joiner) also glues emoji into one picture; between two emoji it is part of them, not hidden text.
ZERO_WIDTH_CHARS = frozenset("\u200b\u200c\u200d\u2060\ufeff")
# A plain class for the common case (one scan, no look-around); only a value holding a joiner pays for the second.
_INVISIBLE_RE = re.compile(
    "[" + "".join(re.escape(char) for char in sorted((BIDI_CONTROLS | ZERO_WIDTH_CHARS) - {"\u200d"})) + "]"
)
_EMOJI_CLASS = "[" + "".join(f"\\U{low:08x}-\\U{high:08x}" for low, high in _EMOJI_RANGES if low != 0x200D) + "]"
_LONE_JOINER_RE = re.compile(f"(?<!{_EMOJI_CLASS})\u200d|\u200d(?!{_EMOJI_CLASS})")


def is_emoji(char: str) -> bool:
    return _EMOJI_RE.match(char) is not None


def is_cjk(char: str) -> bool:
    return unicodedata.name(char, "").startswith("CJK UNIFIED IDEOGRAPH") or "\u3400" <= char <= "\u9fff"


def is_symbol(char: str) -> bool:
    """Punctuation or symbol (Unicode categories P* and S*), excluding emoji."""
    return unicodedata.category(char)[0] in "PS" and not is_emoji(char)


def is_ascii_letter(char: str) -> bool:
    return char.isascii() and char.isalpha()


def is_ascii_digit(char: str) -> bool:
    return "0" <= char <= "9"


def has_newline(value: str) -> bool:
    return _NEWLINE_RE.search(value) is not None


def has_emoji(value: str) -> bool:
    return _EMOJI_RE.search(value) is not None


def has_control(value: str) -> bool:
    return _CONTROL_RE.search(value) is not None


def has_invisible(value: str) -> bool:
    """A bidirectional control or a zero-width character, other than a zero-width joiner between two emoji."""
    if _INVISIBLE_RE.search(value) is not None:
        return True
    return "\u200d" in value and _LONE_JOINER_RE.search(value) is not None


def without_newlines(value: str) -> str:
    return _NEWLINE_RE.sub("", value)
