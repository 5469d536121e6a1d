"""Soak: moderate Predict load plus a Trace caller for a while; RSS, threads and open file
descriptors of every server process must not trend upward, and no call may fail.

    python -m bench.soak                    # 10 minutes, 2 workers (`make soak`)
    python -m bench.soak --seconds 60       # the CI length (tests/integration/test_soak.py)

Writes soak.csv (every sample) and soak.md (the summary and the command) to --results-dir
(bench/results/), and soak.server.log when it fails. Exits 1 on a growth trend, an error, or a
server process that died or changed.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.procstat import tree_pids
from bench.servers import ServerProcess, free_port, serving_workers, stop_servers_on_signals, wait_until_answering
from rnn_sentiment.client import SentimentClient, SentimentError
from rnn_sentiment.v1 import sentiment_pb2 as pb

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PREDICT_TEXTS = [
    "a warm , funny and beautifully acted film",
    "a dull , lifeless and painfully boring movie",
    "not bad at all",
    "the plot is thin but the performances are wonderful",
    "i wanted to like it , but it never comes alive",
]
TRACE_TEXT = "the film is not good but the acting is great"
# Growth allowed between the first and the last third of the samples after warm-up (medians):
# above it, the soak calls it a trend. RSS settles within a few MiB once every code path ran.
RSS_GROWTH_LIMIT_BYTES = 16 << 20
RSS_GROWTH_LIMIT_FRACTION = 0.05
COUNT_GROWTH_LIMIT = 2  # threads or fds: a transient connection or executor thread, no more


@dataclass(frozen=True)
class SoakSettings:
    seconds: float
    workers: int
    predict_callers: int
    predict_pause: float  # seconds between one caller's calls: moderate load, not saturation
    trace_pause: float
    interval: float  # seconds between samples
    warmup: float  # seconds of samples left out of the trend (allocators and caches filling up)
    # The SDK's default: UNAVAILABLE retried with backoff. A call caught by a connection's
    # max-age GOAWAY can end UNAVAILABLE, which is what that retry is for.
    retry: bool = True


@dataclass(frozen=True)
class Sample:
    elapsed: float
    pid: int
    role: str
    rss_bytes: int
    threads: int
    fds: int


@dataclass
class CallTally:
    ok: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # "Predict UNAVAILABLE" -> count
    first_errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, method: str, error: SentimentError | None) -> None:
        if error is None:
            with self.lock:
                self.ok[method] += 1
        else:
            self.record_failure(method, error.code, error.message)

    def record_failure(self, method: str, code: str, message: str) -> None:
        with self.lock:
            self.errors[f"{method} {code}"] += 1
            if len(self.first_errors) < 5:
                self.first_errors.append(f"{method} {code}: {message[:200]}")


@dataclass(frozen=True)
class Trend:
    pid: int
    role: str
    metric: str
    first: float  # median of the first third after warm-up
    last: float  # median of the last third
    limit: float

    @property
    def growth(self) -> float:
        return self.last - self.first

    @property
    def failed(self) -> bool:
        return self.growth > self.limit


def read_process(pid: int) -> tuple[int, int, int] | None:
    """(RSS bytes, threads, open fds) of `pid`, from /proc; None once it is gone."""
    try:
        rss_kib = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                       if line.startswith("VmRSS:"))
        return rss_kib * 1024, len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return None


def predict_caller(target: str, index: int, stop: threading.Event, pause: float, retry: bool,
                   tally: CallTally) -> None:
    with SentimentClient(target, timeout=10, retry=retry) as client:
        call = 0
        while not stop.is_set():
            size = 1 + (index + call) % 4  # 1 to 4 texts: single and batched paths both
            texts = [PREDICT_TEXTS[(call + i) % len(PREDICT_TEXTS)] for i in range(size)]
            try:
                client.predict(texts)
                tally.record("Predict", None)
            except SentimentError as error:
                tally.record("Predict", error)
            call += 1
            stop.wait(pause)


def trace_caller(target: str, stop: threading.Event, pause: float, retry: bool, tally: CallTally) -> None:
    with SentimentClient(target, timeout=30, retry=retry) as client:
        while not stop.is_set():
            try:
                client.trace(TRACE_TEXT, attributions=["prefix", "gradient_x_input", "integrated_gradients", "occlusion"],
                             integrated_gradients_steps=32, include_memory_profile=True)
                tally.record("Trace", None)
            except SentimentError as error:
                tally.record("Trace", error)
            stop.wait(pause)


def scrape(url: str, tally: CallTally) -> None:
    """One Prometheus-style scrape of /metrics: it must answer while the load runs."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
        tally.record("Scrape", None)
    except OSError as error:
        tally.record_failure("Scrape", type(error).__name__, str(error))


def trends(samples: list[Sample], settings: SoakSettings) -> list[Trend]:
    found = []
    for pid in sorted({s.pid for s in samples}):
        rows = [s for s in samples if s.pid == pid and s.elapsed >= settings.warmup]
        if len(rows) < 6:
            continue
        third = len(rows) // 3
        head, tail = rows[:third], rows[-third:]
        role = rows[0].role
        first_rss = statistics.median(s.rss_bytes for s in head)
        found.append(Trend(pid, role, "rss_bytes", first_rss, statistics.median(s.rss_bytes for s in tail),
                           max(RSS_GROWTH_LIMIT_BYTES, RSS_GROWTH_LIMIT_FRACTION * first_rss)))
        for metric in ("threads", "fds"):
            found.append(Trend(pid, role, metric, statistics.median(getattr(s, metric) for s in head),
                               statistics.median(getattr(s, metric) for s in tail), COUNT_GROWTH_LIMIT))
    return found


