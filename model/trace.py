"""Word-by-word trace: the hidden state after each token and the answer if the text stopped there."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .checkpoint import LoadedModel
from .inference import EncodedText, PredictionResult, positive_index, to_prediction
from .vocabulary import PAD_ID

__all__ = ["TraceStep", "TraceResult", "trace_text"]


@dataclass
class TraceStep:
    token: str
    known: bool  # False: the model saw <unk> here
    hidden: list[float]  # top-layer state after reading this token (both directions if bidirectional)
    hidden_norm: float  # L2 norm of `hidden`
    probabilities: tuple[float, ...]  # label probabilities had the text ended at this token
    delta_positive: float  # positive probability here minus at the previous step (or the baseline)


@dataclass
class TraceResult:
    prediction: PredictionResult  # equal to predict_encoded's for the same text
    steps: list[TraceStep]
    # Probabilities before any token: the classifier applied to a zero pooled vector. With
    # pooling "last" that is exactly the empty prefix (the recurrence starts from a zero
    # state); for other poolings it is the same "no evidence yet" answer. The first step's
    # delta_positive is measured from it, so the deltas sum to prediction minus baseline.
    baseline: tuple[float, ...]
    attention: list[float] | None = None  # per-token weights of the full text, pooling "attention"


def trace_text(loaded: LoadedModel, encoded: EncodedText) -> TraceResult:
    """Trace one encoded text through the same forward that predict uses.

    All T prefixes run as ONE batch (row t holds the first t+1 tokens), so "the answer if
    the text ended here" is the model's real answer for that prefix, for every architecture
    (bidirectional and attention included); the last row is the whole text.
    """
    count = len(encoded.ids)
    if count == 0:
        raise ValueError("cannot trace an empty text")
    network = loaded.network
    device = loaded.device
    ids = torch.tensor(encoded.ids, dtype=torch.int64, device=device)  # [T]
    lengths = torch.arange(1, count + 1, dtype=torch.int64)  # [T] row t has t+1 tokens
    keep = torch.ones(count, count, dtype=torch.bool, device=device).tril()  # [T, T] row t: positions <= t
    prefixes = torch.where(keep, ids.unsqueeze(0).expand(count, count), PAD_ID)  # [T, T]
    with torch.inference_mode():
        output = network(prefixes, lengths, return_steps=True)
        probabilities = torch.softmax(output.logits.float(), dim=-1).cpu()  # [T, C]
        assert output.step_hidden is not None
        hidden = output.step_hidden[-1].float().cpu()  # [T, H*D] the full text's states
        zero = torch.zeros(1, network.output_size, device=device)  # [1, H*D]
        baseline = torch.softmax(network.classify_pooled(zero).float(), dim=-1)[0].cpu()  # [C]
        attention = output.attention[-1].cpu().tolist() if output.attention is not None else None

    positive = positive_index(loaded.config.labels)
    previous = float(baseline[positive])
    steps: list[TraceStep] = []
    for t, token in enumerate(encoded.tokens):
        current = probabilities[t]
        steps.append(TraceStep(
            token=token,
            known=loaded.vocab.is_known(token),
            hidden=hidden[t].tolist(),
            hidden_norm=float(torch.linalg.vector_norm(hidden[t])),
            probabilities=tuple(float(p) for p in current),
            delta_positive=float(current[positive]) - previous,
        ))
        previous = float(current[positive])
    return TraceResult(
        prediction=to_prediction(loaded.config.labels, probabilities[-1].tolist(), encoded),
        steps=steps,
        baseline=tuple(float(p) for p in baseline),
        attention=attention,
    )
