"""What bench.run and bench.peers.run share: settings, request bodies, starting our server, one load run."""

from __future__ import annotations

import argparse
import dataclasses

import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from rnn_sentiment.server.config import ServerConfig
from rnn_sentiment.v1 import sentiment_pb2 as pb

from .h2load import LoadShape, ensure_h2load, run_h2load
from .procstat import machine_facts
from .servers import ServerProcess, free_port, serving_workers, wait_until_answering
from .texts import ONE_TEXT, TEXTS
from .wire import grpc_frame

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
PREDICT = "/rnn_sentiment.v1.SentimentService/Predict"
DEFAULT_MODEL = "sst2-gru"


@dataclass(frozen=True)
class Settings:
    warmup_s: float
    duration_s: float
    concurrency: tuple[int, ...]
    ceiling_b_seconds: float
    rss_requests: int
    quick: bool

    @classmethod
    def full(cls) -> "Settings":
        return cls(warmup_s=2, duration_s=8, concurrency=(1, 8, 32, 128), ceiling_b_seconds=0.8,
                   rss_requests=200_000, quick=False)

    @classmethod
    def smoke(cls) -> "Settings":
        return cls(warmup_s=1, duration_s=2, concurrency=(1, 32), ceiling_b_seconds=0.2,
                   rss_requests=5_000, quick=True)

    @classmethod
    def from_options(cls, quick: bool, concurrency: str | None, rss_requests: int | None = None) -> "Settings":
        """Full or smoke settings, with the command line's --concurrency and --rss-requests applied."""
        settings = cls.smoke() if quick else cls.full()
        if concurrency:
            settings = dataclasses.replace(settings, concurrency=tuple(int(c) for c in concurrency.split(",")))
        if rss_requests is not None:
            settings = dataclasses.replace(settings, rss_requests=rss_requests)
        return settings


def shipped_models() -> Path:
    import rnn_sentiment.model

    return Path(rnn_sentiment.model.__file__).resolve().parent / "checkpoints"


def checkpoint_dir(model_dir: Path | None) -> Path:
    """The checkpoint the server serves by default: DIR itself, DIR/sst2-gru, or DIR's first one."""
    root = model_dir or shipped_models()
    if (root / "config.json").is_file():
        return root
    if (root / DEFAULT_MODEL / "config.json").is_file():
        return root / DEFAULT_MODEL
    found = sorted(p.parent for p in root.glob("*/config.json")) if root.is_dir() else []
    if found:
        return found[0]
    raise SystemExit(
        f"no checkpoint under {root}. Train one, e.g.\n"
        f"  .venv/bin/rnn-sentiment train --output /tmp/benchmodels/{DEFAULT_MODEL}\n"
        f"and pass --model-dir /tmp/benchmodels"
    )


@dataclass
class Bodies:
    """Request bodies as files for h2load, and the same messages for readiness checks."""

    one_text: bytes = field(default_factory=lambda: pb.PredictRequest(texts=[ONE_TEXT]).SerializeToString())
    many_texts: bytes = field(default_factory=lambda: pb.PredictRequest(texts=list(TEXTS)).SerializeToString())

    def files(self, work_dir: Path) -> tuple[Path, Path]:
        one, many = work_dir / "predict-1-text.bin", work_dir / "predict-64-texts.bin"
        one.write_bytes(grpc_frame(self.one_text))
        many.write_bytes(grpc_frame(self.many_texts))
        return one, many


@dataclass(frozen=True)
class BenchRun:
    """What a load benchmark sets up before it starts servers: the same for bench.run and bench.peers.run."""

    settings: Settings
    checkpoint: Path
    work: Path  # scratch: request bodies, h2load and server logs
    output_dir: Path  # where the results go
    env: dict[str, object]  # date, machine, command, versions: the head of the results
    bodies: Bodies
    one_text_file: Path
    many_texts_file: Path


