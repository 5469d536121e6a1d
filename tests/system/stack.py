"""Helpers for the system tests: real nginx, Prometheus and Docker on loopback, stopped by PID."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import pytest

from tests.support import REPO_ROOT, ServerProcess, free_port

DEPLOY = REPO_ROOT / "deploy"
RENDER_ADDRESSES = DEPLOY / "render-addresses.sh"
T = TypeVar("T")

# The addresses the committed deploy/ files name (the docker-compose defaults).
DEFAULT_LB = "127.0.0.1:50051"
DEFAULT_REPLICAS = ("127.0.0.1:50052", "127.0.0.1:50053")
DEFAULT_REPLICA_METRICS = ("127.0.0.1:9465", "127.0.0.1:9466")
DEFAULT_PROMETHEUS = "127.0.0.1:9090"


def require_commands(*names: str) -> dict[str, str]:
    """Paths of the named commands; skip the test (the reason printed by -rs) when one is missing."""
    paths = {name: shutil.which(name) for name in names}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        pytest.skip(
            f"needs {', '.join(missing)} on PATH (as root, `make test` installs them via "
            "scripts/ensure-system-packages.sh)"
        )
    return {name: str(path) for name, path in paths.items()}


def render_config(source: Path, destination: Path, address_map: Mapping[str, str]) -> Path:
    """Copy a deploy/ folder with its default addresses replaced, by the script the containers run."""
    pairs = " ".join(f"{default}={actual}" for default, actual in address_map.items())
    subprocess.run(
        ["sh", str(RENDER_ADDRESSES), str(source), str(destination)],
        check=True, env={**os.environ, "ADDRESS_MAP": pairs}, timeout=30,
    )
    return destination


def poll(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.25) -> T:
    """Call `probe` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last = value
        except Exception as error:  # the thing polled is not up yet: keep polling
            last = error
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def prometheus_query(base_url: str, query: str) -> list[dict]:
    """Instant query; the result vector (raises on an error status, e.g. a bad expression)."""
    url = f"{base_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        body = json.loads(http_get(url))
    except urllib.error.HTTPError as error:
        body = json.loads(error.read().decode())
    if body.get("status") != "success":
        raise AssertionError(f"query {query!r} failed: {body.get('errorType')}: {body.get('error')}")
    return body["data"]["result"]


def scrape_counter(metrics_url: str, name: str, **labels: str) -> float:
    """Sum of a counter's samples in a /metrics page whose labels include `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(http_get(metrics_url)):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def counter_moves(read: Callable[[], list[float]], before: list[float], total: float,
                  timeout: float = 10.0) -> list[float]:
    """How far each of `read()`'s counters moved from `before`, once they moved by `total` together.

    A server counts a call just after answering it, and the stack scrapes a moment later, so a
    scrape right after the calls can be behind: poll (bounded) until all are counted,
    then return the moves as they stand (more than `total` is a failure for the caller to see).
    """
    deadline = time.monotonic() + timeout
    while True:
        moved = [now - then for now, then in zip(read(), before)]
        if sum(moved) >= total or time.monotonic() > deadline:
            return moved
        time.sleep(0.1)


class Phases:
    """Prints how long each step of a test took: where the minutes of a cold run go (-s shows it)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.last = time.monotonic()

    def done(self, what: str) -> None:
        now = time.monotonic()
        print(f"\n[system] {self.name}: {what}: {now - self.last:.1f} s", end="")
        self.last = now


@dataclass
class BackgroundProcess:
    """A child process with its output in a log file; `stop` ends exactly this PID."""

    command: list[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    process: subprocess.Popen | None = field(default=None, init=False)

    def start(self) -> "BackgroundProcess":
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=None if self.env is None else {**os.environ, **self.env}, cwd=self.cwd,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signal the process, wait, kill it if it does not exit in time; its exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def run(command: list[str], timeout: float, env: Mapping[str, str] | None = None,
        cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command to completion, output captured; on failure the message carries its tail."""
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=cwd,
        env=None if env is None else {**os.environ, **env},
    )
    if check and result.returncode != 0:
        output = (result.stdout + result.stderr)[-6000:]
        pytest.fail(f"`{' '.join(command)}` exited {result.returncode}:\n{output}")
    return result


def start_nginx(workdir: Path, lb_address: str, upstreams: Sequence[str]) -> BackgroundProcess:
    """The committed deploy/nginx config, listening on `lb_address` in front of `upstreams` (one
    address per replica of the compose defaults), run in the foreground under `workdir`."""
    nginx_path = require_commands("nginx")["nginx"]
    nginx_dir = render_config(DEPLOY / "nginx", workdir / "nginx", {
        DEFAULT_LB: lb_address, **dict(zip(DEFAULT_REPLICAS, upstreams, strict=True))})
    nginx_dir.chmod(0o755)  # workers run as another user when the master is root
    return BackgroundProcess(
        [nginx_path, "-p", f"{nginx_dir}/", "-e", str(nginx_dir / "error.log"),
         "-c", str(nginx_dir / "nginx.conf"), "-g", "daemon off;"],
        log_path=workdir / "nginx.log",
    ).start()


@dataclass
class BalancedReplicas:
    """Two serving replicas behind nginx. A test may replace an entry of `replicas` (a restart
    on the same ports); whatever the list holds at the end is stopped."""

    lb_address: str
    replicas: list[ServerProcess]
    nginx: BackgroundProcess


@dataclass
class StartedProcesses:
    """What a system test started. On a failure every log is printed; at the end every process
    is stopped, the services in the reverse of their start order, then the replicas (one the test
    stopped already is left as it is)."""

    replicas: list[ServerProcess]
    services: dict[str, BackgroundProcess] = field(default_factory=dict)

    def print_logs(self) -> None:
        for name, process in self.services.items():
            print(f"---- {name} log ----\n{process.log()}")
        for replica in self.replicas:
            print(f"---- replica {replica.target} log ----\n{replica.log()[-3000:]}")

    def stop_all(self) -> None:
        for process in reversed(self.services.values()):
            process.stop()
        for replica in self.replicas:
            replica.stop()


@contextmanager
def started(replicas: Iterable[ServerProcess]) -> Iterator[StartedProcesses]:
    """Starts `replicas` (without waiting) and hands back the record a test adds its services to;
    logs printed on a failure, everything stopped at the end."""
    processes = StartedProcesses([])
    try:
        for replica in replicas:  # they load their models at the same time
            processes.replicas.append(replica.start(wait=False))
        yield processes
    except BaseException:
        processes.print_logs()
        raise
    finally:
        processes.stop_all()


@contextmanager
def nginx_over_two_replicas(workdir: Path, replica_args: Sequence[str]) -> Iterator[BalancedReplicas]:
    """Two `rnn-sentiment serve` replicas started with `replica_args`, nginx in front of them,
    serving through the balancer when entered. On a failure the logs are printed; at the end nginx
    and every replica are stopped (a replica the test stopped already is left as it is)."""
    require_commands("nginx")  # skip before starting anything
    with started(ServerProcess(extra_args=list(replica_args)) for _ in DEFAULT_REPLICAS) as processes:
        replicas = processes.replicas
        for replica in replicas:
            replica.wait_until_serving(timeout=120)
        lb_address = f"127.0.0.1:{free_port()}"
        nginx = processes.services["nginx"] = start_nginx(workdir, lb_address, [r.target for r in replicas])
        from rnn_sentiment.client import SentimentClient

        with SentimentClient(lb_address, timeout=10) as probe:
            probe.wait_until_serving(timeout=30)
        yield BalancedReplicas(lb_address, replicas, nginx)
