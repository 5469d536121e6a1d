"""Faithfulness of trace attributions: delete each sentence's top-k attributed words and count how
often the prediction flips, against deleting k random words (DeYoung et al. 2020, ERASER's
"comprehensiveness", measured as label flips).

In-process (model layer): faithfulness is a property of the maths, not of the transport.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from rnn_sentiment.model.checkpoint import LoadedModel
from rnn_sentiment.model.data import Example
from rnn_sentiment.model.inference import EncodedText, encode_tokens, predict_encoded
from rnn_sentiment.model.trace import ATTRIBUTION_METHODS, TraceOptions, trace_text

KS = (1, 2, 3, 4, 5)
RANDOM = "random"
ATTENTION = "attention"


@dataclass
class DeletionCurves:
    """Flips per method and k, over the sentences long enough to keep a word after deleting k."""

    flips: dict[str, dict[int, int]] = field(default_factory=dict)
    counted: dict[int, int] = field(default_factory=dict)
    sentences: int = 0
    # Integrated gradients' completeness gap relative to |logit(text) − logit(baseline)|, per sentence.
    relative_gaps: list[float] = field(default_factory=list)

    def rate(self, method: str, k: int) -> float:
        return self.flips[method][k] / max(self.counted.get(k, 0), 1)

    def to_dict(self) -> dict:
        gaps = sorted(self.relative_gaps)
        return {
            "sentences": self.sentences,
            "integrated_gradients_relative_gap": {
                "steps": 32,
                "median": statistics.median(gaps) if gaps else None,
                "p99": gaps[min(len(gaps) - 1, int(0.99 * len(gaps)))] if gaps else None,
                "share_below_1_percent": sum(g < 0.01 for g in gaps) / len(gaps) if gaps else None,
            },
            "counted_per_k": {str(k): n for k, n in self.counted.items()},
            "flip_rate": {m: {str(k): self.rate(m, k) for k in self.counted} for m in self.flips},
        }


def deletion_curves(loaded: LoadedModel, examples: Sequence[Example], random_draws: int = 10,
                    seed: int = 13) -> DeletionCurves:
    """Deletion curves for every attribution method, attention weights (if any) and random words."""
    rng = random.Random(seed)
    options = TraceOptions(attributions=ATTRIBUTION_METHODS)
    methods = list(ATTRIBUTION_METHODS) + ([ATTENTION] if loaded.config.pooling == "attention" else [])
    curves = DeletionCurves(flips={m: {k: 0 for k in KS} for m in [*methods, RANDOM]})
    max_tokens = loaded.config.max_tokens
    for example in examples:
        encoded = encode_tokens(example.tokens, loaded.vocab, max_tokens)
        count = len(encoded.tokens)
        if count < 2:
            continue
        curves.sentences += 1
        trace = trace_text(loaded, encoded, options)
        label = trace.prediction.label
        rankings = {a.method: _ranking(a.scores) for a in trace.attributions}
        (ig,) = [a for a in trace.attributions if a.method == "integrated_gradients"]
        if ig.logit_difference and abs(ig.logit_difference) > 1e-6:
            curves.relative_gaps.append(float(ig.completeness_gap) / abs(ig.logit_difference))
        if ATTENTION in methods and trace.attention is not None:
            rankings[ATTENTION] = _ranking(trace.attention)
        draws = [rng.sample(range(count), count) for _ in range(random_draws)]
        rows: list[tuple[str, int, EncodedText]] = []
        for k in KS:
            if k >= count:
                continue
            curves.counted[k] = curves.counted.get(k, 0) + 1
            for method, ranking in rankings.items():
                rows.append((method, k, _without(encoded, ranking[:k], loaded)))
            for draw in draws:
                rows.append((RANDOM, k, _without(encoded, draw[:k], loaded)))
        predictions = predict_encoded(loaded, [row[2] for row in rows])
        random_flips: dict[int, int] = {}
        for (method, k, _), prediction in zip(rows, predictions):
            flipped = prediction.label != label
            if method == RANDOM:
                random_flips[k] = random_flips.get(k, 0) + flipped
            else:
                curves.flips[method][k] += flipped
        for k, flips in random_flips.items():
            # The expected flips of one random deletion: the mean over the draws.
            curves.flips[RANDOM][k] += flips / random_draws  # type: ignore[assignment]
    return curves


def _ranking(scores: Sequence[float]) -> list[int]:
    """Token positions, the one that most supports the predicted label first."""
    return sorted(range(len(scores)), key=lambda t: -scores[t])


def _without(encoded: EncodedText, positions: Sequence[int], loaded: LoadedModel) -> EncodedText:
    drop = set(positions)
    kept = [token for t, token in enumerate(encoded.tokens) if t not in drop]
    return encode_tokens(kept, loaded.vocab, loaded.config.max_tokens)
