"""Request validation: every rule names the field and the limit, so the caller can fix it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .errors import FieldViolation, ServiceError, invalid_argument


@dataclass(frozen=True)
class RequestLimits:
    max_texts_per_request: int
    max_text_chars: int


def text_violation(field: str, text: str, limits: RequestLimits) -> FieldViolation | None:
    """The problem with one text, or None when it is fine."""
    if not text or not text.strip():
        return FieldViolation(field, "must contain at least one non-whitespace character")
    if len(text) > limits.max_text_chars:
        return FieldViolation(
            field, f"has {len(text)} characters; the limit is {limits.max_text_chars}"
        )
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
