"""Token <-> id mapping; part of the model artifact, saved beside the weights."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence

__all__ = ["PAD_TOKEN", "UNK_TOKEN", "PAD_ID", "UNK_ID", "Vocabulary"]

PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
PAD_ID = 0  # the embedding's padding_idx: padded positions get a zero vector and no gradient
UNK_ID = 1


class Vocabulary:
    """An ordered token list; a token's position is its id. Id 0 is padding, id 1 unknown."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if list(tokens[:2]) != [PAD_TOKEN, UNK_TOKEN]:
            raise ValueError(f"a vocabulary must start with {PAD_TOKEN!r}, {UNK_TOKEN!r}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("a vocabulary must not repeat a token")
        self._tokens: list[str] = list(tokens)
        self._ids: dict[str, int] = {token: index for index, token in enumerate(self._tokens)}

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], min_freq: int = 1,
              max_size: int | None = None) -> Vocabulary:
        """Count tokens and keep those seen at least min_freq times, most frequent first.

        Ties are broken alphabetically so the same data always gives the same ids.
        max_size counts the two special tokens.
        """
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        for special in (PAD_TOKEN, UNK_TOKEN):
            counts.pop(special, None)
        kept = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[: max(0, max_size - 2)]
        return cls([PAD_TOKEN, UNK_TOKEN, *kept])

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Ids for tokens; an unknown token maps to UNK_ID."""
        return [self._ids.get(token, UNK_ID) for token in tokens]

    def is_known(self, token: str) -> bool:
        return token in self._ids and token not in (PAD_TOKEN, UNK_TOKEN)

    def token(self, index: int) -> str:
        return self._tokens[index]

    @property
    def tokens(self) -> tuple[str, ...]:
        return tuple(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._tokens == other._tokens

    def to_json(self) -> str:
        """A JSON list of tokens in id order."""
        return json.dumps(self._tokens, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        tokens = json.loads(text)
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError("a vocabulary JSON must be a list of strings")
        return cls(tokens)
