"""TorchServe handler for an rnn-sentiment checkpoint: the same load and predict functions as our server.

Archived by bench/peers/torchserve.py (this folder is not a package: TorchServe imports the file) with the checkpoint's files beside it; TorchServe batches
requests (batchSize, maxBatchDelay) and calls `handle` with the batch. Each request carries the
text in its `data` input; each answer is JSON: label, score, probabilities (6 decimals).
"""

from __future__ import annotations

import json
import os

import torch

from rnn_sentiment.model.checkpoint import load_checkpoint
from rnn_sentiment.model.inference import encode_texts, predict_encoded

_loaded = None


def _initialize(context) -> None:
    global _loaded
    torch.set_num_threads(int(os.environ.get("BENCH_TORCH_THREADS", "1")))
    _loaded = load_checkpoint(context.system_properties["model_dir"])
    predict_encoded(_loaded, encode_texts(["warm up"], _loaded.vocab, _loaded.config.max_tokens))


def _text(row: dict) -> str:
    raw = row.get("data", row.get("body"))
    return raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else str(raw)


def handle(data, context):
    if _loaded is None:
        _initialize(context)
    if data is None:  # TorchServe's initialization call
        return None
    texts = [_text(row) for row in data]
    results = predict_encoded(_loaded, encode_texts(texts, _loaded.vocab, _loaded.config.max_tokens))
    # Fixed-width numbers: every answer to the same text has the same size (the benchmark checks it).
    return [json.dumps({"label": r.label, "score": f"{r.score:.6f}",
                        "probabilities": [f"{p:.6f}" for p in r.probabilities]})
            for r in results]
