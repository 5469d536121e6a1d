"""A burst of Predicts far beyond capacity: which statuses come back, are they counted, how fast it recovers.

    python -m bench.burst                      # our server, --workers 1 --max-queue-texts 64
    python -m bench.burst --server-arg=--max-concurrent-rpcs=0   # admission off, to compare

Phases, one server: a baseline probe (a few callers, closed loop), the burst (many connections
from several client processes, every caller in a closed loop with a deadline, for `--seconds`),
then the same probe again at once: its throughput in the first second after the burst is the
recovery figure. Statuses are tallied at the callers and compared with the server's
`grpc_server_handled_total` delta. Writes bench/results/burst.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing
import os
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import grpc
from grpc import aio

from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc

from .procstat import machine_facts, sample_tree
from .servers import ServerProcess, free_port, stop_servers_on_signals, wait_until_answering
from .texts import TEXTS

RESULTS = Path(__file__).resolve().parent / "results"
SCRATCH = RESULTS / "tmp"
PREDICT = "/rnn_sentiment.v1.SentimentService/Predict"
# Each channel its own TCP connection: without a local subchannel pool, channels to one
# target share one connection, which is not "many callers".
SEPARATE_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)
BIN_SECONDS = 0.1
# The server counts a call just after answering it: wait before the last reading.
FLUSH_WAIT_SECONDS = 1.0


@dataclass
class CallerTally:
    """What one client process saw: statuses by name and OK answers per BIN_SECONDS from `start`."""

    codes: collections.Counter = field(default_factory=collections.Counter)
    ok_bins: collections.Counter = field(default_factory=collections.Counter)
    retry_info: int = 0  # RESOURCE_EXHAUSTED answers that carried a google.rpc.RetryInfo
    details: collections.Counter = field(default_factory=collections.Counter)  # "CODE: details" of failures

    def merge(self, other: "CallerTally") -> None:
        self.codes.update(other.codes)
        self.ok_bins.update(other.ok_bins)
        self.retry_info += other.retry_info
        self.details.update(other.details)


def _has_retry_info(error: grpc.aio.AioRpcError) -> bool:
    from google.rpc import error_details_pb2, status_pb2

    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            return any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status.details)
    return False


async def _callers(target: str, connections: int, streams: int, seconds: float, timeout: float,
                   texts: int, ready: Callable[[], None] = lambda: None) -> CallerTally:
    """Connect, call `ready()` (blocking: it waits for the other client processes), then load."""
    tally = CallerTally()
    request = pb.PredictRequest(texts=list(TEXTS[:texts]))
    channels = [aio.insecure_channel(target, options=SEPARATE_CONNECTION) for _ in range(connections)]

    async def caller(stub: pb_grpc.SentimentServiceStub, start: float, stop_at: float) -> None:
        # Closed loop: a caller sends its next call when the previous one ends; calls in flight
        # when the burst ends are left to finish (cancelling them here would be our CANCELLED).
        while time.time() < stop_at:
            try:
                await stub.Predict(request, timeout=timeout)
                tally.codes["OK"] += 1
                tally.ok_bins[int((time.time() - start) / BIN_SECONDS)] += 1
            except aio.AioRpcError as error:
                tally.codes[error.code().name] += 1
                tally.details[f"{error.code().name}: {error.details()}"] += 1
                if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and _has_retry_info(error):
                    tally.retry_info += 1

    try:
        await asyncio.gather(*(c.channel_ready() for c in channels))
        await asyncio.to_thread(ready)
        start = time.time()
        await asyncio.gather(*(caller(pb_grpc.SentimentServiceStub(c), start, start + seconds)
                               for c in channels for _ in range(streams)))
    finally:
        await asyncio.gather(*(c.close() for c in channels))
    return tally


def _caller_process(barrier: Any, results: Any, args: tuple) -> None:
    results.put(asyncio.run(_callers(*args, ready=barrier.wait)))


def run_callers(target: str, processes: int, connections: int, streams: int, seconds: float,
                timeout: float, texts: int) -> CallerTally:
    """Run `processes` client processes, all connected before any starts calling; merge their tallies."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    arguments = (target, connections, streams, seconds, timeout, texts)
    workers = [context.Process(target=_caller_process, args=(barrier, results, arguments)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    merged = CallerTally()
    for _ in workers:
        merged.merge(results.get(timeout=seconds + timeout + 120))
    for worker in workers:
        worker.join()
    return merged


def handled_by_code(metrics_url: str) -> collections.Counter:
    """grpc_server_handled_total for Predict, by grpc_code, read from /metrics."""
    counts: collections.Counter = collections.Counter()
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("grpc_server_handled_total{") and 'grpc_method="Predict"' in line:
                code = line.split('grpc_code="', 1)[1].split('"', 1)[0]
                counts[code] += int(float(line.rsplit(" ", 1)[1]))
    return counts


@dataclass
class BurstResult:
    command: str
    server_args: list[str]
    processes: int
    connections: int
    concurrency: int
    seconds: float
    timeout_s: float
    texts_per_request: int
    calls: int
    codes: dict[str, int]
    other: int  # neither OK nor RESOURCE_EXHAUSTED
    resource_exhausted_with_retry_info: int
    server_handled: dict[str, int]  # grpc_server_handled_total delta over the burst
    failure_details: dict[str, int]  # the commonest "CODE: details" the callers saw
    baseline_rps: float  # the probe's OK/s before the burst
    recovery_rps_first_second: float  # the probe's OK/s in the first second after the burst
    recovery_rps_second_second: float
    server_rss_mb_before: float
    server_rss_mb_after: float
    load_average_1m: tuple[float, float]  # the machine's, before and after: others' work shows here
    machine: dict


async def _probe(target: str, seconds: float, callers: int, texts: int) -> CallerTally:
    return await _callers(target, callers, 1, seconds, 5.0, texts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--connections", type=int, default=32, help="connections per client process")
    parser.add_argument("--streams", type=int, default=16, help="callers per connection")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=5.0, help="each call's deadline in seconds")
    parser.add_argument("--texts", type=int, default=8, help="texts per Predict")
    parser.add_argument("--server-arg", action="append", default=[], help="extra `serve` argument (repeatable)")
    parser.add_argument("--out", default=str(RESULTS / "burst"), help="output path without extension")
    options = parser.parse_args(argv)
    stop_servers_on_signals()

    port, metrics_port = free_port(), free_port()
    target = f"127.0.0.1:{port}"
    server_args = ["--workers", "1", "--max-queue-texts", "64", "--torch-threads", "1", *options.server_arg]
    # The server's log is scratch: bench/results/tmp/, which git ignores.
    log_path = SCRATCH / (Path(options.out).name + ".server.log")
    log_path.parent.mkdir(exist_ok=True)
    server = ServerProcess("rnn-sentiment", [
        sys.executable, "-m", "rnn_sentiment.cli", "serve", "--address", target,
        "--metrics-address", f"127.0.0.1:{metrics_port}", "--log-format", "json", *server_args,
    ], log_path)
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        wait_until_answering(server, target, PREDICT, pb.PredictRequest(texts=list(TEXTS[:options.texts])).SerializeToString())
        probe = asyncio.run(_probe(target, 2.0, 4, options.texts))
        baseline_rps = probe.codes["OK"] / 2.0
        time.sleep(FLUSH_WAIT_SECONDS)
        before = handled_by_code(metrics_url)
        rss_before = sample_tree(server.pid).rss_bytes / 2**20
        load_before = os.getloadavg()[0]
        tally = run_callers(target, options.processes, options.connections, options.streams,
                                   options.seconds, options.timeout, options.texts)
        recovery = asyncio.run(_probe(target, 2.0, 4, options.texts))
        rss_after = sample_tree(server.pid).rss_bytes / 2**20
        load_after = os.getloadavg()[0]
        time.sleep(FLUSH_WAIT_SECONDS)
        after = handled_by_code(metrics_url)
    finally:
        server.stop()
    codes = dict(tally.codes)
    result = BurstResult(
        command="python -m bench.burst " + " ".join(argv if argv is not None else sys.argv[1:]),
        server_args=server_args, processes=options.processes, connections=options.processes * options.connections,
        concurrency=options.processes * options.connections * options.streams, seconds=options.seconds,
        timeout_s=options.timeout, texts_per_request=options.texts, calls=sum(codes.values()), codes=codes,
        other=sum(n for code, n in codes.items() if code not in ("OK", "RESOURCE_EXHAUSTED")),
        resource_exhausted_with_retry_info=tally.retry_info,
        # The recovery probe's calls are counted too: take them out, the rest is the burst's.
        server_handled={code: n for code in after
                        if (n := after[code] - before[code] - recovery.codes.get(code.upper(), 0))},
        failure_details=dict(tally.details.most_common(8)),
        baseline_rps=round(baseline_rps, 1), recovery_rps_first_second=float(sum(n for b, n in recovery.ok_bins.items() if b < 10)),
        recovery_rps_second_second=float(sum(n for b, n in recovery.ok_bins.items() if 10 <= b < 20)),
        server_rss_mb_before=round(rss_before, 1), server_rss_mb_after=round(rss_after, 1),
        load_average_1m=(round(load_before, 1), round(load_after, 1)),
        machine=machine_facts(),
    )
    Path(options.out + ".json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    Path(options.out + ".md").write_text(render(result))
    print(render(result))
    return 0


def render(result: BurstResult) -> str:
    codes = ", ".join(f"{code} {n:,}" for code, n in sorted(result.codes.items()))
    handled = ", ".join(f"{code} {n:,}" for code, n in sorted(result.server_handled.items()))
    return "\n".join([
        "# Burst", "",
        f"`{result.command}` — server `serve {' '.join(result.server_args)}`, "
        f"{result.machine.get('nproc')} CPUs ({result.machine.get('cpu_model')}), load average "
        f"{result.load_average_1m[0]:g} before / {result.load_average_1m[1]:g} after (the client processes and "
        "whatever else runs on the machine).", "",
        "| burst | calls | OK | RESOURCE_EXHAUSTED (with RetryInfo) | other | server handled_total | "
        "probe OK/s before | probe OK/s, first / second second after | server RSS MB before / after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {result.concurrency} callers on {result.connections} connections, {result.seconds:g} s, "
        f"{result.texts_per_request} texts, deadline {result.timeout_s:g} s | {result.calls:,} | "
        f"{result.codes.get('OK', 0):,} | {result.codes.get('RESOURCE_EXHAUSTED', 0):,} "
        f"({result.resource_exhausted_with_retry_info:,}) | {result.other:,} | {handled} | "
        f"{result.baseline_rps:g} | {result.recovery_rps_first_second:g} / {result.recovery_rps_second_second:g} | "
        f"{result.server_rss_mb_before:g} / {result.server_rss_mb_after:g} |", "",
        f"All statuses at the callers: {codes}.", "",
        "Commonest failures: " + "; ".join(f"{d} ({n:,})" for d, n in result.failure_details.items()) + ".", "",
    ])


if __name__ == "__main__":
    raise SystemExit(main())
