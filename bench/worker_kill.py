"""kill -9 of one worker of `--workers 2` under load: failed calls, time to recover, and how long
until existing clients' calls reach the restarted worker (connection ageing, server/connections.py).

    python -m bench.worker_kill
    python -m bench.worker_kill --server-arg=--max-connection-age-seconds=0   # without ageing

`--callers` callers, each on a persistent connection of its own and without retries (every
failure is counted), call Predict in a loop. One worker is killed with SIGKILL; the supervisor
restarts it. Reported: the failed calls and their codes; seconds from the kill to the last
failed call (every call after it succeeded); seconds until the restarted worker serves; and seconds from then
until it answers a call of one of the callers (from the workers' access log).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import grpc
from grpc import aio
from prometheus_client.parser import text_string_to_metric_families

from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc

from .procstat import machine_facts
from .servers import ServerProcess, free_port, stop_servers_on_signals, wait_until_answering

PREDICT = "/rnn_sentiment.v1.SentimentService/Predict"
TEXT = "a warm , funny and beautifully acted film"


def _records(log_path: Path) -> list[dict]:
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def _stamp(record: dict) -> float:
    return datetime.strptime(record["time"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


def _ready_workers(metrics_url: str) -> float:
    try:
        with urllib.request.urlopen(metrics_url, timeout=10) as response:
            text = response.read().decode()
    except OSError:  # not listening yet
        return 0.0
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == "rnn_sentiment_ready")


async def _measure(target: str, server: ServerProcess, callers: int, watch_seconds: float) -> dict:
    codes: collections.Counter = collections.Counter()
    last_failure = [0.0]
    running = True

    async def caller(index: int) -> None:
        async with aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            stub = pb_grpc.SentimentServiceStub(channel)
            while running:
                try:
                    await stub.Predict(pb.PredictRequest(texts=[TEXT]), timeout=10)
                    codes["OK"] += 1
                except grpc.RpcError as error:
                    codes[error.code().name] += 1
                    last_failure[0] = time.time()
                    await asyncio.sleep(0.05)

    tasks = [asyncio.ensure_future(caller(i)) for i in range(callers)]
    await asyncio.sleep(3)
    records = _records(server.log_path)
    serving = {r["pid"] for r in records if r["message"] == "serving"}
    answering = collections.Counter(r["pid"] for r in records if r["message"] == "rpc" and r.get("method") == "Predict")
    victim = max(serving, key=lambda pid: answering[pid])  # the worker with the most callers
    before = dict(codes)
    killed_at = time.time()
    os.kill(victim, signal.SIGKILL)
    await asyncio.sleep(watch_seconds)
    running = False
    await asyncio.gather(*tasks)
    failed = {code: n - before.get(code, 0) for code, n in codes.items() if code != "OK" and n - before.get(code, 0)}
    records = _records(server.log_path)
    restarted = [r for r in records if r["message"] == "worker restarted"]
    new_pid = restarted[0]["worker_pid"] if restarted else None
    serving_again = [_stamp(r) for r in records if r["message"] == "serving" and r["pid"] == new_pid]
    answered_by_new = [_stamp(r) for r in records if r["message"] == "rpc" and r["pid"] == new_pid
                       and r.get("method") == "Predict"]
    return {
        "failed_calls": failed,
        # after the last failure every call succeeded: the failures' span is the time to recover
        "seconds_from_kill_to_last_failed_call": round(last_failure[0] - killed_at, 2) if failed else 0.0,
        "seconds_until_restarted_worker_serves": round(serving_again[0] - killed_at, 2) if serving_again else None,
        "seconds_from_serving_to_first_call_from_an_existing_client": (
            round(answered_by_new[0] - serving_again[0], 2) if serving_again and answered_by_new else None),
        "ok_calls": codes["OK"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--watch-seconds", type=float, default=60.0, help="how long to keep calling after the kill")
    parser.add_argument("--server-arg", action="append", default=[], help="extra `serve` argument (repeatable)")
    options = parser.parse_args(argv)
    stop_servers_on_signals()
    port, metrics_port = free_port(), free_port()
    target = f"127.0.0.1:{port}"
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    log_path = Path(tempfile.mkdtemp(prefix="bench-worker-kill-")) / "server.log"
    server = ServerProcess("rnn-sentiment", [
        sys.executable, "-m", "rnn_sentiment.cli", "serve", "--address", target,
        "--metrics-address", f"127.0.0.1:{metrics_port}", "--workers", "2", "--torch-threads", "1",
        "--log-format", "json", "--log-level", "DEBUG", *options.server_arg,
    ], log_path)
    try:
        wait_until_answering(server, target, PREDICT, pb.PredictRequest(texts=[TEXT]).SerializeToString(),
                             ready=lambda: _ready_workers(metrics_url) >= 2)
        result = asyncio.run(_measure(target, server, options.callers, options.watch_seconds))
    finally:
        server.stop()
    result = {"command": "python -m bench.worker_kill " + " ".join(argv if argv is not None else sys.argv[1:]),
              "callers": options.callers, **result, "machine": machine_facts()}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
