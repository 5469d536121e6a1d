"""Request validation: every rule names the field and the limit, so the caller can fix it."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Sequence

from .errors import FieldViolation, ServiceError, invalid_argument

# Characters that show nothing: control (Cc: NUL, ESC...), format (Cf: zero-width space, BOM,
# bidi marks), surrogates and unassigned code points, and separators (Zs/Zl/Zp: spaces). A text
# made only of these is as empty as a blank one, so it is refused the same way.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Cn", "Zs", "Zl", "Zp"})
BLANK_TEXT = (
    "must contain at least one non-whitespace, visible character "
    "(whitespace, control and format characters such as NUL or U+200B do not count)"
)


def has_visible_character(text: str) -> bool:
    """True when some character of `text` shows something; stops at the first one."""
    return any(unicodedata.category(c) not in _INVISIBLE_CATEGORIES for c in text)


@dataclass(frozen=True)
class RequestLimits:
    max_texts_per_request: int
    max_text_chars: int


def text_violation(field: str, text: str, limits: RequestLimits) -> FieldViolation | None:
    """The problem with one text, or None when it is fine."""
    # The length first: the visibility scan of an over-long text would be wasted work.
    if len(text) > limits.max_text_chars:
        return FieldViolation(
            field, f"has {len(text)} characters; the limit is {limits.max_text_chars}"
        )
    if not has_visible_character(text):
        return FieldViolation(field, BLANK_TEXT)
    return None


def check_texts(texts: Sequence[str], limits: RequestLimits) -> None:
    """Raise INVALID_ARGUMENT listing every bad text of a Predict request."""
    if not texts:
        raise invalid_argument([FieldViolation("texts", "must hold at least one text")])
    if len(texts) > limits.max_texts_per_request:
        raise invalid_argument(
            [FieldViolation("texts", f"has {len(texts)} texts; the limit is {limits.max_texts_per_request} per request")]
        )
    violations = [v for i, t in enumerate(texts) if (v := text_violation(f"texts[{i}]", t, limits))]
    if violations:
        raise invalid_argument(violations)


def check_text(text: str, limits: RequestLimits, field: str = "text") -> None:
    violation = text_violation(field, text, limits)
    if violation:
        raise invalid_argument([violation])


def tokens_violation(field: str) -> ServiceError:
    """A text that holds characters but no token the tokenizer keeps."""
    return invalid_argument([FieldViolation(field, "contains no tokens after tokenization")])
