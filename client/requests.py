"""Request-side helpers shared by the sync and asyncio clients."""

from __future__ import annotations

from typing import Sequence


def as_texts(texts: str | Sequence[str]) -> list[str]:
    """Accept one text or a sequence; a bare string is one text, not a list of characters."""
    return [texts] if isinstance(texts, str) else list(texts)