def prepare_run(module: str, args: argparse.Namespace, argv: list[str] | None,
                rss_requests: int | None = None) -> BenchRun:
    """Settings, scratch folder, request bodies and environment for `python -m module` with `args`
    (which carry quick, concurrency, model_dir and output_dir)."""
    settings = Settings.from_options(args.quick, args.concurrency, rss_requests)
    command = f"python -m {module} " + command_line(sys.argv[1:] if argv is None else argv)
    work = new_work_dir()
    bodies = Bodies()
    one_file, many_file = bodies.files(work)
    return BenchRun(settings=settings, checkpoint=checkpoint_dir(args.model_dir), work=work,
                    output_dir=args.output_dir or (work if args.quick else RESULTS_DIR),
                    env=environment(command.strip()), bodies=bodies, one_text_file=one_file,
                    many_texts_file=many_file)


def new_work_dir() -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    work = RESULTS_DIR / "tmp" / stamp
    work.mkdir(parents=True, exist_ok=True)
    return work


def display_path(path: Path) -> str:
    """A path as the results show it: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(BENCH_DIR.parent))
    except ValueError:
        return str(path)


def command_line(argv: list[str]) -> str:
    """The options that shaped the numbers, for the results (notes are shown on their own)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--note":
            skip = True
        elif not arg.startswith("--note="):
            kept.append(arg)
    return shlex.join(kept)


def environment(command: str) -> dict[str, object]:
    ensure_h2load()
    h2load_version = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout.strip()
    import torch

    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "machine": machine_facts(),
        "load_generator": h2load_version,
        "torch": torch.__version__,
    }


def run_ceiling_b(checkpoint: Path, threads: list[int], settings: Settings,
                  backends: tuple[str, ...] = ("torch", "onnxruntime")) -> dict[int, dict]:
    """Ceiling B per torch thread count, measured in a child process per backend.

    A ceiling is the fastest the model runs here, so each batch size keeps its faster backend
    (the row's `backend`, with every backend's texts/s beside it): the server's `auto` makes the
    same choice per batch.
    """
    measured: dict[str, dict[int, dict]] = {}
    for backend in backends:
        completed = subprocess.run(
            [sys.executable, "-m", "bench.ceiling_b", "--checkpoint", str(checkpoint), "--backend", backend,
             "--threads", ",".join(map(str, threads)), "--seconds", str(settings.ceiling_b_seconds)],
            capture_output=True, text=True, check=True, cwd=BENCH_DIR.parent, timeout=600,
        )
        rows = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
        measured[backend] = {row["threads"]: row for row in rows}
    best: dict[int, dict] = {}
    for backend, by_threads in measured.items():
        for count, data in by_threads.items():
            if count not in best:
                best[count] = {**data, "batches": [{**row, "backend": backend} for row in data["batches"]]}
            for row, new in zip(best[count]["batches"], data["batches"], strict=True):
                row[f"{backend}_texts_per_s"] = new["texts_per_s"]
                if new["texts_per_s"] > row["texts_per_s"]:
                    row.update(new, backend=backend)
    return best


@dataclass
class RunningServer:
    process: ServerProcess
    port: int
    metrics_port: int
    workers: int
    response_bytes: dict[bytes, int]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_our_server(name: str, flags: list[str], model_dir: Path | None, work_dir: Path,
                     bodies: Bodies) -> RunningServer:
    """`rnn-sentiment serve FLAGS` on free loopback ports; returns once every worker answers."""
    port, metrics_port = free_port(), free_port()
    # Without --workers the server picks its own count; ask its config rather than guess.
    workers = _workers(flags) or ServerConfig(address=f"127.0.0.1:{port}").resolved_workers
    command = [sys.executable, "-m", "rnn_sentiment.cli", "serve", "--address", f"127.0.0.1:{port}",
               "--metrics-address", f"127.0.0.1:{metrics_port}", "--log-format", "json", *flags]
    if model_dir is not None:
        command += ["--model-dir", str(model_dir)]
    log_path = work_dir / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.server.log"
    process = ServerProcess(name, command, log_path)
    target = f"127.0.0.1:{port}"
    sizes = {}
    for message in (bodies.one_text, bodies.many_texts):
        sizes[message] = wait_until_answering(process, target, PREDICT, message,
                                              ready=lambda: serving_workers(log_path) >= workers)
    return RunningServer(process, port, metrics_port, workers, sizes)


def _workers(flags: list[str]) -> int:
    """The --workers value in `flags`; 0 (the server's "one per core") when absent."""
    for i, flag in enumerate(flags):
        if flag == "--workers" and i + 1 < len(flags):
            return int(flags[i + 1])
        if flag.startswith("--workers="):
            return int(flag.split("=", 1)[1])
    return 0


