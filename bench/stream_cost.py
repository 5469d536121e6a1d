"""What a stream's update costs the model: one more word on a short against a long session, and the
cost per update when many sessions advance together in one batched call (model/streaming.py).

In-process, one thread (a worker's budget), the shipped model on each stepper executor. Interleaved
rounds: every round measures every case of every column once in turn, so drift on a shared machine
hits all of them alike; the tables give medians over rounds. Each call is timed twice: the CPU time
of the calling thread (what the update costs the worker, and what its capacity follows; both
executors run on that thread at one thread) and wall time (what a loaded machine adds).

    python -m bench.stream_cost                  # ~1 min; writes bench/results/stream.md
    python -m bench.stream_cost --rounds 5       # a smoke run
    python -m bench.stream_cost --baseline /tmp/streaming_before.py   # before/after, side by side

--baseline: an earlier copy of model/streaming.py (same package API: make_stream_stepper, advance)
measured in the same rounds as the current one, for a before/after on the same load.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

from rnn_sentiment.model import streaming
from rnn_sentiment.model.checkpoint import LoadedModel, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("the film is not as good as its trailer , but the acting is great and the plot holds "
         "together until a flat ending .").split()
SHORT, LONG = 5, 200
SESSION_COUNTS = (1, 16, 128, 1000)
BACKENDS = ("onnxruntime", "torch")
CLOCKS = {"CPU": time.thread_time, "wall": time.perf_counter}


def _session(stepper, tokens: int):
    """A session that has read `tokens` words, sent as one chunk."""
    text = [WORDS[i % len(WORDS)] for i in range(tokens)]
    ((state, _),) = stepper.advance([stepper.start()], [text], [False])
    return state


def cases(stepper) -> dict[str, Callable[[], object]]:
    """Every case of one stepper: one more word on each session length; one word on N sessions at once."""
    short, long = _session(stepper, SHORT), _session(stepper, LONG)
    word = [["fine"]]
    named: dict[str, Callable[[], object]] = {
        f"one word, {SHORT}-token session": lambda: stepper.advance([short], word, [False]),
        f"one word, {LONG}-token session": lambda: stepper.advance([long], word, [False]),
        f"one word, {LONG}-token session, with steps": lambda: stepper.advance([long], word, [True]),
    }
    for n in SESSION_COUNTS:
        states = [_session(stepper, 10)] * n  # states are immutable: shared is fine
        chunks, wants = word * n, [False] * n
        named[f"{n} sessions × 1 word"] = (lambda s=states, c=chunks, w=wants: stepper.advance(s, c, w))
    named["bytes per session"] = short.nbytes  # not timed: reported as is
    return named


def _timed(work: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median seconds of one call of `work` over `repeats` calls, per clock."""
    samples: dict[str, list[float]] = {clock: [] for clock in CLOCKS}
    for _ in range(repeats):
        cpu, wall = time.thread_time(), time.perf_counter()
        work()
        samples["wall"].append(time.perf_counter() - wall)
        samples["CPU"].append(time.thread_time() - cpu)
    return {clock: statistics.median(values) for clock, values in samples.items()}


def measure(columns: dict[str, dict[str, Callable[[], object]]], rounds: int,
            repeats: int) -> dict[str, dict[str, dict[str, float]]]:
    """Medians over interleaved rounds, µs per update: {clock: {column: {case: µs}}}."""
    timed = {column: {name: work for name, work in named.items() if name != "bytes per session"}
             for column, named in columns.items()}
    for named in timed.values():  # warm-up: first runs allocate
        for work in named.values():
            work()
    samples = {column: {name: [] for name in named} for column, named in timed.items()}
    for _ in range(rounds):
        for column, named in timed.items():
            for name, work in named.items():
                samples[column][name].append(_timed(work, repeats))
    results: dict[str, dict[str, dict[str, float]]] = {clock: {} for clock in CLOCKS}
    for clock in CLOCKS:
        for column, named in samples.items():
            medians = {name: statistics.median(s[clock] for s in values) * 1e6 for name, values in named.items()}
            for n in SESSION_COUNTS:
                medians[f"{n} sessions × 1 word"] /= n  # per update
            medians["bytes per session"] = float(columns[column]["bytes per session"]())
            results[clock][column] = medians
    return results


