"""`rnn-sentiment eval --target`: the same evaluation, with a running server doing the predicting.

The SST-2 files are already tokenized; the server's tokenizer leaves such text unchanged, so
the server reads exactly the tokens the in-process evaluation reads.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rnn_sentiment.client import SentimentClient, SentimentError
from rnn_sentiment.model.data import read_sst_tsv
from rnn_sentiment.model.evaluation import format_report, score_predictions


def run_remote_eval(target: str, model: str, path: Path, as_json: bool, texts_per_call: int = 32) -> int:
    try:
        examples = read_sst_tsv(path)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    labels: list[str] = []
    confidences: list[float] = []
    try:
        with SentimentClient(target, timeout=60) as client:
            info = client.model_info(model)
            for start in range(0, len(examples), texts_per_call):
                chunk = examples[start:start + texts_per_call]
                result = client.predict([" ".join(e.tokens) for e in chunk], model=info.name)
                labels += [p.label for p in result.predictions]
                confidences += [p.score for p in result.predictions]
    except SentimentError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report = score_predictions(info.labels, examples, labels, confidences)
    if as_json:
        print(json.dumps({"checkpoint": info.name, "version": info.version, "sha256": info.checkpoint_sha256,
                          "data": str(path), "target": target, **report.to_dict()}))
    else:
        print(f"{info.name} {info.version} ({info.checkpoint_sha256[:12]}) at {target} on {path}")
        print(format_report(report))
    return 0
