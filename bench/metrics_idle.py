"""Idle connections to the metrics port: the serving process's threads and fds, and a scrape, with N open.

    python -m bench.metrics_idle --connections 2000
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.servers import ServerProcess, free_port, wait_until_answering
from rnn_sentiment.v1 import sentiment_pb2 as pb


def counts(pid: int) -> tuple[int, int]:
    return len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics_idle", description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    args = parser.parse_args(argv)
    port, metrics_port = free_port(), free_port()
    target, url = f"127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
    with tempfile.TemporaryDirectory() as work:
        server = ServerProcess("metrics-idle", [
            sys.executable, "-m", "rnn_sentiment.cli", "serve", "--address", target,
            "--metrics-address", f"127.0.0.1:{metrics_port}", "--workers", "1",
        ], Path(work) / "server.log")
        try:
            wait_until_answering(server, target, "/rnn_sentiment.v1.SentimentService/Predict",
                                 pb.PredictRequest(texts=["good"]).SerializeToString())
            urllib.request.urlopen(url, timeout=10).read()
            threads_before, fds_before = counts(server.pid)
            idle = [socket.create_connection(("127.0.0.1", metrics_port), timeout=10) for _ in range(args.connections)]
            started = time.monotonic()
            body = urllib.request.urlopen(url, timeout=30).read()
            scrape_seconds = time.monotonic() - started
            threads, fds = counts(server.pid)
            print(f"{args.connections} idle connections to /metrics: threads {threads_before} -> {threads}, "
                  f"fds {fds_before} -> {fds}; a scrape meanwhile: {len(body):,} bytes in {scrape_seconds:.3f} s")
            for s in idle:
                s.close()
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
