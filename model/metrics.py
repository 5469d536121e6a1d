"""Classification metrics shared by training (dev selection) and evaluation (reports)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ClassificationMetrics", "classification_metrics", "expected_calibration_error"]


@dataclass(frozen=True)
class ClassificationMetrics:
    accuracy: float
    macro_f1: float
    confusion: tuple[tuple[int, ...], ...]  # [true][predicted]; binary: ((tn, fp), (fn, tp))
    count: int


def classification_metrics(gold: Sequence[int], predicted: Sequence[int], num_classes: int) -> ClassificationMetrics:
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    confusion = [[0] * num_classes for _ in range(num_classes)]
    for g, p in zip(gold, predicted):
        confusion[g][p] += 1
    count = len(gold)
    correct = sum(confusion[c][c] for c in range(num_classes))
    f1s = []
    for c in range(num_classes):
        true_positive = confusion[c][c]
        predicted_c = sum(confusion[r][c] for r in range(num_classes))
        gold_c = sum(confusion[c])
        denominator = predicted_c + gold_c
        # A class absent from both gold and predictions is perfectly handled (F1 = 1).
        f1s.append(2 * true_positive / denominator if denominator else 1.0)
    return ClassificationMetrics(
        accuracy=correct / count if count else 0.0,
        macro_f1=sum(f1s) / num_classes,
        confusion=tuple(tuple(row) for row in confusion),
        count=count,
    )


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017, arXiv:1706.04599)."""
    if not confidences:
        return 0.0
    totals = [0] * bins
    confidence_sums = [0.0] * bins
    correct_sums = [0] * bins
    for confidence, hit in zip(confidences, correct):
        index = min(int(confidence * bins), bins - 1)
        totals[index] += 1
        confidence_sums[index] += confidence
        correct_sums[index] += int(hit)
    n = len(confidences)
    return sum(abs(confidence_sums[b] - correct_sums[b]) / n for b in range(bins) if totals[b])
