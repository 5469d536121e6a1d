"""Which tokens of a long text a served model reads: the token limit and the truncation strategy.

A recurrent network reads any length; the limit bounds what one text costs (the recurrence is one
step per token) and so what one request can cost. It is a serving setting, not a training one:
a checkpoint's `max_tokens` is what it was trained on, the server's is what it reads.
Torch-free, so the server's configuration can name the strategies without importing torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["TRUNCATIONS", "HEAD_TAIL_HEAD_SHARE", "DEFAULT_MAX_TOKENS", "DEFAULT_TRUNCATION", "TokenLimit"]

# "head" keeps the first max_tokens tokens. "head_tail" keeps the first and the last ones, where
# reviews open and give their verdict; it drops the middle.
TRUNCATIONS = ("head", "head_tail")
# head_tail's share of the limit kept from the start; the rest comes from the end. A quarter, a
# half and none measured alike (bench/long_texts.py): a network that reads the last state keeps
# little of the start; a quarter still holds an opening sentence.
HEAD_TAIL_HEAD_SHARE = 0.25
# The served defaults, chosen by bench/long_texts.py (docs/models.md#long-texts): on long reviews
# head_tail at 128 tokens was as accurate as reading them whole, where head lost reviews that end
# with their verdict; each doubling of the limit doubled the cost of a text and gained nothing.
DEFAULT_MAX_TOKENS = 128
DEFAULT_TRUNCATION = "head_tail"


@dataclass(frozen=True)
class TokenLimit:
    """At most `max_tokens` tokens of one text are read; `truncation` says which ones."""

    max_tokens: int
    truncation: str = "head"
    head_share: float = HEAD_TAIL_HEAD_SHARE  # head_tail only; a parameter so the bench can vary it

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.truncation not in TRUNCATIONS:
            raise ValueError(f"invalid truncation {self.truncation!r}; options are {list(TRUNCATIONS)}")
        if not 0.0 <= self.head_share <= 1.0:
            raise ValueError(f"head_share must be in [0, 1], got {self.head_share}")

    @property
    def head_tokens(self) -> int:
        """Tokens a truncated text keeps from its start; the other max_tokens - head_tokens come
        from its end."""
        if self.truncation == "head":
            return self.max_tokens
        return round(self.max_tokens * self.head_share)

    def keep(self, tokens: Sequence[str]) -> tuple[str, ...]:
        """The tokens read, in text order: all of them when they fit."""
        if len(tokens) <= self.max_tokens:
            return tuple(tokens)
        head = self.head_tokens
        tail = self.max_tokens - head
        return tuple(tokens[:head]) + (tuple(tokens[len(tokens) - tail:]) if tail else ())
