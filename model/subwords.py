"""Hashed character n-grams: what a network with sub-word vectors knows about a word it never saw.

A word is wrapped in boundary marks ("<film>") and cut into its character 3-, 4- and 5-grams,
each hashed into one of `buckets` rows of an embedding table (Bojanowski et al. 2017, fastText,
arXiv:1607.04606). An unseen "unfunny" then shares "<un", "fun" and "nny>" with words the network
was trained on, instead of being one more <unk>. On SST-2 dev it gains accuracy, mostly on the
sentences that hold an unknown word (docs/models.md).

The hash is zlib.crc32: stable across processes and Python versions (str.__hash__ is salted per
process), and implemented in C, so hashing an unknown word at request time costs microseconds.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

__all__ = ["NGRAM_SIZES", "MAX_WORD_CHARS", "char_ngrams", "subword_ids", "subword_array", "batch_subword_array"]

NGRAM_SIZES = (3, 4, 5)
# A token is cut into n-grams from at most its first 32 characters, so that one 5,000-character
# "word" costs 90 n-grams, not 15,000 (at most 93 for any token; a batch is padded to its longest
# n-gram list). SST-2's longest training word has 27 characters: every word the shipped models
# learnt from is whole.
MAX_WORD_CHARS = 32


def char_ngrams(token: str) -> list[str]:
    """The character n-grams of `token` wrapped in "<" and ">", shortest first; repeats kept.

    A token longer than MAX_WORD_CHARS is read by its start: its first MAX_WORD_CHARS characters
    after "<", without the end mark (it does not end there)."""
    marked = f"<{token}>" if len(token) <= MAX_WORD_CHARS else f"<{token[:MAX_WORD_CHARS]}"
    return [marked[start:start + size] for size in NGRAM_SIZES for start in range(len(marked) - size + 1)]


def subword_ids(token: str, buckets: int) -> tuple[int, ...]:
    """The n-gram bucket ids of `token`, each in [0, buckets). Every token has at least one
    (a one-character token "a" has the single 3-gram "<a>")."""
    crc32 = zlib.crc32
    return tuple(crc32(ngram.encode("utf-8")) % buckets for ngram in char_ngrams(token))


def subword_array(texts: Sequence[Sequence[Sequence[int]]], steps: int, pad: int) -> np.ndarray:
    """Per text, per token n-gram ids as one [B, T, K] int64 array padded with `pad` (K >= 1).

    Built in numpy: Predict pads every small batch that holds an unknown word this way.
    """
    width = max(1, max((len(ids) for text in texts for ids in text), default=1))
    table = np.full((len(texts), steps, width), pad, dtype=np.int64)  # [B, T, K]
    for row, text in enumerate(texts):
        for step, ids in enumerate(text):
            table[row, step, : len(ids)] = ids
    return table


def batch_subword_array(texts: Sequence[Sequence[Sequence[int]]], steps: int, pad: int) -> np.ndarray | None:
    """subword_array for a batch, or None when no text has n-gram ids (the common case: a text
    without unknown words carries none, Vocabulary.unknown_subwords)."""
    return subword_array(texts, steps, pad) if any(texts) else None
