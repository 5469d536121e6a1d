"""Drain under load: callers in a loop, SIGTERM to the server, and the status of every call.

    python -m bench.drain --runs 10 --workers 1
    python -m bench.drain --runs 10 --workers 2

Each run starts a server (the shipped models), lets `--callers` callers (each on a connection
of its own) call Predict in a loop for `--warm-seconds`, sends SIGTERM to the server's main
process (as docker and Kubernetes do) and keeps calling until it has exited. A drain that
loses nothing answers every call OK or UNAVAILABLE (which clients retry); the target for
CANCELLED and every other code is 0.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from grpc import aio

from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc

from .procstat import machine_facts
from .servers import ServerProcess, free_port, stop_servers_on_signals, wait_until_answering

RESULTS = Path(__file__).resolve().parent / "results"
PREDICT = "/rnn_sentiment.v1.SentimentService/Predict"
TEXT = "a warm , funny and beautifully acted film"


@dataclass
class DrainRun:
    workers: int
    codes: dict[str, int]
    exit_code: int | None
    seconds_to_exit: float  # from SIGTERM to the server's exit


async def _call_until(target: str, stop_at: list[float], codes: collections.Counter) -> None:
    # A channel of its own subchannel pool: a connection of its own, so with `--workers 2`
    # the kernel spreads the callers over both workers.
    async with aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        stub = pb_grpc.SentimentServiceStub(channel)
        while time.monotonic() < stop_at[0]:
            try:
                await stub.Predict(pb.PredictRequest(texts=[TEXT]), timeout=5)
                codes["OK"] += 1
            except grpc.RpcError as error:
                codes[error.code().name] += 1
                await asyncio.sleep(0.01)  # a refused connection fails at once: do not spin


async def _load_and_terminate(target: str, server: ServerProcess, callers: int, warm_seconds: float) -> tuple[
        collections.Counter, float]:
    codes: collections.Counter = collections.Counter()
    stop_at = [float("inf")]
    tasks = [asyncio.ensure_future(_call_until(target, stop_at, codes)) for _ in range(callers)]
    await asyncio.sleep(warm_seconds)
    server.process.send_signal(signal.SIGTERM)
    terminated = time.monotonic()
    while server.alive():
        await asyncio.sleep(0.05)
    exited = time.monotonic()
    stop_at[0] = exited + 0.5  # and half a second of calls to the stopped server
    await asyncio.gather(*tasks)
    return codes, exited - terminated


def one_run(workers: int, callers: int, warm_seconds: float, log_dir: Path, index: int,
            server_args: list[str]) -> DrainRun:
    port = free_port()
    target = f"127.0.0.1:{port}"
    server = ServerProcess("rnn-sentiment", [
        sys.executable, "-m", "rnn_sentiment.cli", "serve", "--address", target, "--metrics-address", "",
        "--workers", str(workers), "--torch-threads", "1", "--log-format", "json", *server_args,
    ], log_dir / f"drain-w{workers}-{index}.server.log")
    try:
        wait_until_answering(server, target, PREDICT, pb.PredictRequest(texts=[TEXT]).SerializeToString())
        codes, seconds = asyncio.run(_load_and_terminate(target, server, callers, warm_seconds))
    finally:
        server.stop()
    return DrainRun(workers, dict(codes), server.process.returncode, round(seconds, 2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--callers", type=int, default=50)
    parser.add_argument("--warm-seconds", type=float, default=1.5, help="calls before SIGTERM")
    parser.add_argument("--server-arg", action="append", default=[], help="extra `serve` argument (repeatable)")
    parser.add_argument("--out", default="", help="write the runs as JSON here")
    options = parser.parse_args(argv)
    stop_servers_on_signals()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-drain-"))  # the servers' logs, for a run that goes wrong
    runs = []
    for index in range(options.runs):
        run = one_run(options.workers, options.callers, options.warm_seconds, log_dir, index, options.server_arg)
        runs.append(run)
        print(json.dumps(asdict(run)), flush=True)
    totals: collections.Counter = collections.Counter()
    for run in runs:
        totals.update(run.codes)
    cancelled_per_run = [run.codes.get("CANCELLED", 0) for run in runs]
    other = sum(n for code, n in totals.items() if code not in ("OK", "UNAVAILABLE", "CANCELLED"))
    summary = {
        "command": "python -m bench.drain " + " ".join(argv if argv is not None else sys.argv[1:]),
        "workers": options.workers, "callers": options.callers, "runs": len(runs),
        "cancelled_total": sum(cancelled_per_run), "cancelled_per_run": cancelled_per_run,
        "other_codes": other, "codes": dict(totals),
        "exit_codes": [run.exit_code for run in runs],
        "seconds_to_exit_max": max(run.seconds_to_exit for run in runs),
        "machine": machine_facts(),
    }
    print(json.dumps(summary))
    if options.out:
        Path(options.out).write_text(json.dumps({"summary": summary, "runs": [asdict(r) for r in runs]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
