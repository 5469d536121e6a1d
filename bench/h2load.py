"""Drive one gRPC unary method with h2load and measure the server process tree meanwhile.

h2load leaves far more CPU to the server than a Python client would, which matters on small
machines. Percentiles come from its --log-file (one line per request: start time, HTTP status,
microseconds to the end of the response). h2load does not read gRPC trailers, so a call that
failed with a gRPC status (HTTP 200, no message) is found by the response bytes instead: every
successful answer to the same request has the same size, checked once before the load.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .procstat import machine_busy_seconds, sample_tree
from .wire import GRPC_HEADERS

INSTALL_SCRIPT = Path(__file__).with_name("install-h2load.sh")


def ensure_h2load() -> str:
    """The h2load path, installing nghttp2-client first when missing (root + apt only)."""
    found = shutil.which("h2load")
    if found:
        return found
    subprocess.run(["bash", str(INSTALL_SCRIPT)], check=True)
    found = shutil.which("h2load")
    if not found:
        raise RuntimeError("h2load is still missing after bench/install-h2load.sh")
    return found


@dataclass(frozen=True)
class LoadShape:
    """How concurrency is made: `connections` HTTP/2 connections x `streams` calls in flight on each."""

    concurrency: int
    connections: int
    streams: int

    @classmethod
    def for_concurrency(cls, concurrency: int, max_connections: int = 32) -> "LoadShape":
        # One connection per caller up to 32 (many client processes with a channel each, as in
        # production, and enough connections for SO_REUSEPORT to spread them over workers);
        # beyond that, several calls in flight per connection.
        connections = min(concurrency, max_connections)
        return cls(concurrency, connections, math.ceil(concurrency / connections))


@dataclass
class LoadResult:
    label: str
    concurrency: int
    connections: int
    streams: int
    texts_per_request: int
    duration_s: float  # measured phase only
    requests: int  # completed in the measured phase, logged by h2load
    ok: int  # HTTP 200 with a full gRPC message
    errors: int  # everything else: non-200, failed/errored/timed out streams, gRPC errors
    rps: float  # successful requests per second
    texts_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    server_cpu_cores: float  # server tree CPU seconds per second of the measured run
    server_rss_mb: float  # whole tree, at the end
    server_max_worker_rss_mb: float  # the largest process of the tree, at the end
    server_processes: int
    loadgen_cpu_cores: float  # h2load, over the measured run
    other_cpu_cores: float  # machine busy time not from the server or h2load (others' work)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


_SUMMARY = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout"
)
_TRAFFIC_DATA = re.compile(r"traffic: .*?\((\d+)\) data")


def run_h2load(
    *,
    label: str,
    url: str,
    body_file: Path,
    shape: LoadShape,
    response_bytes: int,
    texts_per_request: int,
    server_pid: int,
    work_dir: Path,
    warmup_s: float = 0.0,
    duration_s: float = 0.0,
    requests: int = 0,
    timeout_s: float = 600.0,
    before_measure: Callable[[], None] | None = None,
) -> LoadResult:
    """Run h2load for `duration_s` after `warmup_s` (or for `requests` requests) and measure.

    `response_bytes` is the size of one successful response body (gRPC frame included); a 200
    stream that brought fewer bytes failed at the gRPC level.
    """
    if bool(duration_s) == bool(requests):
        raise ValueError("give exactly one of duration_s and requests")
    h2load = ensure_h2load()
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
    log_file = work_dir / f"{safe}.h2load.log"
    base = [h2load, "-t", "1", "-c", str(shape.connections), "-m", str(shape.streams), "-d", str(body_file)]
    for header in GRPC_HEADERS:
        base += ["-H", header]
    if warmup_s:
        # A separate run, not --warm-up-time: h2load's traffic totals would include the warm-up.
        warmup = subprocess.run(base + ["-D", f"{warmup_s:g}", url], capture_output=True, text=True,
                                timeout=warmup_s + 60)
        if warmup.returncode != 0:
            raise RuntimeError(f"h2load warm-up failed ({label}):\n{warmup.stdout[-2000:]}{warmup.stderr[-1000:]}")
    command = base + ["--log-file", str(log_file)]
    command += ["-n", str(requests)] if requests else ["-D", f"{duration_s:g}"]
    command.append(url)

    if before_measure is not None:
        before_measure()
    children_cpu_before = _children_cpu_seconds()
    started = time.monotonic()
    before = sample_tree(server_pid)
    busy_before = machine_busy_seconds()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise RuntimeError(f"h2load ran past {timeout_s:.0f} s ({label}); killed it") from None
    elapsed = max(time.monotonic() - started, 1e-9)
    after = sample_tree(server_pid)
    busy = machine_busy_seconds() - busy_before
    # h2load has exited and been waited for: its CPU time is now in our children's times.
    loadgen_cpu = _children_cpu_seconds() - children_cpu_before
    if process.returncode != 0:
        raise RuntimeError(f"h2load failed ({label}), exit {process.returncode}:\n{output[-2000:]}")
    (work_dir / f"{safe}.h2load.out").write_text(output)
    server_cpu = after.cpu_seconds - before.cpu_seconds
    return _parse(
        label=label, output=output, log_file=log_file, shape=shape, response_bytes=response_bytes,
        texts_per_request=texts_per_request, duration_s=duration_s, server_cpu=server_cpu / elapsed,
        after=after, loadgen_cpu_cores=loadgen_cpu / elapsed,
        other_cpu_cores=max(0.0, (busy - server_cpu - loadgen_cpu) / elapsed),
    )


def _children_cpu_seconds() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def _parse(*, label: str, output: str, log_file: Path, shape: LoadShape, response_bytes: int,
           texts_per_request: int, duration_s: float, server_cpu: float, after, loadgen_cpu_cores: float,
           other_cpu_cores: float) -> LoadResult:
    summary = _SUMMARY.search(output)
    data = _TRAFFIC_DATA.search(output)
    if summary is None or data is None:
        raise RuntimeError(f"cannot read h2load's summary ({label}):\n{output[-2000:]}")
    _total, _started, done, succeeded, failed, errored, timeouts = map(int, summary.groups())
    durations_us: list[float] = []
    statuses_ok = 0
    first_start = last_end = None
    for line in log_file.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        start_us, status, took_us = int(parts[0]), int(parts[1]), int(parts[2])
        durations_us.append(took_us)
        statuses_ok += status == 200
        end_us = start_us + took_us
        first_start = start_us if first_start is None else min(first_start, start_us)
        last_end = end_us if last_end is None else max(last_end, end_us)
    logged = len(durations_us)
    # Responses that brought a whole message: data bytes / bytes of one good answer.
    full_messages = min(statuses_ok, int(data.group(1)) // response_bytes) if response_bytes else statuses_ok
    # `done` counts every finished stream (failed ones too); calls still in flight when the
    # measured phase ends are neither answers nor errors.
    errors = max(0, done - full_messages)
    if duration_s:
        span_s = duration_s
    else:
        span_s = max((last_end - first_start) / 1e6, 1e-9) if logged else float("nan")
    durations_us.sort()
    ms = [d / 1000 for d in durations_us]
    rps = full_messages / span_s
    return LoadResult(
        label=label, concurrency=shape.concurrency, connections=shape.connections, streams=shape.streams,
        texts_per_request=texts_per_request, duration_s=round(span_s, 3), requests=logged, ok=full_messages,
        errors=errors, rps=round(rps, 1), texts_per_s=round(rps * texts_per_request, 1),
        p50_ms=round(percentile(ms, 50), 3), p95_ms=round(percentile(ms, 95), 3),
        p99_ms=round(percentile(ms, 99), 3), mean_ms=round(sum(ms) / len(ms), 3) if ms else float("nan"),
        server_cpu_cores=round(server_cpu, 2), server_rss_mb=round(after.rss_bytes / 2**20, 1),
        server_max_worker_rss_mb=round(after.max_rss_bytes / 2**20, 1), server_processes=after.processes,
        loadgen_cpu_cores=round(loadgen_cpu_cores, 2), other_cpu_cores=round(other_cpu_cores, 2),
    )
