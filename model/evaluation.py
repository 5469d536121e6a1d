"""Evaluate a checkpoint on labelled SST-2-style data; the `rnn-sentiment eval` command's core."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from .checkpoint import LoadedModel
from .data import Example
from .inference import encode_tokens, predict_encoded
from .metrics import classification_metrics, expected_calibration_error

__all__ = ["EvaluationReport", "SubsetAccuracy", "evaluate", "score_predictions", "format_report"]


# Sentence-length buckets (tokens) for the accuracy breakdown: recurrent nets lose more on long ones.
LENGTH_BUCKETS = ((1, 10), (11, 20), (21, 30), (31, 10_000))
NEGATIONS = frozenset({"not", "n't", "no", "never"})


@dataclass(frozen=True)
class SubsetAccuracy:
    name: str
    count: int
    accuracy: float


@dataclass(frozen=True)
class EvaluationReport:
    accuracy: float
    macro_f1: float
    confusion: tuple[tuple[int, ...], ...]  # [true][predicted]; binary: ((tn, fp), (fn, tp))
    count: int
    ece: float  # expected calibration error, 10 bins
    labels: tuple[str, ...]
    subsets: tuple[SubsetAccuracy, ...] = ()  # by length bucket, and sentences with a negation
    ece_before_scaling: float | None = None  # the same predictions without the fitted temperature

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1,
                "confusion": [list(row) for row in self.confusion], "count": self.count,
                "ece": self.ece, "labels": list(self.labels),
                "subsets": [{"name": s.name, "count": s.count, "accuracy": s.accuracy} for s in self.subsets],
                "ece_before_scaling": self.ece_before_scaling}


def score_predictions(labels: Sequence[str], examples: Sequence[Example], predicted_labels: Sequence[str],
                      confidences: Sequence[float]) -> EvaluationReport:
    """The report for predictions made anywhere (in-process or by a server over gRPC)."""
    gold = [e.label for e in examples]
    predicted = [list(labels).index(label) for label in predicted_labels]
    correct = [g == p for g, p in zip(gold, predicted)]
    metrics = classification_metrics(gold, predicted, len(labels))
    ece = expected_calibration_error(confidences, correct)
    return EvaluationReport(accuracy=metrics.accuracy, macro_f1=metrics.macro_f1,
                            confusion=metrics.confusion, count=metrics.count, ece=ece,
                            labels=tuple(labels), subsets=_subsets(examples, correct))


def _subsets(examples: Sequence[Example], correct: Sequence[bool]) -> tuple[SubsetAccuracy, ...]:
    groups: list[tuple[str, list[bool]]] = []
    for low, high in LENGTH_BUCKETS:
        name = f"{low}-{high} tokens" if high < 10_000 else f"{low}+ tokens"
        groups.append((name, [c for e, c in zip(examples, correct) if low <= len(e.tokens) <= high]))
    groups.append(("with a negation", [c for e, c in zip(examples, correct) if NEGATIONS & set(e.tokens)]))
    return tuple(SubsetAccuracy(name, len(hits), sum(hits) / len(hits) if hits else 0.0) for name, hits in groups)


def evaluate(loaded: LoadedModel, examples: Sequence[Example], batch_size: int = 256) -> EvaluationReport:
    """Predict every example (truncated to the model's max_tokens) and score the predictions."""
    predicted: list[str] = []
    confidences: list[float] = []
    unscaled_confidences: list[float] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        encoded = [encode_tokens(e.tokens, loaded.vocab, loaded.config.max_tokens) for e in chunk]
        for result in predict_encoded(loaded, encoded):
            predicted.append(result.label)
            confidences.append(result.score)
            unscaled_confidences.append(_unscaled_confidence(result.probabilities, loaded.config.temperature))
    report = score_predictions(loaded.config.labels, examples, predicted, confidences)
    correct = [loaded.config.labels[e.label] == label for e, label in zip(examples, predicted)]
    return replace(report, ece_before_scaling=expected_calibration_error(unscaled_confidences, correct))


def _unscaled_confidence(probabilities: Sequence[float], temperature: float) -> float:
    """The top probability before temperature scaling: softmax(T * log p) = softmax(z) for p = softmax(z / T).

    Scaling never changes the argmax, so the top label is the same one.
    """
    logits = [temperature * math.log(max(p, 1e-12)) for p in probabilities]
    top = max(logits)
    weights = [math.exp(z - top) for z in logits]
    return 1.0 / sum(weights)


def format_report(report: EvaluationReport) -> str:
    """A plain-text table: headline metrics, then the confusion matrix (rows = true label)."""
    width = max(len(label) for label in report.labels) + 2
    lines = [
        f"examples   {report.count}",
        f"accuracy   {report.accuracy:.4f}",
        f"macro F1   {report.macro_f1:.4f}",
        f"ECE        {report.ece:.4f}" + (
            f"  (before temperature scaling {report.ece_before_scaling:.4f})" if report.ece_before_scaling is not None else ""),
        "",
        "true \\ predicted".ljust(width + 6) + "".join(label.rjust(width) for label in report.labels),
    ]
    for label, row in zip(report.labels, report.confusion):
        lines.append(label.ljust(width + 6) + "".join(str(n).rjust(width) for n in row))
    if report.subsets:
        lines += ["", "accuracy by subset"]
        lines += [f"  {s.name:<18} {s.accuracy:.4f}  ({s.count} sentences)" for s in report.subsets]
    return "\n".join(lines)
