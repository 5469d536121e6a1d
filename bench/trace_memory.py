"""Vanishing memory and recency bias, measured: memory profiles ‖∂h_T/∂x_t‖ of long SST-2 dev
sentences, summarised per model."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from rnn_sentiment.model.checkpoint import LoadedModel
from rnn_sentiment.model.data import Example
from rnn_sentiment.model.inference import encode_tokens
from rnn_sentiment.model.trace import TraceOptions, trace_text

DISTANCES = (0, 1, 2, 5, 10, 20, 30)


def memory_summary(loaded: LoadedModel, examples: Sequence[Example], min_tokens: int) -> dict:
    """Mean recency, median decay per token, and the median influence at given distances from the
    end relative to the last token's, over the dev sentences of at least min_tokens tokens."""
    recency, decay = [], []
    relative: dict[int, list[float]] = {d: [] for d in DISTANCES}
    for example in examples:
        encoded = encode_tokens(example.tokens, loaded.vocab, loaded.config.max_tokens)
        if len(encoded.ids) < min_tokens:
            continue
        trace = trace_text(loaded, encoded, TraceOptions(memory=True))
        assert trace.memory is not None
        recency.append(trace.memory.recency)
        decay.append(trace.memory.decay_per_token)
        memory = [float(s.memory) for s in trace.steps]  # type: ignore[arg-type]
        last = memory[-1] or 1e-30
        for distance in DISTANCES:
            if distance < len(memory):
                relative[distance].append(memory[-1 - distance] / last)
    return {
        "sentences": len(recency),
        "min_tokens": min_tokens,
        "mean_recency": statistics.fmean(recency) if recency else None,
        "median_decay_per_token": statistics.median(decay) if decay else None,
        "median_influence_relative_to_last": {str(d): statistics.median(v) if v else None
                                              for d, v in relative.items()},
    }
