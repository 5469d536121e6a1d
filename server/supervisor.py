"""`--workers N`: N server processes on one port (SO_REUSEPORT), one metrics endpoint for all.

Python's gRPC server is bound by the GIL, so the way to use every core is several processes
sharing the listening port, as gRPC recommends; the kernel spreads connections over them.
Each worker has its own model copy and batcher. Metrics use prometheus_client's multiprocess
mode: workers write to files in a private directory, and the supervisor serves the sum.

A crashed worker is restarted with backoff, forever (restart_backoff.py): a crash loop is
logged and counted (`rnn_sentiment_worker_restarts_total`), never a reason to stop the others.
Signals follow the same state machine as a worker's (lifecycle.py): SIGTERM/SIGINT drain every
worker, SIGHUP is forwarded to the workers while serving (each ignores it until it serves).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .affinity import WORKER_CPU_ENV, usable_cpus, worker_cpus
from .config import ServerConfig
from .lifecycle import Lifecycle
from .restart_backoff import RestartBackoff

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from .metrics_http import MetricsEndpoint

log = logging.getLogger("rnn_sentiment.server.supervisor")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The address the supervisor serves the workers' metrics on, for their "serving" lines.
SUPERVISOR_METRICS_ENV = "RNN_SENTIMENT_SUPERVISOR_METRICS_ADDRESS"
# How often the supervisor looks for exited workers and restarts that are due.
CHECK_SECONDS = 0.2
# A worker restarted this many times in a row without a healthy run is logged as crash-looping.
CRASH_LOOP_RESTARTS = 3


def threads_per_worker(config: ServerConfig) -> int:
    """Torch threads for each worker (see ServerConfig.resolved_torch_threads)."""
    return config.resolved_torch_threads


def _worker_environment(config: ServerConfig, index: int, multiproc_dir: str,
                        cpu: int | None) -> dict[str, str]:
    worker_config = replace(config, workers=1, metrics_address="", torch_threads=threads_per_worker(config))
    environment = {**os.environ, **worker_config.as_environment(), MULTIPROC_ENV: multiproc_dir,
                   "RNN_SENTIMENT_WORKER_INDEX": str(index)}
    environment.pop(WORKER_CPU_ENV, None)  # never inherit a pin meant for another process
    if cpu is not None:
        environment[WORKER_CPU_ENV] = str(cpu)
    return environment


def _ignore_hangup_and_interrupt() -> None:
    # In the child before exec: ignored dispositions survive exec, so SIGHUP (forwarded, or
    # from a closing terminal) cannot kill a worker still importing; the worker's own handlers
    # take over once serve() starts. SIGINT too: the supervisor decides, and forwards SIGTERM.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start_worker(config: ServerConfig, index: int, multiproc_dir: str, cpu: int | None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rnn_sentiment.cli", "serve"],
        env=_worker_environment(config, index, multiproc_dir, cpu),
        preexec_fn=_ignore_hangup_and_interrupt,
    )


@dataclass
class WorkerSlot:
    """One of the N workers: its process (None while waiting to be restarted) and its restarts."""

    index: int
    backoff: RestartBackoff
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    restarts: int = 0


@dataclass(eq=False)  # a registry keys its collectors by identity
class WorkerRestarts:
    """`rnn_sentiment_worker_restarts_total{worker}`, registered beside the multiprocess collector
    (the supervisor's own count: no worker could keep it across its own death)."""

    slots: list[WorkerSlot] = field(default_factory=list)

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily("rnn_sentiment_worker_restarts", "Crashed workers restarted by the supervisor",
                                     labels=["worker"])
        for slot in self.slots:
            family.add_metric([str(slot.index)], slot.restarts)
        yield family


async def _serve_aggregated_metrics(metrics_address: str, multiproc_dir: str, *collectors: object) -> MetricsEndpoint:
    # Imported only now: prometheus_client reads PROMETHEUS_MULTIPROC_DIR when its values load.
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    from .metrics_http import start_metrics_endpoint

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=multiproc_dir)
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]
    host, _, port = metrics_address.rpartition(":")
    # The bounded endpoint on the supervisor's loop; it reads the workers' files on its own thread.
    return await start_metrics_endpoint((host.strip("[]"), int(port)), lambda: generate_latest(registry),
                                        CONTENT_TYPE_LATEST)


async def supervise(config: ServerConfig) -> int:
    """Run `config.workers` workers until SIGTERM/SIGINT; forward SIGHUP; restart crashed ones."""
    lifecycle = Lifecycle("supervisor")
    # Before anything else: from here on no signal takes its default action (SIGHUP's is death).
    lifecycle.install(asyncio.get_running_loop())
    try:
        return await _supervise(config, lifecycle)
    finally:
        lifecycle.stopped()


