"""TorchServe handler for an rnn-sentiment checkpoint on ONNX Runtime: the executor our server runs.

Archived by bench/peers/torchserve.py (this folder is not a package: TorchServe imports the file)
with the checkpoint's files beside it. The session comes from `make_predictor`, the function our
server calls at load time, so it is the same graph (model/onnx_export.py), the same session
options (BENCH_TORCH_THREADS intra-op threads, 1 inter-op) and the same length runs of up to
`DEFAULT_ONNX_MAX_BATCH` texts, checked against torch before it serves. Only the front end differs
from ours. Requests and answers are those of torchserve_handler.py: the text in the `data` input,
JSON out (label, score, probabilities with 6 decimals).
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
    torch.set_num_threads(threads)  # the agreement probe and any torch fallback run on torch
    loaded = load_checkpoint(context.system_properties["model_dir"])
    # "onnxruntime", not "auto": a row labelled onnx must never serve on torch without saying so.
    _predictor = make_predictor(loaded, "onnxruntime", threads)
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