def run_soak(settings: SoakSettings, results_dir: Path, command: str) -> bool:
    results_dir.mkdir(parents=True, exist_ok=True)
    port, metrics_port = free_port(), free_port()
    target = f"127.0.0.1:{port}"
    server = ServerProcess("soak", [
        sys.executable, "-m", "rnn_sentiment.cli", "serve", "--address", target,
        "--metrics-address", f"127.0.0.1:{metrics_port}", "--workers", str(settings.workers), "--log-format", "json",
    ], results_dir / "soak.server.log")
    problems: list[str] = []
    samples: list[Sample] = []
    tally = CallTally()
    try:
        wait_until_answering(server, target, "/rnn_sentiment.v1.SentimentService/Predict",
                             pb.PredictRequest(texts=["good"]).SerializeToString(),
                             ready=lambda: serving_workers(server.log_path) >= settings.workers)
        pids = tree_pids(server.pid)
        roles = {pid: ("server" if settings.workers == 1 else "supervisor") if pid == server.pid else "worker"
                 for pid in pids}
        stop = threading.Event()
        callers = [threading.Thread(target=predict_caller, args=(target, i, stop, settings.predict_pause, settings.retry, tally))
                   for i in range(settings.predict_callers)]
        callers.append(threading.Thread(target=trace_caller, args=(target, stop, settings.trace_pause, settings.retry, tally)))
        for caller in callers:
            caller.start()
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < settings.seconds:
            for pid in pids:
                reading = read_process(pid)
                if reading is None:
                    problems.append(f"server process {pid} ({roles[pid]}) exited at {elapsed:.0f} s")
                    continue
                samples.append(Sample(round(elapsed, 1), pid, roles[pid], *reading))
            if not server.alive() or problems:
                break
            scrape(f"http://127.0.0.1:{metrics_port}/metrics", tally)
            time.sleep(settings.interval)
        stop.set()
        for caller in callers:
            caller.join(60)
        if set(tree_pids(server.pid)) != set(pids) and server.alive():
            problems.append("the set of server processes changed (a worker restarted)")
    finally:
        server.stop()

    found = trends(samples, settings)
    problems += [f"{t.role} {t.pid}: {t.metric} grew {t.growth:+,.0f} (limit {t.limit:,.0f})" for t in found if t.failed]
    if tally.errors:
        problems.append(f"{sum(tally.errors.values())} failed calls: {dict(tally.errors)}; first: {tally.first_errors}")
    if not all(tally.ok[method] for method in ("Predict", "Trace", "Scrape")):
        problems.append(f"the load did not run: {dict(tally.ok)}")
    write_results(results_dir, settings, samples, found, tally, problems, command)
    if not problems:
        server.log_path.unlink(missing_ok=True)  # kept only to explain a failure
    return not problems


def write_results(results_dir: Path, settings: SoakSettings, samples: list[Sample], found: list[Trend],
                  tally: CallTally, problems: list[str], command: str) -> None:
    with open(results_dir / "soak.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["elapsed_s", "pid", "role", "rss_bytes", "threads", "fds"])
        writer.writerows([s.elapsed, s.pid, s.role, s.rss_bytes, s.threads, s.fds] for s in samples)
    mib = 1 << 20
    lines = [
        "# Soak", "",
        f"Command: `{command}`", "",
        f"{settings.seconds:.0f} s, {settings.workers} worker(s); {settings.predict_callers} Predict callers "
        f"(1-4 texts, {settings.predict_pause * 1000:.0f} ms apart) and 1 Trace caller (all four attributions, "
        f"IG 32 steps, memory profile, {settings.trace_pause * 1000:.0f} ms apart); a sample and a /metrics "
        f"scrape every {settings.interval:g} s, the first {settings.warmup:g} s left out of the trend; UNAVAILABLE "
        f"{'retried (the SDK default)' if settings.retry else 'not retried'}.", "",
        f"Calls: {', '.join(f'{m} {n:,} OK' for m, n in sorted(tally.ok.items()))}; "
        f"errors: {sum(tally.errors.values())}.", "",
        "| process | metric | first third (median) | last third (median) | growth | limit | |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in found:
        scale, unit = (mib, " MiB") if t.metric == "rss_bytes" else (1, "")
        name = "RSS" if t.metric == "rss_bytes" else t.metric
        lines.append(f"| {t.role} {t.pid} | {name} | {t.first / scale:,.1f}{unit} | {t.last / scale:,.1f}{unit} | "
                     f"{t.growth / scale:+,.1f}{unit} | {t.limit / scale:,.1f}{unit} | {'FAIL' if t.failed else 'ok'} |")
    lines += ["", "Result: " + ("PASS" if not problems else "FAIL: " + "; ".join(problems)), ""]
    (results_dir / "soak.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 600)))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--predict-callers", type=int, default=3)
    parser.add_argument("--predict-pause", type=float, default=0.01, help="seconds between one caller's Predicts")
    parser.add_argument("--trace-pause", type=float, default=0.2, help="seconds between Traces")
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between samples (0: seconds/60, 1 to 10)")
    parser.add_argument("--no-retry", action="store_true", help="count UNAVAILABLE as an error, never retry it")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    interval = args.interval or min(10.0, max(1.0, args.seconds / 60))
    settings = SoakSettings(seconds=args.seconds, workers=args.workers, predict_callers=args.predict_callers,
                            predict_pause=args.predict_pause, trace_pause=args.trace_pause, interval=interval,
                            warmup=min(60.0, max(10.0, args.seconds * 0.15)), retry=not args.no_retry)
    stop_servers_on_signals()
    command = "python -m bench.soak " + " ".join(argv if argv is not None else sys.argv[1:])
    passed = run_soak(settings, args.results_dir, command.strip())
    print((args.results_dir / "soak.md").read_text())
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