def load_baseline(path: Path) -> ModuleType:
    """An earlier model/streaming.py as a module of the installed package (its relative imports resolve)."""
    name = f"{streaming.__package__}._stream_cost_baseline"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--baseline {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def steppers(loaded: LoadedModel, baseline: ModuleType | None) -> dict[str, object]:
    """The columns: each executor on the current stepper, and with --baseline on the earlier one beside it."""
    max_tokens = max(LONG + 1, loaded.config.max_tokens)
    columns = {}
    for backend in BACKENDS:
        if baseline is not None:
            columns[f"{backend} before"] = baseline.make_stream_stepper(loaded, backend, threads=1,
                                                                      max_tokens=max_tokens)
        label = f"{backend} after" if baseline is not None else backend
        columns[label] = streaming.make_stream_stepper(loaded, backend, threads=1, max_tokens=max_tokens)
    return columns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "model" / "checkpoints" / "sst2-gru")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=5, help="calls per case per round (median)")
    parser.add_argument("--baseline", type=Path, help="an earlier model/streaming.py to measure side by side")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "stream.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_checkpoint(args.model_dir)
    baseline = load_baseline(args.baseline) if args.baseline is not None else None
    load_before = os.getloadavg()[0]
    columns = {column: cases(stepper) for column, stepper in steppers(loaded, baseline).items()}
    results = measure(columns, args.rounds, args.repeats)
    for clock, by_column in results.items():
        for column, medians in by_column.items():
            print(clock, column, {k: round(v, 1) for k, v in medians.items()}, flush=True)
    write_report(args, loaded.name, results, (load_before, os.getloadavg()[0]))


def _table(results: dict[str, dict[str, float]]) -> list[str]:
    names = [name for name in next(iter(results.values())) if name != "bytes per session"]
    lines = ["| case | " + " | ".join(results) + " |", "|---|" + "---:|" * len(results)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(f"{r[name]:.1f}" for r in results.values()) + " |")
    return lines


def _ratios(results: dict[str, dict[str, float]]) -> list[str]:
    lines = ["| ratio (CPU) | " + " | ".join(results) + " |", "|---|" + "---:|" * len(results)]
    long_over_short = {b: r[f"one word, {LONG}-token session"] / r[f"one word, {SHORT}-token session"]
                       for b, r in results.items()}
    lines.append(f"| {LONG}-token / {SHORT}-token session (target ≤ 2) | "
                 + " | ".join(f"{v:.2f}" for v in long_over_short.values()) + " |")
    one = {b: r["1 sessions × 1 word"] for b, r in results.items()}
    for n in SESSION_COUNTS[1:]:
        lines.append(f"| per update at {n} sessions / at 1 | "
                     + " | ".join(f"{r[f'{n} sessions × 1 word'] / one[b]:.2f}" for b, r in results.items()) + " |")
    return lines


def write_report(args: argparse.Namespace, model: str, results: dict[str, dict[str, dict[str, float]]],
                 load: tuple[float, float]) -> None:
    command = f"python -m bench.stream_cost --rounds {args.rounds} --repeats {args.repeats}"
    if args.baseline is not None:
        command += " --baseline <model/streaming.py before>"
    lines = [
        "# Stream update cost (`make bench-stream`)",
        "",
        f"`{command}`: model `{model}`, one thread, in-process (model/streaming.py's stepper, no gRPC). "
        "Medians over interleaved rounds, µs.",
        "Session rows: one call advancing that session by one word. `N sessions × 1 word`: one batched call, "
        "divided by N (µs per update).",
        f"Machine: {os.cpu_count()} cores, load average {load[0]:.1f} before and {load[1]:.1f} after the run. "
        "CPU: the calling thread's CPU time, what an update costs a worker; wall: what the machine's load "
        "added on top (compare wall times only within one run).",
        "",
        "## CPU µs",
        "",
        *_table(results["CPU"]),
        "",
        "## Wall µs",
        "",
        *_table(results["wall"]),
        "",
        *_ratios(results["CPU"]),
    ]
    nbytes = {column: int(r["bytes per session"]) for column, r in results["CPU"].items()}
    lines += ["", "State per session, bytes of numbers (`StreamState.nbytes()`: states, pooling carry), plus the "
              "Python objects around them: " + ", ".join(f"{c} {b:,}" for c, b in nbytes.items()) + ".", ""]
    args.output.write_text("\n".join(lines))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
