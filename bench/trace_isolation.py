"""make bench-isolation: does a client looping the heaviest allowed Trace slow Predict on the same worker?

    python -m bench.trace_isolation [--seconds 8] [--rounds 3] [--callers 4] [--model sst2-gru]

One server (`--workers 1`), closed-loop Predict callers (one text each, one process), and in
"with" rounds a second process looping the heaviest Trace the limits allow on the same model
(64 tokens, every attribution, integrated gradients at 8192 / 64 = 128 steps, memory profile,
hidden states). Rounds alternate without / with, so drift on a shared machine hits both; the
medians over rounds are compared. Target: Predict p99 with the Trace loop <= 2x without.

Also the trace's slices, in-process on the same model: how many, and how long the largest is
(what a Predict batch can wait behind). Results: bench/results/trace_isolation.{json,md}.
Never part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shlex
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import grpc

from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc

from .procstat import machine_facts
from .report import fmt, markdown_table, write_results
from .servers import ServerProcess, free_port
from .texts import ONE_TEXT

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGET_RATIO = 2.0
HEAVIEST_TOKENS = 64


def heaviest_trace(model: str) -> pb.TraceRequest:
    """The heaviest trace model/trace.py's limits allow on a 64-token text (every SST-2 sentence fits)."""
    from rnn_sentiment.model.trace import MAX_INTEGRATED_GRADIENTS_TOKEN_STEPS

    words = " ".join((["so", "good", "but", "bad"] * HEAVIEST_TOKENS)[:HEAVIEST_TOKENS])
    return pb.TraceRequest(
        text=words, model=model, include_hidden_states=True, include_memory_profile=True, all_layers=True,
        attributions=[pb.ATTRIBUTION_METHOD_PREFIX, pb.ATTRIBUTION_METHOD_GRADIENT_X_INPUT,
                      pb.ATTRIBUTION_METHOD_INTEGRATED_GRADIENTS, pb.ATTRIBUTION_METHOD_OCCLUSION],
        integrated_gradients_steps=MAX_INTEGRATED_GRADIENTS_TOKEN_STEPS // HEAVIEST_TOKENS)


def start_server(work_dir: Path) -> tuple[ServerProcess, str]:
    port, metrics_port = free_port(), free_port()
    target = f"127.0.0.1:{port}"
    command = [sys.executable, "-m", "rnn_sentiment.cli", "serve", "--address", target,
               "--metrics-address", f"127.0.0.1:{metrics_port}", "--workers", "1"]
    server = ServerProcess("rnn-sentiment --workers 1", command, work_dir / "server.log")
    deadline = time.monotonic() + 120
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.SentimentServiceStub(channel)
        while True:
            try:
                stub.Predict(pb.PredictRequest(texts=[ONE_TEXT]), timeout=2)
                return server, target
            except grpc.RpcError:
                if time.monotonic() > deadline or not server.alive():
                    raise RuntimeError(f"the server did not answer:\n{server.log_tail()}") from None
                time.sleep(0.2)


async def predict_round(target: str, model: str, seconds: float, callers: int) -> dict:
    """`callers` closed loops of one-text Predicts for `seconds`: latencies and errors."""
    latencies: list[float] = []
    errors = 0
    request = pb.PredictRequest(texts=[ONE_TEXT], model=model)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.SentimentServiceStub(channel)
        await stub.Predict(request, timeout=10)  # the channel is connected before the clock starts
        stop = time.perf_counter() + seconds

        async def caller() -> None:
            nonlocal errors
            while (started := time.perf_counter()) < stop:
                try:
                    await stub.Predict(request, timeout=10)
                    latencies.append(time.perf_counter() - started)
                except grpc.aio.AioRpcError:
                    errors += 1

        await asyncio.gather(*(caller() for _ in range(callers)))
    latencies.sort()
    return {"requests": len(latencies), "errors": errors,
            "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "max_ms": 1000 * latencies[-1]}


def trace_loop(target: str, model: str, stop, done, failed, seconds_total) -> None:  # type: ignore[no-untyped-def]
    """In its own process: Trace the heaviest allowed request back to back until `stop` is set."""
    request = heaviest_trace(model)
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.SentimentServiceStub(channel)
        while not stop.is_set():
            started = time.perf_counter()
            try:
                stub.Trace(request, timeout=120)
                with done.get_lock():
                    done.value += 1
                with seconds_total.get_lock():
                    seconds_total.value += time.perf_counter() - started
            except grpc.RpcError:
                with failed.get_lock():
                    failed.value += 1


def slice_profile(model: str, repeats: int) -> dict:
    """The heaviest trace's slices in-process, as the server cuts them: count, total and largest."""
    import torch

    from rnn_sentiment.model.backends import make_predictor
    from rnn_sentiment.model.checkpoint import load_checkpoint
    from rnn_sentiment.model.inference import encode_texts
    from rnn_sentiment.model.trace import TRACE_SLICE_MACS, TraceOptions, trace_slices

    torch.set_num_threads(1)
    loaded = load_checkpoint(Path(__file__).resolve().parent.parent / "model" / "checkpoints" / model)
    predictor = make_predictor(loaded, "auto", threads=1)
    request = heaviest_trace(model)
    (encoded,) = encode_texts([request.text], loaded.vocab, loaded.config.max_tokens)
    options = TraceOptions(attributions=("prefix", "gradient_x_input", "integrated_gradients", "occlusion"),
                           integrated_gradients_steps=request.integrated_gradients_steps, all_layers=True,
                           memory=True)
    runs = []
    for _ in range(repeats):
        # CPU seconds of this thread per slice: on a shared machine a slice's wall time also
        # counts the time other processes held the core, which no slice size changes.
        cpu: list[float] = []
        wall: list[float] = []

        def timed(work) -> bool:  # type: ignore[no-untyped-def]
            started_cpu, started_wall = time.thread_time(), time.perf_counter()
            try:
                work()
                return True
            except StopIteration:
                return False
            finally:
                cpu.append(time.thread_time() - started_cpu)
                wall.append(time.perf_counter() - started_wall)

        states = []
        timed(lambda: states.append(predictor.step_states(encoded)))  # the server's first slice
        slices = trace_slices(loaded, encoded, options, states[0], TRACE_SLICE_MACS)
        while timed(lambda: next(slices)):
            pass
        cpu.sort()
        wall.sort()
        runs.append({"slices": len(cpu), "cpu_total_ms": 1000 * sum(cpu), "cpu_p50_ms": 1000 * cpu[len(cpu) // 2],
                     "cpu_p99_ms": 1000 * cpu[int(len(cpu) * 0.99)], "cpu_largest_ms": 1000 * cpu[-1],
                     "wall_total_ms": 1000 * sum(wall), "wall_largest_ms": 1000 * wall[-1]})
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]} | {
        "slice_macs": TRACE_SLICE_MACS, "tokens": len(encoded.ids), "repeats": repeats}


def run(args: argparse.Namespace) -> dict:
    work_dir = Path(tempfile.mkdtemp(prefix="trace-isolation-"))
    load_before = os.getloadavg()[0]
    server, target = start_server(work_dir)
    context = multiprocessing.get_context("spawn")
    rounds: list[dict] = []
    try:
        for index in range(args.rounds):
            for with_trace in (False, True):
                stop = context.Event()
                done, failed = context.Value("i", 0), context.Value("i", 0)
                seconds_total = context.Value("d", 0.0)
                looper = None
                if with_trace:
                    looper = context.Process(target=trace_loop,
                                             args=(target, args.model, stop, done, failed, seconds_total))
                    looper.start()
                    time.sleep(1.0)  # the loop's first trace is under way before Predict is timed
                result = asyncio.run(predict_round(target, args.model, args.seconds, args.callers))
                if looper is not None:
                    stop.set()
                    looper.join(timeout=180)
                    if looper.is_alive():
                        looper.terminate()
                result |= {"round": index + 1, "trace_loop": with_trace, "traces_done": done.value,
                           "traces_failed": failed.value,
                           "trace_mean_s": seconds_total.value / done.value if done.value else None}
                rounds.append(result)
                print(("with   " if with_trace else "without"), fmt(result["p50_ms"], 2), fmt(result["p99_ms"], 2),
                      result["requests"], "traces", done.value, flush=True)
    finally:
        server.stop()
    without = [r for r in rounds if not r["trace_loop"]]
    with_loop = [r for r in rounds if r["trace_loop"]]
    summary = {
        "without_p50_ms": statistics.median(r["p50_ms"] for r in without),
        "without_p99_ms": statistics.median(r["p99_ms"] for r in without),
        "with_p50_ms": statistics.median(r["p50_ms"] for r in with_loop),
        "with_p99_ms": statistics.median(r["p99_ms"] for r in with_loop),
        # A closed loop records few calls while the model is stalled (its callers are all
        # waiting), so a stall hardly moves p99; the slowest call and the errors show it.
        "without_max_ms": max(r["max_ms"] for r in without),
        "with_max_ms": max(r["max_ms"] for r in with_loop),
        "without_errors": sum(r["errors"] for r in without),
        "with_errors": sum(r["errors"] for r in with_loop),
    }
    summary["p99_ratio"] = summary["with_p99_ms"] / summary["without_p99_ms"]
    summary["pass"] = summary["p99_ratio"] <= TARGET_RATIO
    return {"command": shlex.join(["python", "-m", "bench.trace_isolation", *sys.argv[1:]]),
            "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine_facts(),
            "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
            "settings": {"seconds": args.seconds, "rounds": args.rounds, "callers": args.callers, "model": args.model},
            "rounds": rounds, "summary": summary,
            "slices": slice_profile(args.model, repeats=3)}


def markdown(document: dict) -> str:
    summary, slices, settings = document["summary"], document["slices"], document["settings"]
    machine = document["machine"]
    rows = [[r["round"], "with" if r["trace_loop"] else "without", r["requests"], r["errors"], fmt(r["p50_ms"], 2),
             fmt(r["p99_ms"], 2), fmt(r["max_ms"]), r["traces_done"] if r["trace_loop"] else "–",
             fmt(r["trace_mean_s"], 2) if r["trace_loop"] else "–"] for r in document["rounds"]]
    verdict = "PASS" if summary["pass"] else "FAIL"
    return "\n".join([
        "# Trace isolation: Predict latency beside a looping heavy Trace",
        "",
        f"`{document['command']}` ({document['when']}; {machine['nproc']} CPUs, {machine['cpu_model']}; one "
        f"server `--workers 1`, {settings['callers']} closed-loop Predict callers of one text, "
        f"{settings['seconds']:g} s per round, rounds alternating; 1-minute load average "
        f"{document['load_average_1min']['before']:.1f} before, {document['load_average_1min']['after']:.1f} after).",
        "",
        f"With a client looping the heaviest allowed Trace ({HEAVIEST_TOKENS} tokens, every attribution, "
        f"integrated gradients at {heaviest_trace('').integrated_gradients_steps} steps, memory profile, hidden "
        "states) on the same model:",
        "",
        markdown_table(["", "Predict p50 ms", "Predict p99 ms", "slowest Predict ms", "errors"], [
            ["without the Trace loop (p50, p99: median of rounds)", fmt(summary["without_p50_ms"], 2),
             fmt(summary["without_p99_ms"], 2), fmt(summary["without_max_ms"]), summary["without_errors"]],
            ["with the Trace loop", fmt(summary["with_p50_ms"], 2), fmt(summary["with_p99_ms"], 2),
             fmt(summary["with_max_ms"]), summary["with_errors"]],
        ]),
        "",
        f"**p99 with / without: {summary['p99_ratio']:.2f}x (target <= {TARGET_RATIO:g}x): {verdict}.**",
        "",
        f"The trace's slices in-process, as the server runs them (median of {slices['repeats']} runs, "
        f"{slices['tokens']} tokens, budget {slices['slice_macs']:,} recurrent multiply-accumulates a slice): "
        f"{fmt(slices['slices'])} slices, {fmt(slices['cpu_total_ms'])} ms of CPU in all; CPU per slice p50 "
        f"{fmt(slices['cpu_p50_ms'], 2)} ms, p99 {fmt(slices['cpu_p99_ms'], 2)} ms, **largest "
        f"{fmt(slices['cpu_largest_ms'], 2)} ms**. Wall clock, which on a shared machine adds the time other "
        f"processes held the core: {fmt(slices['wall_total_ms'])} ms in all, largest slice "
        f"{fmt(slices['wall_largest_ms'], 2)} ms.",
        "",
        "Every round:",
        "",
        markdown_table(["round", "Trace loop", "Predicts", "errors", "p50 ms", "p99 ms", "max ms", "traces done",
                        "trace mean s"], rows),
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each round (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind, alternating (default 3)")
    parser.add_argument("--callers", type=int, default=4, help="concurrent Predict callers (default 4)")
    parser.add_argument("--model", default="sst2-gru", help="the model both clients call (default sst2-gru)")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    document = run(args)
    json_path, md_path = write_results(args.output_dir, "trace_isolation", document, markdown(document))
    print(markdown(document))
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
