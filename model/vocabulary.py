"""Token <-> id mapping; part of the model artifact, saved beside the weights."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from .subwords import subword_array, subword_ids

__all__ = ["PAD_TOKEN", "UNK_TOKEN", "PAD_ID", "UNK_ID", "Vocabulary"]

PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
PAD_ID = 0  # the embedding's padding_idx: padded positions get a zero vector and no gradient
UNK_ID = 1


class Vocabulary:
    """An ordered token list; a token's position is its id. Id 0 is padding, id 1 unknown.

    With subword_buckets > 0 (ModelConfig.subword_buckets) a token also has hashed character
    n-gram ids in [0, subword_buckets); subword_buckets itself is the n-gram padding id.
    """

    def __init__(self, tokens: Sequence[str], subword_buckets: int = 0) -> None:
        if list(tokens[:2]) != [PAD_TOKEN, UNK_TOKEN]:
            raise ValueError(f"a vocabulary must start with {PAD_TOKEN!r}, {UNK_TOKEN!r}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("a vocabulary must not repeat a token")
        if subword_buckets < 0:
            raise ValueError(f"subword_buckets must be >= 0, got {subword_buckets}")
        self._tokens: list[str] = list(tokens)
        self._ids: dict[str, int] = {token: index for index, token in enumerate(self._tokens)}
        self.subword_buckets = subword_buckets

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], min_freq: int = 1,
              max_size: int | None = None, subword_buckets: int = 0) -> Vocabulary:
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
        return cls([PAD_TOKEN, UNK_TOKEN, *kept], subword_buckets)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Ids for tokens; an unknown token maps to UNK_ID."""
        return [self._ids.get(token, UNK_ID) for token in tokens]

    def unknown_subwords(self, tokens: Sequence[str], ids: Sequence[int]) -> tuple[tuple[int, ...], ...]:
        """Per token, the n-gram ids the network adds to its vector: a token encoded as <unk> gets
        its own, every other token none (its n-grams are part of its word vector,
        SentimentRNN.fold_known_subwords). Empty when the vocabulary has no sub-words or the
        text no unknown token, the common case that then costs one scan of the ids."""
        if not self.subword_buckets or UNK_ID not in ids:
            return ()
        # The literal "<unk>" is the unknown token itself: its plain vector, no n-grams.
        return tuple(subword_ids(token, self.subword_buckets) if index == UNK_ID and token != UNK_TOKEN else ()
                     for token, index in zip(tokens, ids, strict=True))

    def known_subword_table(self) -> Tensor:
        """The n-gram ids of every vocabulary token [V, K], padded with subword_buckets; the
        padding and unknown tokens have none. What an unfolded network adds to each word vector."""
        if not self.subword_buckets:
            raise ValueError("this vocabulary has no sub-words (subword_buckets is 0)")
        rows = [subword_ids(token, self.subword_buckets) if index > UNK_ID else ()
                for index, token in enumerate(self._tokens)]
        return torch.from_numpy(subword_array([rows], len(rows), self.subword_buckets)[0])  # [V, K]

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
        return (isinstance(other, Vocabulary) and self._tokens == other._tokens
                and self.subword_buckets == other.subword_buckets)

    def to_json(self) -> str:
        """A JSON list of tokens in id order (subword_buckets lives in the model config)."""
        return json.dumps(self._tokens, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, subword_buckets: int = 0) -> Vocabulary:
        tokens = json.loads(text)
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError("a vocabulary JSON must be a list of strings")
        return cls(tokens, subword_buckets)
