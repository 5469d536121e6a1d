"""Evaluate a checkpoint on labelled SST-2-style data; the `rnn-sentiment eval` command's core."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoint import CheckpointError, LoadedModel, load_checkpoint
from .data import Example, read_sst_tsv
from .inference import encode_tokens, predict_encoded
from .metrics import classification_metrics, expected_calibration_error

__all__ = ["EvaluationReport", "evaluate", "format_report", "add_eval_arguments", "run_eval_from_args"]


@dataclass(frozen=True)
class EvaluationReport:
    accuracy: float
    macro_f1: float
    confusion: tuple[tuple[int, ...], ...]  # [true][predicted]; binary: ((tn, fp), (fn, tp))
    count: int
    ece: float  # expected calibration error, 10 bins
    labels: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1,
                "confusion": [list(row) for row in self.confusion], "count": self.count,
                "ece": self.ece, "labels": list(self.labels)}


def evaluate(loaded: LoadedModel, examples: Sequence[Example], batch_size: int = 256) -> EvaluationReport:
    """Predict every example (truncated to the model's max_tokens) and score the predictions."""
    labels = loaded.config.labels
    gold: list[int] = []
    predicted: list[int] = []
    confidences: list[float] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        encoded = [encode_tokens(e.tokens, loaded.vocab, loaded.config.max_tokens) for e in chunk]
        for example, result in zip(chunk, predict_encoded(loaded, encoded)):
            gold.append(example.label)
            predicted.append(labels.index(result.label))
            confidences.append(result.score)
    metrics = classification_metrics(gold, predicted, len(labels))
    ece = expected_calibration_error(confidences, [g == p for g, p in zip(gold, predicted)])
    return EvaluationReport(accuracy=metrics.accuracy, macro_f1=metrics.macro_f1,
                            confusion=metrics.confusion, count=metrics.count, ece=ece, labels=labels)


def format_report(report: EvaluationReport) -> str:
    """A plain-text table: headline metrics, then the confusion matrix (rows = true label)."""
    width = max(len(label) for label in report.labels) + 2
    lines = [
        f"examples   {report.count}",
        f"accuracy   {report.accuracy:.4f}",
        f"macro F1   {report.macro_f1:.4f}",
        f"ECE        {report.ece:.4f}",
        "",
        "true \\ predicted".ljust(width + 6) + "".join(label.rjust(width) for label in report.labels),
    ]
    for label, row in zip(report.labels, report.confusion):
        lines.append(label.ljust(width + 6) + "".join(str(n).rjust(width) for n in row))
    return "\n".join(lines)


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags for `rnn-sentiment eval`."""
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory")
    parser.add_argument("--data", default="../shared/data/sst2",
                        help="a TSV file, or a directory holding SPLIT.tsv (default: %(default)s)")
    parser.add_argument("--split", default="dev", help="file name in --data without .tsv (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run_eval_from_args(args: argparse.Namespace) -> int:
    """Run `rnn-sentiment eval`; return the process exit code (2 for a bad checkpoint or path)."""
    data = Path(args.data)
    path = data / f"{args.split}.tsv" if data.is_dir() else data
    try:
        loaded = load_checkpoint(args.checkpoint)
        examples = read_sst_tsv(path)
    except (CheckpointError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report = evaluate(loaded, examples)
    if args.json:
        print(json.dumps({"checkpoint": loaded.name, "version": loaded.version,
                          "sha256": loaded.sha256, "data": str(path), **report.to_dict()}))
    else:
        print(f"{loaded.name} {loaded.version} ({loaded.sha256[:12]}) on {path}")
        print(format_report(report))
    return 0
