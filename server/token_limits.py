"""Each served model's token limit: the server's --max-tokens/--truncation, or its own override.

The limit is a serving setting beside the other request bounds (--max-text-chars,
--max-texts-per-request), not part of a checkpoint: an operator sets it per deployment, and a
model replaced by hot reload keeps it.
"""

from __future__ import annotations

from rnn_sentiment.model.checkpoint_schema import MAX_TOKENS_BOUND
from rnn_sentiment.model.truncation import TRUNCATIONS, TokenLimit

__all__ = ["CHARS_PER_TOKEN", "token_limit_overrides", "token_limit_for", "text_chars_shortfall"]

OVERRIDE_FORMAT = "NAME=TOKENS[:TRUNCATION], comma-separated, e.g. sst2-rnn=256:head"
# Characters of English prose per token, rounded up (SST-2 dev: about 5.4 with the spaces).
CHARS_PER_TOKEN = 6


def token_limit_overrides(spec: str) -> dict[str, tuple[int, str | None]]:
    """Model name -> (max_tokens, truncation or None for the server's) from --model-token-limits.

    ValueError naming the bad entry and the format."""
    overrides: dict[str, tuple[int, str | None]] = {}
    for entry in (part.strip() for part in spec.split(",")):
        if not entry:
            continue
        name, equals, value = entry.partition("=")
        tokens_text, colon, truncation = value.partition(":")
        name = name.strip()
        if not equals or not name or not tokens_text.strip().isdigit():
            raise ValueError(f"{entry!r} is not {OVERRIDE_FORMAT}")
        tokens = int(tokens_text)
        if not 1 <= tokens <= MAX_TOKENS_BOUND:
            raise ValueError(f"{entry!r}: TOKENS must be from 1 to {MAX_TOKENS_BOUND}")
        if colon and truncation not in TRUNCATIONS:
            raise ValueError(f"{entry!r}: TRUNCATION must be one of {', '.join(TRUNCATIONS)}")
        if name in overrides:
            raise ValueError(f"model {name!r} is named twice")
        overrides[name] = (tokens, truncation if colon else None)
    return overrides


def token_limit_for(name: str, max_tokens: int, truncation: str, overrides: str) -> TokenLimit:
    """The limit model `name` is served with: its override, else the server-wide settings."""
    tokens, own_truncation = token_limit_overrides(overrides).get(name, (max_tokens, None))
    return TokenLimit(tokens, own_truncation or truncation)


def text_chars_shortfall(max_text_chars: int, max_tokens: int) -> str | None:
    """Why --max-text-chars refuses prose before the token limit cuts it, or None when it does not.

    Validation refuses a text over max_text_chars before it is tokenized: below about
    CHARS_PER_TOKEN x max_tokens, a long review is refused where the limit would have cut it."""
    needed = CHARS_PER_TOKEN * max_tokens
    if max_text_chars >= needed:
        return None
    return (f"--max-text-chars {max_text_chars} refuses prose before it reaches {max_tokens} tokens "
            f"(about {CHARS_PER_TOKEN} characters each): a long text is refused instead of truncated; "
            f"raise it to {needed} or more")
