"""Reading SST-2 TSV files and batching examples by length for training."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .subwords import batch_subword_array
from .tokenizer import normalize_sst_tokens
from .vocabulary import PAD_ID, Vocabulary

__all__ = ["Example", "Batch", "read_sst_tsv", "make_batch", "length_bucketed_batches"]


@dataclass(frozen=True)
class Example:
    label: int
    tokens: tuple[str, ...]


@dataclass
class Batch:
    token_ids: Tensor  # [B, T] int64, PAD_ID after each row's length
    lengths: Tensor  # [B] int64 on CPU
    labels: Tensor  # [B] int64
    # [B] int64 positions of the rows in the example list they came from, so per-example
    # targets computed once up front (a teacher's soft labels) can follow a shuffled batch.
    indices: Tensor | None = None
    # [B, T, K] int64 n-gram ids of the tokens encoded as <unk> (SentimentRNN.embed), None
    # when the vocabulary has no sub-words or no token of the batch is unknown.
    subword_ids: Tensor | None = None


def read_sst_tsv(path: str | Path) -> list[Example]:
    """Examples of an SST-2 TSV (header line, then `label<TAB>sentence`); empty sentences are skipped."""
    path = Path(path)
    examples: list[Example] = []
    with path.open(encoding="utf-8") as handle:
        next(handle, None)  # header: "label\tsentence" (train) or "label\tcontent" (dev)
        for number, line in enumerate(handle, start=2):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            label_text, _, sentence = line.partition("\t")
            if not label_text.strip().isdigit():
                raise ValueError(f"{path}:{number}: label {label_text!r} is not an integer")
            tokens = normalize_sst_tokens(sentence)
            if tokens:
                examples.append(Example(label=int(label_text), tokens=tuple(tokens)))
    return examples


def make_batch(id_lists: list[list[int]], labels: list[int], indices: list[int] | None = None,
               subword_lists: list[tuple[tuple[int, ...], ...]] | None = None, subword_pad: int = 0) -> Batch:
    """Pad id lists to the longest one; subword_lists (per text, Vocabulary.unknown_subwords) likewise."""
    lengths = torch.tensor([len(ids) for ids in id_lists], dtype=torch.int64)  # [B]
    steps = int(lengths.max())
    token_ids = torch.full((len(id_lists), steps), PAD_ID, dtype=torch.int64)  # [B, T]
    for row, ids in enumerate(id_lists):
        token_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
    subwords = batch_subword_array(subword_lists, steps, subword_pad) if subword_lists else None  # [B, T, K]
    return Batch(token_ids=token_ids, lengths=lengths, labels=torch.tensor(labels, dtype=torch.int64),
                 indices=None if indices is None else torch.tensor(indices, dtype=torch.int64),
                 subword_ids=torch.from_numpy(subwords) if subwords is not None else None)


def length_bucketed_batches(examples: list[Example], vocab: Vocabulary, batch_size: int,
                            rng: random.Random | None = None, max_tokens: int | None = None,
                            pool_batches: int = 50) -> list[Batch]:
    """Batches of similar-length examples, in a shuffled order.

    Sorting by length inside pools of `pool_batches` batches keeps padding (wasted work)
    low while the pool shuffle keeps batches varied from epoch to epoch. Without an rng the
    order is the input order, sorted within pools (deterministic, for evaluation).
    """
    order = list(range(len(examples)))
    if rng is not None:
        rng.shuffle(order)
    pool = batch_size * pool_batches
    groups: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool], key=lambda i: len(examples[i].tokens))
        groups.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    if rng is not None:
        rng.shuffle(groups)
    batches = []
    for group in groups:
        tokens = [examples[i].tokens[:max_tokens] if max_tokens else examples[i].tokens for i in group]
        ids = [vocab.encode(text) for text in tokens]
        subwords = [vocab.unknown_subwords(text, text_ids) for text, text_ids in zip(tokens, ids)]
        batches.append(make_batch(ids, [examples[i].label for i in group], group, subwords, vocab.subword_buckets))
    return batches
