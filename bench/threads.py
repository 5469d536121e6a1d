"""Where a request's CPU goes, by thread: our server under h2load, each thread's CPU time from /proc.

    python -m bench.threads [--concurrency 32] [--seconds 8] [--flags "--workers 2"]

Starts `rnn-sentiment serve` (its defaults unless --flags), waits for SERVING, warms up 2 s, then
reads every thread's utime+stime (/proc/PID/task/TID/stat) of the server's process tree before and
after an h2load run of one-text Predict calls, and prints the CPU per answered request by thread
name (the event loop is the process's main thread; gRPC's, ONNX Runtime's and the model thread
carry their own names). This is the "what is left between our server and the bound, by thread" of
docs/performance.md; the numbers go there and to bench/results/, never into this docstring.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .procstat import tree_pids
from .servers import free_port
from .texts import ONE_TEXT
from .wire import grpc_frame

from rnn_sentiment.v1 import sentiment_pb2 as pb

TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu(pids: list[int]) -> Counter[str]:
    """CPU seconds so far of every thread of `pids`, summed by (process role, thread name)."""
    seconds: Counter[str] = Counter()
    for pid in pids:
        role = "supervisor" if pid == pids[0] and len(pids) > 1 else "worker"
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            except FileNotFoundError:
                continue
            name = stat[stat.index("(") + 1: stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            name = "event loop (main thread)" if tid == str(pid) else re.sub(r"[\d_-]+$", "", name) or name
            if name == "python":  # CPython names no OS thread: the model thread and any executor's
                name = "model thread (and other Python threads)"
            seconds[f"{role}: {name}"] += (int(fields[11]) + int(fields[12])) / TICKS
    return seconds


def wait_serving(target: str, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"{target} never turned SERVING")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.threads", description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--flags", default="--workers 2", help="serve flags (default: --workers 2)")
    args = parser.parse_args(argv)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "rnn_sentiment.cli", "serve", "--address", f"127.0.0.1:{port}",
                               "--metrics-address", "", *shlex.split(args.flags)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_serving(f"127.0.0.1:{port}")
        with tempfile.NamedTemporaryFile(suffix=".bin") as body:
            body.write(grpc_frame(pb.PredictRequest(texts=[ONE_TEXT]).SerializeToString()))
            body.flush()
            base = ["h2load", "-t", "1", "-c", str(min(args.concurrency, 32)), "-m", str(max(1, args.concurrency // 32)),
                    "-d", body.name, "-H", "content-type: application/grpc", "-H", "te: trailers",
                    f"http://127.0.0.1:{port}/rnn_sentiment.v1.SentimentService/Predict"]
            subprocess.run([*base, "-D", "2"], capture_output=True, check=True)
            pids = tree_pids(server.pid)
            before = thread_cpu(pids)
            out = subprocess.run([*base, "-D", str(args.seconds)], capture_output=True, text=True, check=True).stdout
            after = thread_cpu(pids)
        done = int(re.search(r"(\d+) succeeded", out).group(1))
        rps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1))
        print(f"concurrency {args.concurrency}, {rps:,.0f} req/s ({done:,} answered), flags {args.flags!r}, "
              f"load average at the end {os.getloadavg()[0]:.2f}")
        print("| thread | µs CPU per request |\n| --- | ---: |")
        total = 0.0
        for name in sorted(after, key=lambda n: -(after[n] - before.get(n, 0.0))):
            per_request = (after[name] - before.get(name, 0.0)) / done * 1e6
            total += per_request
            if per_request >= 0.5:
                print(f"| {name} | {per_request:,.0f} |")
        print(f"| all | {total:,.0f} |")
    finally:
        server.terminate()
        server.wait(60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
