"""Whole-server A/B of two commits: one-text Predict req/s under h2load, in interleaved rounds.

    python -m bench.commit_ab REV_A REV_B [--rounds 4] [--concurrency 32] [--seconds 8]

Each revision is checked out as a git worktree under build/commit-ab/ and imported through a
folder of symlinks that lays it out as the `rnn_sentiment` package (the editable install maps the
working tree's folders the same way), so both run on this .venv's dependencies. Per round, each
revision's server (`rnn-sentiment serve`, its defaults: one worker per core) starts, waits for
SERVING, takes a 2 s warm-up and a measured run, and stops; A and B alternate, so a neighbour's
load lands on both alike. Prints each round and the paired differences (B − A): with interleaved
rounds on a shared machine, a difference of one sign in every round says more than the medians.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rnn_sentiment.v1 import sentiment_pb2 as pb

from .texts import ONE_TEXT
from .wire import grpc_frame

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "build" / "commit-ab"
# The editable install's layout (pyproject.toml package-dir): package -> folder of the tree.
PACKAGE_FOLDERS = {"model": "model", "server": "server", "client": "client", "cli": "cli",
                   "v1": "proto/rnn_sentiment/v1", "inference": "proto/inference"}


def commit_of(revision: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{revision}^{{commit}}"],
                          check=True, capture_output=True, text=True).stdout.strip()


def importable_tree(revision: str, work: Path = WORK) -> Path:
    """A folder whose rnn_sentiment package is `revision`'s code (for PYTHONPATH). The worktree
    under `work` stays for the next run of the same commit; `discard_tree` removes it."""
    commit = commit_of(revision)  # a folder per commit: a branch name such as HEAD moves
    worktree = work / "worktrees" / commit
    if not worktree.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-f", "--detach", str(worktree), commit],
                       check=True, capture_output=True)
    root = work / "trees" / commit
    package = root / "rnn_sentiment"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").touch()
    for name, folder in PACKAGE_FOLDERS.items():
        link = package / name
        if (worktree / folder).exists() and not link.exists():
            link.symlink_to(worktree / folder)
    return root


def discard_tree(revision: str, work: Path = WORK) -> None:
    """Remove `revision`'s worktree under `work` and git's record of it."""
    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                    str(work / "worktrees" / commit_of(revision))], check=True, capture_output=True)


def measure(tree: Path, port: int, concurrency: int, seconds: int, body: Path) -> float:
    """Requests per second of one server started from `tree`."""
    server = subprocess.Popen(
        [sys.executable, "-m", "rnn_sentiment.cli", "serve", "--address", f"127.0.0.1:{port}", "--metrics-address", ""],
        env={**os.environ, "PYTHONPATH": str(tree)}, cwd=WORK, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 300
            while True:
                try:
                    if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server from {tree} never turned SERVING")
                time.sleep(0.2)
        base = ["h2load", "-t", "1", "-c", str(concurrency), "-m", "1", "-d", str(body),
                "-H", "content-type: application/grpc", "-H", "te: trailers"]
        url = f"http://127.0.0.1:{port}/rnn_sentiment.v1.SentimentService/Predict"
        subprocess.run([*base, "-D", "2", url], capture_output=True, check=True)
        out = subprocess.run([*base, "-D", str(seconds), url], capture_output=True, text=True, check=True).stdout
        found = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)
        if found is None:
            raise RuntimeError(f"no req/s in h2load's output:\n{out[-1000:]}")
        return float(found.group(1))
    finally:
        server.terminate()
        server.wait(60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.commit_ab", description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    body = WORK / "predict.bin"
    body.write_bytes(grpc_frame(pb.PredictRequest(texts=[ONE_TEXT]).SerializeToString()))
    trees = {args.a: importable_tree(args.a), args.b: importable_tree(args.b)}
    rates: dict[str, list[float]] = {args.a: [], args.b: []}
    for round_number in range(1, args.rounds + 1):
        for index, (revision, tree) in enumerate(trees.items()):
            rates[revision].append(measure(tree, 50151 + index, args.concurrency, args.seconds, body))
        print(f"round {round_number}: " + ", ".join(f"{r} {v[-1]:,.0f} req/s" for r, v in rates.items()), flush=True)
    differences = [b - a for a, b in zip(rates[args.a], rates[args.b])]
    for revision, values in rates.items():
        print(f"{revision}: median {statistics.median(values):,.0f} req/s, {min(values):,.0f}-{max(values):,.0f}")
    print(f"B - A per round: {', '.join(f'{d:+,.0f}' for d in differences)} "
          f"({sum(d > 0 for d in differences)} of {len(differences)} rounds B ahead)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
