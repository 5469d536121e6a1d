"""What a trace costs, as ratios to Predict on the same text, measured in the same run.

In-process (the model's work alone) and over gRPC on loopback (what a caller waits for).
Medians of many sequential calls; the machine may be shared, so ratios beat absolute times.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from rnn_sentiment.model.attribution import integrated_gradients
from rnn_sentiment.model.backends import make_predictor
from rnn_sentiment.model.checkpoint import LoadedModel
from rnn_sentiment.model.inference import EncodedText, predict_encoded
from rnn_sentiment.model.trace import TraceOptions, trace_text

CHEAP = ("prefix", "gradient_x_input")


def median_ms(work: Callable[[], object], repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        work()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def in_process_costs(loaded: LoadedModel, encoded: EncodedText, repeats: int, threads: int) -> dict:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ids = torch.tensor(encoded.ids, dtype=torch.int64)
        target = loaded.config.labels.index(predict_encoded(loaded, [encoded])[0].label)
        # What the server runs by default: Predict on ONNX Runtime, and a trace of a
        # unidirectional network taking its recurrence from the same session.
        served = make_predictor(loaded, "auto", threads)
        cheap = TraceOptions(attributions=CHEAP)
        rows = {
            "predict": median_ms(lambda: predict_encoded(loaded, [encoded]), repeats),
            "predict (server's executor)": median_ms(lambda: served([encoded]), repeats),
            "trace prefix + gradient_x_input (server's executor)": median_ms(
                lambda: trace_text(loaded, encoded, cheap, served.step_states(encoded)), repeats),
            "trace (no attributions)": median_ms(lambda: trace_text(loaded, encoded), repeats),
            "trace prefix + gradient_x_input": median_ms(
                lambda: trace_text(loaded, encoded, TraceOptions(attributions=CHEAP)), repeats),
            "integrated_gradients 32 steps (alone)": median_ms(
                lambda: integrated_gradients(loaded.network, ids, target, 32), repeats),
            "trace all four attributions": median_ms(
                lambda: trace_text(loaded, encoded, TraceOptions(attributions=(*CHEAP, "integrated_gradients",
                                                                               "occlusion"))), repeats),
            "trace memory profile": median_ms(
                lambda: trace_text(loaded, encoded, TraceOptions(memory=True)), max(repeats // 4, 5)),
        }
    finally:
        torch.set_num_threads(previous)
    return {"threads": threads, "tokens": len(encoded.ids), "median_ms": rows}


def grpc_costs(model_dir: Path, model: str, text: str, repeats: int, threads: int) -> dict:
    """Serve the one checkpoint in model_dir on a free loopback port; time Predict and Trace calls in turn."""
    from rnn_sentiment.client import SentimentClient

    port = _free_port()
    command = [sys.executable, "-m", "rnn_sentiment.cli", "serve", "--address", f"127.0.0.1:{port}",
               "--metrics-address", "", "--model-dir", str(model_dir), "--torch-threads", str(threads),
               "--log-level", "WARNING"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ})
    try:
        with SentimentClient(f"127.0.0.1:{port}", timeout=60) as client:
            client.wait_until_serving(timeout=120)
            rows = {
                "Predict": median_ms(lambda: client.predict(text, model=model), repeats),
                "Trace prefix + gradient_x_input": median_ms(
                    lambda: client.trace(text, model=model, attributions=CHEAP, include_hidden_states=False),
                    repeats),
                "Trace integrated_gradients 32": median_ms(
                    lambda: client.trace(text, model=model, attributions=["integrated_gradients"],
                                         include_hidden_states=False), repeats),
            }
    finally:
        process.terminate()
        process.wait(30)
    return {"threads": threads, "median_ms": rows}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