async def _supervise(config: ServerConfig, lifecycle: Lifecycle) -> int:
    host, _, port = config.address.rpartition(":")
    if int(port) == 0:
        raise ValueError("--workers > 1 needs a fixed port: the workers must all bind the same one")
    multiproc_dir = tempfile.mkdtemp(prefix="rnn-sentiment-metrics-")
    os.environ[MULTIPROC_ENV] = multiproc_dir
    cpus = worker_cpus(config.resolved_workers) if config.pin_workers else None
    if config.pin_workers and cpus is None:
        log.warning("pin_workers: fewer usable CPUs than workers; running them unpinned",
                    extra={"fields": {"workers": config.resolved_workers, "cpus": len(usable_cpus())}})
    slots = [WorkerSlot(i, RestartBackoff(config.restart_backoff_seconds, config.restart_backoff_max_seconds,
                                          config.restart_healthy_seconds))
             for i in range(config.resolved_workers)]

    def start(slot: WorkerSlot) -> None:
        slot.process = _start_worker(config, slot.index, multiproc_dir, cpus[slot.index] if cpus else None)
        slot.started_at = time.monotonic()
        slot.restart_at = None

    def running() -> list[subprocess.Popen]:
        return [slot.process for slot in slots if slot.process is not None and slot.process.poll() is None]

    def forward(sig: int) -> None:
        for process in running():
            process.send_signal(sig)

    # The endpoint first: should it fail (its port taken), no worker has been started to orphan.
    metrics_endpoint = (await _serve_aggregated_metrics(config.metrics_address, multiproc_dir, WorkerRestarts(slots))
                        if config.metrics_address else None)
    metrics_port = metrics_endpoint.port if metrics_endpoint else None
    metrics_address = f"{config.metrics_address.rpartition(':')[0]}:{metrics_port}" if metrics_port else ""
    os.environ[SUPERVISOR_METRICS_ENV] = metrics_address  # the workers inherit it
    try:
        for slot in slots:
            start(slot)
        lifecycle.serving(on_hangup=lambda: forward(signal.SIGHUP))
        log.info("supervising workers", extra={"fields": {
            "workers": config.resolved_workers, "grpc_address": config.address,
            "torch_threads_per_worker": threads_per_worker(config),
            "metrics_address": metrics_address or "off",
            "pids": ",".join(str(slot.process.pid) for slot in slots if slot.process),
            "worker_cpus": ",".join(map(str, cpus)) if cpus else "unpinned",
        }})
        while not lifecycle.drain_requested.is_set():
            try:
                await asyncio.wait_for(lifecycle.drain_requested.wait(), timeout=CHECK_SECONDS)
            except asyncio.TimeoutError:
                pass
            if lifecycle.drain_requested.is_set():
                break
            for slot in slots:
                _check(slot, multiproc_dir, start)
    finally:
        # The workers to wait for are taken before SIGTERM: one that exits at once would be
        # reaped by the next poll() and left out of the exit codes (and the exit status).
        stopping = running()
        for process in stopping:
            process.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(*(asyncio.to_thread(p.wait) for p in stopping))
        if metrics_endpoint is not None:
            await metrics_endpoint.close()
        shutil.rmtree(multiproc_dir, ignore_errors=True)
    log.info("stopped", extra={"fields": {"worker_exit_codes": ",".join(map(str, codes))}})
    # A worker still importing when SIGTERM came dies of it (-15) with nothing in flight: clean.
    clean = all(c in (0, -signal.SIGTERM) for c in codes)
    return 0 if clean else 1


def _check(slot: WorkerSlot, multiproc_dir: str, start: Callable[[WorkerSlot], None]) -> None:
    """Notice that a worker exited (and schedule its restart), or restart it when its wait is over."""
    now = time.monotonic()
    if slot.process is not None:
        code = slot.process.poll()
        if code is None:
            return
        _mark_dead(slot.process.pid, multiproc_dir)
        ran = now - slot.started_at
        delay = slot.backoff.delay_after_crash(ran)
        slot.process = None
        slot.restart_at = now + delay
        fields = {"worker": slot.index, "exit_code": code, "ran_seconds": round(ran, 1),
                  "restart_in_seconds": delay, "crashes_in_a_row": slot.backoff.crashes_in_a_row}
        if slot.backoff.crashes_in_a_row > CRASH_LOOP_RESTARTS:
            log.error("worker is crash-looping; restarting it with backoff, the others keep serving",
                      extra={"fields": fields})
        else:
            log.warning("worker exited; restarting", extra={"fields": fields})
    if slot.restart_at is not None and now >= slot.restart_at:
        slot.restarts += 1
        start(slot)  # on the same CPU as before
        assert slot.process is not None
        log.info("worker restarted", extra={"fields": {
            "worker": slot.index, "worker_pid": slot.process.pid, "restarts": slot.restarts,
        }})


def _mark_dead(pid: int, multiproc_dir: str) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, multiproc_dir)
