"""TorchServe handler for an rnn-sentiment checkpoint: the same load and predict functions as our server.

Archived by bench/peers/torchserve.py (this folder is not a package: TorchServe imports the file)
with the checkpoint's files beside it; TorchServe batches requests (batchSize, maxBatchDelay) and
calls `handle` with the batch. Each request carries the text in its `data` input; each answer is
JSON: label, score, probabilities (6 decimals).

BENCH_EXECUTOR picks the executor: `torch` (the peers' usual way) or `onnxruntime`, the session
our server builds at load time through the same `make_predictor` call: the same graph
(model/onnx_export.py), session options (BENCH_TORCH_THREADS intra-op threads, 1 inter-op) and
length runs, checked against torch before it serves, so such a row differs from ours by the front
end alone. `onnxruntime`, never `auto`: a row labelled onnx must not serve on torch unannounced.
"""

from __future__ import annotations

import json
import os

import torch

from rnn_sentiment.model.backends import Predictor, make_predictor
from rnn_sentiment.model.checkpoint import load_checkpoint
from rnn_sentiment.model.inference import encode_texts

_predictor: Predictor | None = None


def _initialize(context) -> None:
    global _predictor
    threads = int(os.environ.get("BENCH_TORCH_THREADS", "1"))
    torch.set_num_threads(threads)  # the torch executor, and ONNX Runtime's agreement probe
    loaded = load_checkpoint(context.system_properties["model_dir"])
    _predictor = make_predictor(loaded, os.environ.get("BENCH_EXECUTOR", "torch"), threads)
    _predictor(encode_texts(["warm up"], loaded.vocab, loaded.config.max_tokens))


def _text(row: dict) -> str:
    raw = row.get("data", row.get("body"))
    return raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else str(raw)


def handle(data, context):
    if _predictor is None:
        _initialize(context)
    if data is None:  # TorchServe's initialization call
        return None
    assert _predictor is not None
    loaded = _predictor.loaded
    results = _predictor(encode_texts([_text(row) for row in data], loaded.vocab, loaded.config.max_tokens))
    # Fixed-width numbers: every answer to the same text has the same size (the benchmark checks it).
    return [json.dumps({"label": r.label, "score": f"{r.score:.6f}",
                        "probabilities": [f"{p:.6f}" for p in r.probabilities]})
            for r in results]
