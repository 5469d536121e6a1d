"""`--workers N`: N server processes on one port (SO_REUSEPORT), one metrics endpoint for all.

Python's gRPC server is bound by the GIL, so the way to use every core is several processes
sharing the listening port, as gRPC recommends; the kernel spreads connections over them.
Each worker has its own model copy and batcher. Metrics use prometheus_client's multiprocess
mode: workers write to files in a private directory, and the supervisor serves the sum.
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
from dataclasses import replace

from .affinity import WORKER_CPU_ENV, usable_cpus, worker_cpus
from .config import ServerConfig

log = logging.getLogger("rnn_sentiment.server.supervisor")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
RESTART_LIMIT = 5  # restarts per worker before the supervisor gives up and stops everything


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


def _start_worker(config: ServerConfig, index: int, multiproc_dir: str, cpu: int | None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rnn_sentiment.cli", "serve"],
        env=_worker_environment(config, index, multiproc_dir, cpu),
    )


def _serve_aggregated_metrics(metrics_address: str, multiproc_dir: str) -> int:
    # Imported only now: prometheus_client reads PROMETHEUS_MULTIPROC_DIR when its values load.
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=multiproc_dir)
    host, _, port = metrics_address.rpartition(":")
    http_server, _ = start_http_server(int(port), addr=host.strip("[]"), registry=registry)
    return http_server.server_port


async def supervise(config: ServerConfig) -> int:
    """Run `config.workers` workers until SIGTERM/SIGINT; forward SIGHUP; restart crashed ones."""
    host, _, port = config.address.rpartition(":")
    if int(port) == 0:
        raise ValueError("--workers > 1 needs a fixed port: the workers must all bind the same one")
    multiproc_dir = tempfile.mkdtemp(prefix="rnn-sentiment-metrics-")
    os.environ[MULTIPROC_ENV] = multiproc_dir
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    cpus = worker_cpus(config.resolved_workers) if config.pin_workers else None
    if config.pin_workers and cpus is None:
        log.warning("pin_workers: fewer usable CPUs than workers; running them unpinned",
                    extra={"fields": {"workers": config.resolved_workers, "cpus": len(usable_cpus())}})

    def start(index: int) -> subprocess.Popen:
        return _start_worker(config, index, multiproc_dir, cpus[index] if cpus else None)

    workers = {i: start(i) for i in range(config.resolved_workers)}
    restarts = dict.fromkeys(workers, 0)

    def forward(sig: int) -> None:
        for process in workers.values():
            if process.poll() is None:
                process.send_signal(sig)

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, forward, signal.SIGHUP)
    metrics_port = _serve_aggregated_metrics(config.metrics_address, multiproc_dir) if config.metrics_address else None
    log.info("supervising workers", extra={"fields": {
        "workers": config.resolved_workers, "grpc_address": config.address, "torch_threads_per_worker": threads_per_worker(config),
        "metrics_address": f"{config.metrics_address.rpartition(':')[0]}:{metrics_port}" if metrics_port else "",
        "pids": ",".join(str(p.pid) for p in workers.values()),
        "worker_cpus": ",".join(map(str, cpus)) if cpus else "unpinned",
    }})
    exit_code = 0
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.5)
            except asyncio.TimeoutError:
                pass
            for index, process in list(workers.items()):
                code = process.poll()
                if code is None or stop.is_set():
                    continue
                _mark_dead(process.pid, multiproc_dir)
                if restarts[index] >= RESTART_LIMIT:
                    log.error("worker keeps dying; stopping", extra={"fields": {"worker": index, "exit_code": code}})
                    exit_code = 1
                    stop.set()
                    break
                restarts[index] += 1
                log.warning("worker exited; restarting", extra={"fields": {"worker": index, "exit_code": code}})
                workers[index] = start(index)  # on the same CPU as before
    finally:
        forward(signal.SIGTERM)
        codes = await asyncio.gather(*(asyncio.to_thread(p.wait) for p in workers.values()))
        shutil.rmtree(multiproc_dir, ignore_errors=True)
    log.info("stopped", extra={"fields": {"worker_exit_codes": ",".join(map(str, codes))}})
    # A worker still importing when SIGTERM came dies of it (-15) with nothing in flight: clean.
    clean = all(c in (0, -signal.SIGTERM) for c in codes)
    return exit_code or (0 if clean else 1)


def _mark_dead(pid: int, multiproc_dir: str) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, multiproc_dir)