def start_noop_server(work_dir: Path, bodies: Bodies, processes: int = 1) -> RunningServer:
    """bench/noop_server.py on a free loopback port, `processes` of them sharing it; returns once all serve."""
    port = free_port()
    log_path = work_dir / f"noop-{processes}.server.log"
    process = ServerProcess(f"ceiling A (no-op grpc.aio, {processes} processes)",
                            [sys.executable, "-m", "bench.noop_server", "--address", f"127.0.0.1:{port}",
                             "--processes", str(processes)],
                            log_path, cwd=BENCH_DIR.parent)
    target = f"127.0.0.1:{port}"

    def all_serving() -> bool:
        try:
            return log_path.read_text(errors="replace").count("serving on port") >= processes
        except OSError:
            return False

    sizes = {m: wait_until_answering(process, target, PREDICT, m, ready=all_serving)
             for m in (bodies.one_text, bodies.many_texts)}
    return RunningServer(process, port, 0, processes, sizes)


# Our server counts a call just after answering it: a reading this long after the load stops
# counts all of it.
METRICS_SETTLE_S = 0.75
_BATCH_LINE = re.compile(r'^rnn_sentiment_batch_size_(sum|count)\{[^}]*\} ([0-9.eE+-]+)$', re.M)


def batch_totals(metrics_port: int) -> tuple[float, float] | None:
    """(sum, count) of rnn_sentiment_batch_size over all models, from our /metrics."""
    if not metrics_port:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    totals = {"sum": 0.0, "count": 0.0}
    for kind, value in _BATCH_LINE.findall(text):
        totals[kind] += float(value)
    return totals["sum"], totals["count"]


def load(server_label: str, server: RunningServer, body_file: Path, message: bytes, texts_per_request: int,
         concurrency: int, settings: Settings, work_dir: Path, *, requests: int = 0, path: str = PREDICT) -> dict:
    """One h2load run against `server`; the result as a dict, with the mean batch when we can see it."""
    before: dict[str, tuple[float, float] | None] = {}

    def mark() -> None:
        if server.metrics_port:
            time.sleep(METRICS_SETTLE_S)  # the warm-up's last updates reach /metrics first
        before["batch"] = batch_totals(server.metrics_port)

    label = f"{server_label} c{concurrency} x{texts_per_request}" + (f" n{requests}" if requests else "")
    result = run_h2load(
        label=label, url=f"http://{server.target}{path}", body_file=body_file,
        shape=LoadShape.for_concurrency(concurrency), response_bytes=server.response_bytes[message],
        texts_per_request=texts_per_request, server_pid=server.process.pid, work_dir=work_dir,
        warmup_s=0 if requests else settings.warmup_s, duration_s=0 if requests else settings.duration_s,
        requests=requests, before_measure=mark,
        timeout_s=max(120.0, requests / 200) if requests else settings.duration_s + 120,
    ).as_dict()
    if server.metrics_port:
        time.sleep(METRICS_SETTLE_S)  # and the measured run's
    after = batch_totals(server.metrics_port)
    mean_batch = model_texts_per_s = None
    if before.get("batch") and after and after[1] > before["batch"][1]:
        mean_batch = round((after[0] - before["batch"][0]) / (after[1] - before["batch"][1]), 2)
        if result["duration_s"]:
            # Texts the model computed in the measured window, finished calls or not: a long
            # stream still open when h2load stops is work done that h2load does not count.
            model_texts_per_s = round((after[0] - before["batch"][0]) / result["duration_s"], 1)
    result.update(server=server_label, mean_batch=mean_batch, model_texts_per_s=model_texts_per_s)
    print(f"  {label:<44} {result['rps']:>9,.0f} req/s {result['texts_per_s']:>9,.0f} texts/s  "
          f"p50 {result['p50_ms']:.2f}  p99 {result['p99_ms']:.2f} ms  errors {result['errors']}  "
          f"cpu {result['server_cpu_cores']:.2f}  others {result['other_cpu_cores']:.2f}", flush=True)
    return result


def cpu_count() -> int:
    return os.cpu_count() or 1


def wait_quiet(seconds: float = 0.5) -> None:
    """A short pause between runs so one run's tail does not land in the next."""
    time.sleep(seconds)
