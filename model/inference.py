"""The torch side of serving: text -> ids -> probabilities, through the single forward path."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .checkpoint import LoadedModel
from .data import Batch, make_batch
from .tokenizer import tokenize
from .truncation import TokenLimit
from .vocabulary import PAD_ID, UNK_ID, Vocabulary

__all__ = ["EncodedText", "PredictionResult", "encode_tokens", "encode_texts", "predict_encoded",
           "padded_batch", "to_predictions", "positive_index"]


@dataclass(frozen=True)
class EncodedText:
    tokens: tuple[str, ...]  # after truncation
    ids: tuple[int, ...]
    unknown_count: int
    truncated: bool
    # Per token, the n-gram ids the network adds (Vocabulary.unknown_subwords); () when the
    # model has no sub-words or the text no unknown token.
    subword_ids: tuple[tuple[int, ...], ...] = ()
    text_token_count: int = 0  # tokens of the whole text, before truncation; 0: not recorded


@dataclass(frozen=True)
class PredictionResult:
    label: str
    score: float  # probability of `label`
    probabilities: tuple[float, ...]  # in config.labels order
    token_count: int
    unknown_count: int
    truncated: bool
    text_token_count: int = 0  # tokens of the whole text, before truncation


def encode_tokens(tokens: Sequence[str], vocab: Vocabulary, max_tokens: int,
                  truncation: str = "head") -> EncodedText:
    """Ids for already tokenized text, keeping at most max_tokens tokens: the first ones
    ("head"), or the first and the last ones ("head_tail"; model/truncation.py)."""
    if not tokens:
        raise ValueError("text has no tokens; send at least one word")
    # Most texts fit: no TokenLimit to build for them (this runs for every text served).
    kept = tuple(tokens) if len(tokens) <= max_tokens else TokenLimit(max_tokens, truncation).keep(tokens)
    ids = tuple(vocab.encode(kept))
    # Not known == encoded as <unk> or <pad> (Vocabulary.is_known); counting ids is 10x cheaper.
    unknown = ids.count(UNK_ID) + ids.count(PAD_ID)
    return EncodedText(tokens=kept, ids=ids, unknown_count=unknown, truncated=len(tokens) > max_tokens,
                       subword_ids=vocab.unknown_subwords(kept, ids) if unknown else (),
                       text_token_count=len(tokens))


def encode_texts(texts: Sequence[str], vocab: Vocabulary, max_tokens: int,
                 truncation: str = "head") -> list[EncodedText]:
    """Tokenize and encode raw texts; a text with no tokens (e.g. only whitespace) raises ValueError."""
    encoded = []
    for index, text in enumerate(texts):
        tokens = tokenize(text)
        if not tokens:
            raise ValueError(f"text {index} has no tokens after tokenizing; send at least one word")
        encoded.append(encode_tokens(tokens, vocab, max_tokens, truncation))
    return encoded


def positive_index(labels: Sequence[str]) -> int:
    """Index of the label a trace's delta is measured toward: "positive", else the last label."""
    return labels.index("positive") if "positive" in labels else len(labels) - 1


def predict_encoded(loaded: LoadedModel, batch: Sequence[EncodedText]) -> list[PredictionResult]:
    """Probabilities for a batch of encoded texts, in input order (the torch forward)."""
    if not batch:
        return []
    network = loaded.network
    tensors = padded_batch(batch, loaded.config.subword_buckets)
    with torch.inference_mode():
        # pack_padded_sequence(enforce_sorted=False) sorts by length inside and restores the order.
        subword_ids = tensors.subword_ids.to(loaded.device) if tensors.subword_ids is not None else None
        output = network(tensors.token_ids.to(loaded.device), tensors.lengths, subword_ids=subword_ids)
        probabilities = torch.softmax(output.logits.float(), dim=-1).cpu()  # [B, C]
    return to_predictions(loaded.config.labels, probabilities.tolist(), batch)


def padded_batch(batch: Sequence[EncodedText], subword_pad: int = 0) -> Batch:
    """Token ids padded to the longest text [B, T], the lengths [B] and any n-gram ids [B, T, K]
    (padded with subword_pad, the model's subword_buckets), on the CPU."""
    return make_batch([list(item.ids) for item in batch], [0] * len(batch),
                      subword_lists=[item.subword_ids for item in batch], subword_pad=subword_pad)


def to_predictions(labels: Sequence[str], rows: Sequence[Sequence[float]],
                   batch: Sequence[EncodedText]) -> list[PredictionResult]:
    """One PredictionResult per text from its row of label probabilities."""
    return [to_prediction(labels, row, item) for row, item in zip(rows, batch, strict=True)]


def to_prediction(labels: Sequence[str], probabilities: Sequence[float], item: EncodedText) -> PredictionResult:
    # Built-ins in C over a tuple, no per-label lambda: this runs for every text served.
    values = tuple(map(float, probabilities))
    best = values.index(max(values))  # the first of equal maxima, as max over the indices gave
    return PredictionResult(
        label=labels[best],
        score=values[best],
        probabilities=values,
        token_count=len(item.ids),
        unknown_count=item.unknown_count,
        truncated=item.truncated,
        text_token_count=max(item.text_token_count, len(item.ids)),
    )
