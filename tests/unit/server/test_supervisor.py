"""The `--workers N` supervisor (server/supervisor.py) without a model: real child processes,
stand-in workers.

What an operator depends on is held here in a few seconds: the environment each worker starts
with, that it starts with SIGHUP and SIGINT ignored, that a crashed worker is restarted after its
backoff and logged WARNING, then ERROR once it crash-loops, the restart counter Prometheus scrapes,
SIGHUP forwarded and SIGTERM on drain, and the supervisor's exit code. The workers are real
processes, but stand-ins: a real worker is a gRPC server that loads a model (seconds each), which
tests/integration/test_workers.py and test_signals.py start. The stand-in is run exactly as a
worker is (`sys.executable -m rnn_sentiment.cli serve`, the supervisor's environment and
pre-exec hook), with `sys.executable` pointing at it; it writes down what it received.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest  # imported before any test sets the multiprocess dir
from prometheus_client.parser import text_string_to_metric_families

from rnn_sentiment.server.affinity import WORKER_CPU_ENV
from rnn_sentiment.server.config import ServerConfig
from rnn_sentiment.server.lifecycle import Lifecycle
from rnn_sentiment.server.restart_backoff import RestartBackoff
from rnn_sentiment.server.supervisor import (
    MULTIPROC_ENV,
    SUPERVISOR_METRICS_ENV,
    WorkerRestarts,
    WorkerSlot,
    _check,
    _ignore_hangup_and_interrupt,
    _supervise,
    _worker_environment,
)

PYTHON = sys.executable  # the real interpreter, kept before a test points sys.executable at the stand-in
SUPERVISOR_LOGGER = "rnn_sentiment.server.supervisor"
# Any fixed port: stand-in workers bind nothing, but the supervisor refuses port 0.
GRPC_ADDRESS = "127.0.0.1:50999"
WAIT_SECONDS = 30.0

# A worker stand-in. Run as `PYTHON -IS stand_in -m rnn_sentiment.cli serve` (isolated, no site:
# it starts in milliseconds and needs only the standard library). It records what it was started
# with in worker-INDEX-INCARNATION.json, records each SIGHUP, and on SIGTERM drains for
# STAND_IN_DRAIN_SECONDS, then does what STAND_IN_<INDEX> says: exit0, exit1, die (of SIGTERM), or
# crash_first (exit 3 at once in its first incarnation, then exit 0 on SIGTERM); exit1_at_once
# exits 1 the instant SIGTERM arrives, without a drain or Python's exit.
STAND_IN = r'''
import json, os, signal, sys, time

directory = os.environ["STAND_IN_DIR"]
index = os.environ["RNN_SENTIMENT_WORKER_INDEX"]
incarnation = sum(name.startswith(f"worker-{index}-") for name in os.listdir(directory))
behaviour = os.environ.get(f"STAND_IN_{index}", "exit0")
report = {
    "argv": sys.argv[1:],
    "pid": os.getpid(),
    "environment": {k: v for k, v in os.environ.items() if k.startswith("RNN_SENTIMENT_") or k == "PROMETHEUS_MULTIPROC_DIR"},
    "ignored": {name: signal.getsignal(getattr(signal, name)) == signal.SIG_IGN for name in ("SIGHUP", "SIGINT", "SIGTERM")},
}

def hangup(*_):
    with open(os.path.join(directory, f"hangup-{index}-{os.getpid()}"), "w"):
        pass

def terminate(*_):
    if behaviour == "exit1_at_once":
        os._exit(1)
    time.sleep(float(os.environ.get("STAND_IN_DRAIN_SECONDS", "0")))  # a real worker's drain
    if behaviour == "die":
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    sys.exit(1 if behaviour == "exit1" else 0)

signal.signal(signal.SIGHUP, hangup)
signal.signal(signal.SIGTERM, terminate)
path = os.path.join(directory, f"worker-{index}-{incarnation}.json")
with open(path + ".tmp", "w") as f:
    json.dump(report, f)
os.rename(path + ".tmp", path)
if behaviour == "crash_first" and incarnation == 0:
    sys.exit(3)
parent = os.getppid()
for _ in range(240):  # never outlives its supervisor (a test that failed), nor two minutes
    time.sleep(0.5)
    if os.getppid() != parent:
        break
'''


@dataclass
class StandIns:
    """The stand-in workers' records, in `directory`."""

    directory: Path

    def report(self, index: int, incarnation: int = 0) -> dict | None:
        path = self.directory / f"worker-{index}-{incarnation}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def hung_up(self, index: int, pid: int) -> bool:
        return (self.directory / f"hangup-{index}-{pid}").exists()

    def kill_all(self) -> None:
        """SIGKILL every stand-in that was started (a supervisor that never stops them fails a test)."""
        for path in self.directory.glob("worker-*.json"):
            try:
                os.kill(json.loads(path.read_text())["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def stand_ins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StandIns:
    """Workers started by the supervisor are stand-ins; the variables it sets are restored after."""
    directory = tmp_path / "workers"
    directory.mkdir()
    script = tmp_path / "stand-in-python"
    script.write_text(f"#!{PYTHON} -IS\n{STAND_IN}")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(script))
    monkeypatch.setenv("STAND_IN_DIR", str(directory))
    for name in (MULTIPROC_ENV, SUPERVISOR_METRICS_ENV, WORKER_CPU_ENV):
        # The supervisor sets the first two in its own environment: recorded (setenv) before they
        # are removed, so each is restored as it was, unset included, for the servers later tests start.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return StandIns(directory)


@dataclass
class Supervision:
    """A running `_supervise` on this test's loop, and its lifecycle (signals are sent through it)."""

    task: asyncio.Task
    lifecycle: Lifecycle

    async def until(self, condition: Callable[[], object], what: str) -> None:
        """Poll `condition`; fail at once should the supervisor stop instead."""
        deadline = time.monotonic() + WAIT_SECONDS
        while not condition():
            if self.task.done():
                pytest.fail(f"the supervisor ended ({self.task.result()!r}) before {what}")
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)


def supervise_then_drain(stand_ins: StandIns, config: ServerConfig,
                         while_serving: Callable[[Supervision], Awaitable[None]]) -> int:
    """Run the supervisor, `while_serving`, then SIGTERM (through its lifecycle); its exit code."""
    async def main() -> int:
        lifecycle = Lifecycle("supervisor")
        supervision = Supervision(asyncio.create_task(_supervise(config, lifecycle)), lifecycle)
        try:
            await while_serving(supervision)
        finally:
            lifecycle.handle(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(supervision.task, WAIT_SECONDS)
            except asyncio.TimeoutError:
                stand_ins.kill_all()  # the supervisor waits for them on threads asyncio.run would join
                raise
        return code

    return asyncio.run(main())


def config_of(**overrides: object) -> ServerConfig:
    return ServerConfig(**{"address": GRPC_ADDRESS, "metrics_address": "", "workers": 2, **overrides})  # type: ignore[arg-type]


def fetch_metrics(metrics_address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The scrape as Prometheus reads it: {(sample name, labels): value}."""
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def restarts_of(samples: dict, worker: int) -> float | None:
    return samples.get(("rnn_sentiment_worker_restarts_total", (("worker", str(worker)),)))


def records(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == SUPERVISOR_LOGGER and r.getMessage() == message]


@contextmanager
def cpus_limited_to(cpus: set[int]) -> Iterator[None]:
    """This process (and the children it starts) may run on `cpus` only, for a while."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# --- the environment a worker starts with --------------------------------------------------------


def test_a_worker_is_configured_as_one_process_with_no_metrics_port_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each worker must serve alone (workers=1, or it would supervise workers of its own), leave the
    metrics port to the supervisor, write its metrics where the supervisor reads them, and know
    which worker it is; everything else the supervisor had in its environment it inherits."""
    monkeypatch.setenv("SOME_DEPLOYMENT_SETTING", "kept")
    config = ServerConfig(address=GRPC_ADDRESS, metrics_address="0.0.0.0:9464", workers=4, torch_threads=0,
                          max_batch_size=7)
    environment = _worker_environment(config, 2, "/run/metrics-dir", None)
    assert environment["RNN_SENTIMENT_WORKERS"] == "1"
    assert environment["RNN_SENTIMENT_METRICS_ADDRESS"] == ""
    assert environment["RNN_SENTIMENT_ADDRESS"] == GRPC_ADDRESS
    assert environment["RNN_SENTIMENT_MAX_BATCH_SIZE"] == "7"
    assert environment["RNN_SENTIMENT_TORCH_THREADS"] == "1"  # the resolved count, never 0
    assert environment[MULTIPROC_ENV] == "/run/metrics-dir"
    assert environment["RNN_SENTIMENT_WORKER_INDEX"] == "2"
    assert environment["SOME_DEPLOYMENT_SETTING"] == "kept"
    assert WORKER_CPU_ENV not in environment


def test_a_configured_torch_thread_count_reaches_every_worker() -> None:
    environment = _worker_environment(config_of(torch_threads=3), 0, "/run/metrics-dir", None)
    assert environment["RNN_SENTIMENT_TORCH_THREADS"] == "3"


@pytest.mark.parametrize("cpu", [0, 1])
def test_a_worker_gets_the_cpu_chosen_for_it_and_never_a_pin_from_the_supervisors_environment(
        cpu: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU 0 is a CPU like any other; a pin the supervisor itself was started with (it may be a
    worker's environment reused) is never passed on: an unpinned worker must run anywhere."""
    monkeypatch.setenv(WORKER_CPU_ENV, "5")
    assert _worker_environment(config_of(), 0, "/d", cpu)[WORKER_CPU_ENV] == str(cpu)
    assert WORKER_CPU_ENV not in _worker_environment(config_of(), 0, "/d", None)


def test_a_child_started_with_the_pre_exec_hook_ignores_sighup_and_sigint_after_exec() -> None:
    """Ignored dispositions survive exec: a worker still importing torch cannot be killed by a
    forwarded SIGHUP or a terminal's SIGINT; SIGTERM, the supervisor's way to stop it, still works."""
    probe = ("import os, signal\n"
             "print([signal.getsignal(s) == signal.SIG_IGN for s in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)])\n"
             "os.kill(os.getpid(), signal.SIGHUP); os.kill(os.getpid(), signal.SIGINT)\n"
             "print('survived')")
    child = subprocess.run([PYTHON, "-IS", "-c", probe], preexec_fn=_ignore_hangup_and_interrupt,
                           capture_output=True, text=True, timeout=WAIT_SECONDS)
    assert (child.returncode, child.stdout.split("\n")[:2]) == (0, ["[True, True, False]", "survived"]), child.stderr


# --- noticing a crash and restarting -------------------------------------------------------------


class CrashingWorkers:
    """`start` for `_check`: each start is a real process that exits with code 3 at once."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def __call__(self, slot: WorkerSlot) -> None:
        slot.process = subprocess.Popen([PYTHON, "-IS", "-c", "raise SystemExit(3)"])
        slot.started_at = time.monotonic()
        slot.restart_at = None
        self.started.append(slot.process)


def crashed_slot(backoff: RestartBackoff, start: CrashingWorkers) -> WorkerSlot:
    slot = WorkerSlot(0, backoff)
    start(slot)
    assert slot.process is not None
    slot.process.wait()
    return slot


def test_a_crashed_worker_is_restarted_once_its_backoff_is_over_and_not_before(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=SUPERVISOR_LOGGER)
    start = CrashingWorkers()
    slot = crashed_slot(RestartBackoff(30.0, 60.0, 60.0), start)
    crashed = slot.process
    assert crashed is not None
    noticed = time.monotonic()
    _check(slot, str(tmp_path), start)
    assert slot.process is None and slot.restart_at is not None and slot.restart_at >= noticed + 30.0
    (warning,) = records(caplog, "worker exited; restarting")
    assert warning.levelno == logging.WARNING
    assert {k: warning.fields[k] for k in ("worker", "exit_code", "restart_in_seconds", "crashes_in_a_row")} == {  # type: ignore[attr-defined]
        "worker": 0, "exit_code": 3, "restart_in_seconds": 30.0, "crashes_in_a_row": 1}
    _check(slot, str(tmp_path), start)  # still waiting
    assert (slot.process, len(start.started), slot.restarts) == (None, 1, 0)

    slot.restart_at = time.monotonic()  # its wait is over
    _check(slot, str(tmp_path), start)
    assert len(start.started) == 2 and slot.process is start.started[-1] and slot.process is not crashed
    assert (slot.restarts, slot.restart_at) == (1, None)
    (restarted,) = records(caplog, "worker restarted")
    assert restarted.fields["restarts"] == 1 and restarted.fields["worker_pid"] == slot.process.pid  # type: ignore[attr-defined]
    slot.process.wait()


def test_crashes_one_to_three_in_a_row_are_warnings_and_the_fourth_on_is_an_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Operators page on ERROR: a worker that crashed once is restarted and is no emergency; one that
    crashes again and again without a healthy run in between is (restarting it never stops)."""
    caplog.set_level(logging.INFO, logger=SUPERVISOR_LOGGER)
    start = CrashingWorkers()
    slot = crashed_slot(RestartBackoff(0.0, 0.0, 60.0), start)
    for _ in range(5):
        _check(slot, str(tmp_path), start)
        assert slot.process is not None, "a zero wait restarts the worker in the check that noticed its exit"
        slot.process.wait()
    crashes = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.levelname, r.fields["crashes_in_a_row"]) for r in crashes] == [  # type: ignore[attr-defined]
        ("WARNING", 1), ("WARNING", 2), ("WARNING", 3), ("ERROR", 4), ("ERROR", 5)]
    assert "crash-looping" in crashes[-1].getMessage()
    assert slot.restarts == 5


def test_a_crash_after_a_healthy_run_starts_a_new_series_and_the_log_says_how_long_it_ran(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=SUPERVISOR_LOGGER)
    start = CrashingWorkers()
    slot = crashed_slot(RestartBackoff(0.5, 30.0, 60.0), start)
    for ran_before in (None, None, 120.34):
        if ran_before is not None:
            slot.started_at = time.monotonic() - ran_before  # as if it had served two minutes
        _check(slot, str(tmp_path), start)
        slot.restart_at = time.monotonic()  # its wait is over
        _check(slot, str(tmp_path), start)
        assert slot.process is not None
        slot.process.wait()
    crashes = records(caplog, "worker exited; restarting")
    assert [r.fields["restart_in_seconds"] for r in crashes] == [0.5, 1.0, 0.5]  # type: ignore[attr-defined]
    assert [r.fields["crashes_in_a_row"] for r in crashes] == [1, 2, 1]  # type: ignore[attr-defined]
    assert crashes[-1].fields["ran_seconds"] == 120.3  # type: ignore[attr-defined]
    assert slot.restarts == 3


def test_a_running_worker_is_left_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=SUPERVISOR_LOGGER)
    running = subprocess.Popen([PYTHON, "-IS", "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        slot = WorkerSlot(0, RestartBackoff(0.0, 0.0, 60.0), process=running, started_at=time.monotonic())
        _check(slot, str(tmp_path), lambda _: pytest.fail("a running worker was restarted"))
        assert (slot.process, slot.restart_at, slot.restarts, slot.backoff.crashes_in_a_row) == (running, None, 0, 0)
        assert caplog.records == []
    finally:
        assert running.stdin is not None
        running.stdin.close()
        running.wait()


# --- the restart counter, as Prometheus reads it -------------------------------------------------


def test_the_restart_counter_has_one_sample_per_worker_read_when_scraped() -> None:
    slots = [WorkerSlot(i, RestartBackoff(0.5, 30.0, 60.0)) for i in range(2)]
    registry = CollectorRegistry()
    registry.register(WorkerRestarts(slots))  # type: ignore[arg-type]
    slots[1].restarts += 2  # after registering: the counter reads the slots at each scrape
    (family,) = text_string_to_metric_families(generate_latest(registry).decode())
    assert (family.name, family.type) == ("rnn_sentiment_worker_restarts", "counter")
    assert {(s.name, s.labels["worker"]): s.value for s in family.samples if s.name.endswith("_total")} == {
        ("rnn_sentiment_worker_restarts_total", "0"): 0.0, ("rnn_sentiment_worker_restarts_total", "1"): 2.0}


# --- the supervisor, with stand-in workers -------------------------------------------------------


def test_workers_get_the_worker_command_their_environment_and_forwarded_sighup_and_drain_exits_0(
        stand_ins: StandIns, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=SUPERVISOR_LOGGER)
    seen: dict = {}

    async def while_serving(supervision: Supervision) -> None:
        await supervision.until(lambda: stand_ins.report(0) and stand_ins.report(1), "both workers started")
        reports = [stand_ins.report(i) for i in range(2)]
        seen["reports"] = reports
        metrics_address = reports[0]["environment"][SUPERVISOR_METRICS_ENV]  # type: ignore[index]
        seen["samples"] = await asyncio.to_thread(fetch_metrics, metrics_address)
        # Idle, the supervisor sleeps between its checks (a few a second) rather than spin on a
        # core the workers need: its loop (this thread) uses next to no CPU meanwhile.
        cpu_before = time.thread_time()
        await asyncio.sleep(0.6)
        seen["idle_cpu_seconds"] = time.thread_time() - cpu_before
        supervision.lifecycle.handle(signal.SIGHUP)
        await supervision.until(lambda: all(stand_ins.hung_up(i, r["pid"]) for i, r in enumerate(reports)),  # type: ignore[index]
                                "SIGHUP forwarded to both workers")

    code = supervise_then_drain(stand_ins, config_of(metrics_address="127.0.0.1:0"), while_serving)
    assert code == 0
    reports = seen["reports"]
    for index, report in enumerate(reports):
        assert report["argv"] == ["-m", "rnn_sentiment.cli", "serve"]
        assert report["ignored"] == {"SIGHUP": True, "SIGINT": True, "SIGTERM": False}
        environment = report["environment"]
        assert environment["RNN_SENTIMENT_WORKER_INDEX"] == str(index)
        assert environment["RNN_SENTIMENT_WORKERS"] == "1" and environment["RNN_SENTIMENT_METRICS_ADDRESS"] == ""
        assert WORKER_CPU_ENV not in environment  # not pinned unless asked
    multiproc_dirs = {r["environment"][MULTIPROC_ENV] for r in reports}
    assert len(multiproc_dirs) == 1
    metrics_address = reports[0]["environment"][SUPERVISOR_METRICS_ENV]
    host, _, port = metrics_address.rpartition(":")
    assert host == "127.0.0.1" and int(port) > 0  # the port bound, for the workers' "serving" lines
    assert {restarts_of(seen["samples"], i) for i in range(2)} == {0.0}
    assert seen["idle_cpu_seconds"] < 0.05  # about 0.001 s; spinning, 0.2 s and more
    # Gone after the drain: the metrics port and the workers' metric files.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=WAIT_SECONDS).close()
    assert not Path(multiproc_dirs.pop()).exists()
    (started,) = records(caplog, "supervising workers")
    assert {k: started.fields[k] for k in ("workers", "metrics_address", "pids", "worker_cpus")} == {  # type: ignore[attr-defined]
        "workers": 2, "metrics_address": metrics_address, "pids": f"{reports[0]['pid']},{reports[1]['pid']}",
        "worker_cpus": "unpinned"}
    assert records(caplog, "pin_workers: fewer usable CPUs than workers; running them unpinned") == []


def test_a_crashed_worker_is_restarted_and_counted_while_the_other_keeps_running(
        stand_ins: StandIns, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=SUPERVISOR_LOGGER)
    monkeypatch.setenv("STAND_IN_0", "crash_first")
    seen: dict = {}

    async def while_serving(supervision: Supervision) -> None:
        await supervision.until(lambda: stand_ins.report(0, 1) and stand_ins.report(1), "worker 0 restarted")
        metrics_address = stand_ins.report(1)["environment"][SUPERVISOR_METRICS_ENV]  # type: ignore[index]
        seen["samples"] = await asyncio.to_thread(fetch_metrics, metrics_address)

    assert supervise_then_drain(stand_ins, config_of(metrics_address="127.0.0.1:0", restart_backoff_seconds=0.05),
                                while_serving) == 0  # the crash was dealt with: not counted at the exit
    assert (restarts_of(seen["samples"], 0), restarts_of(seen["samples"], 1)) == (1.0, 0.0)
    assert stand_ins.report(1, 1) is None  # the other worker was never restarted
    restarted = stand_ins.report(0, 1)
    assert restarted is not None and restarted["environment"]["RNN_SENTIMENT_WORKER_INDEX"] == "0"
    (crash,) = records(caplog, "worker exited; restarting")
    assert crash.levelno == logging.WARNING
    assert (crash.fields["worker"], crash.fields["exit_code"]) == (0, 3)  # type: ignore[attr-defined]


def test_sighup_and_the_drain_reach_the_workers_while_a_crashed_one_waits_for_its_restart(
        stand_ins: StandIns, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A crash loop waits ever longer between restarts: an operator's SIGHUP (reload) and SIGTERM
    (drain) during that wait must still reach the workers that run, and exit 0."""
    caplog.set_level(logging.INFO, logger=SUPERVISOR_LOGGER)
    monkeypatch.setenv("STAND_IN_0", "crash_first")

    async def while_serving(supervision: Supervision) -> None:
        await supervision.until(lambda: records(caplog, "worker exited; restarting"), "worker 0's crash noticed")
        supervision.lifecycle.handle(signal.SIGHUP)
        serving = stand_ins.report(1)
        assert serving is not None
        await supervision.until(lambda: stand_ins.hung_up(1, serving["pid"]), "SIGHUP forwarded to worker 1")

    assert supervise_then_drain(stand_ins, config_of(restart_backoff_seconds=60.0), while_serving) == 0
    assert stand_ins.report(0, 1) is None  # still waiting when the drain came: never restarted
    (stopped,) = records(caplog, "stopped")
    assert stopped.fields["worker_exit_codes"] == "0"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("on_sigterm", "exit_code"), [
    (("exit0", "exit0"), 0),
    (("die", "die"), 0),  # killed by SIGTERM while still importing: nothing was in flight
    (("exit0", "exit1"), 1),
    (("die", "exit1"), 1),
])
def test_the_supervisor_exits_0_only_when_every_worker_exits_0_or_dies_of_sigterm(
        on_sigterm: tuple[str, str], exit_code: int, stand_ins: StandIns, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=SUPERVISOR_LOGGER)
    for index, behaviour in enumerate(on_sigterm):
        monkeypatch.setenv(f"STAND_IN_{index}", behaviour)
    monkeypatch.setenv("STAND_IN_DRAIN_SECONDS", "0.3")  # workers that take a moment to drain, as real ones do

    async def while_serving(supervision: Supervision) -> None:
        await supervision.until(lambda: stand_ins.report(0) and stand_ins.report(1), "both workers started")

    assert supervise_then_drain(stand_ins, config_of(), while_serving) == exit_code
    (started,) = records(caplog, "supervising workers")
    assert started.fields["metrics_address"] == "off"  # type: ignore[attr-defined]
    assert stand_ins.report(0)["environment"][SUPERVISOR_METRICS_ENV] == ""  # type: ignore[index]
    (stopped,) = records(caplog, "stopped")
    expected = {"exit0": "0", "exit1": "1", "die": str(-signal.SIGTERM)}
    assert sorted(stopped.fields["worker_exit_codes"].split(",")) == sorted(expected[b] for b in on_sigterm)  # type: ignore[attr-defined]


def test_workers_that_exit_1_the_instant_they_get_sigterm_still_make_the_supervisor_exit_1(
        stand_ins: StandIns, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The supervisor took the workers to wait for after sending SIGTERM: those already gone were
    reaped by that poll and left out, so 8 workers exiting 1 at once gave 1-6 exit codes logged
    (19 drains of 20), and twice none and exit 0."""
    caplog.set_level(logging.INFO, logger=SUPERVISOR_LOGGER)
    workers = 8
    for index in range(workers):
        monkeypatch.setenv(f"STAND_IN_{index}", "exit1_at_once")

    for drain in range(3):  # a race: each drain lost it about 19 times in 20
        async def while_serving(supervision: Supervision) -> None:
            await supervision.until(lambda: all(stand_ins.report(i, drain) for i in range(workers)),
                                    "every worker started")

        assert supervise_then_drain(stand_ins, config_of(workers=workers), while_serving) == 1
        stopped = records(caplog, "stopped")[-1]
        assert stopped.fields["worker_exit_codes"] == ",".join(["1"] * workers)  # type: ignore[attr-defined]


def test_a_drain_still_exits_0_when_the_metrics_directory_was_removed_meanwhile(stand_ins: StandIns) -> None:
    """A temporary-file cleaner may remove the supervisor's directory under /tmp while it runs for
    weeks; its removal at the exit is a clean-up, never a reason to exit 1 after a clean drain."""
    async def while_serving(supervision: Supervision) -> None:
        await supervision.until(lambda: stand_ins.report(0) and stand_ins.report(1), "both workers started")
        shutil.rmtree(stand_ins.report(0)["environment"][MULTIPROC_ENV])  # type: ignore[index]

    assert supervise_then_drain(stand_ins, config_of(), while_serving) == 0


def test_pinned_workers_each_get_a_cpu_of_their_own_and_keep_it_across_a_restart(
        stand_ins: StandIns, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        pytest.skip("pinning two workers needs two CPUs")
    caplog.set_level(logging.INFO, logger=SUPERVISOR_LOGGER)
    monkeypatch.setenv("STAND_IN_1", "crash_first")
    cpus = usable[:2]

    async def while_serving(supervision: Supervision) -> None:
        await supervision.until(lambda: stand_ins.report(0) and stand_ins.report(1, 1), "worker 1 restarted")

    with cpus_limited_to(set(cpus)):
        assert supervise_then_drain(stand_ins, config_of(pin_workers=True, restart_backoff_seconds=0.05), while_serving) == 0
    pins = [stand_ins.report(i, n)["environment"].get(WORKER_CPU_ENV) for i, n in ((0, 0), (1, 0), (1, 1))]  # type: ignore[index]
    assert pins == [str(cpus[0]), str(cpus[1]), str(cpus[1])]
    (started,) = records(caplog, "supervising workers")
    assert started.fields["worker_cpus"] == f"{cpus[0]},{cpus[1]}"  # type: ignore[attr-defined]
    assert records(caplog, "pin_workers: fewer usable CPUs than workers; running them unpinned") == []


def test_pinning_more_workers_than_cpus_warns_and_runs_them_unpinned(
        stand_ins: StandIns, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=SUPERVISOR_LOGGER)

    async def while_serving(supervision: Supervision) -> None:
        await supervision.until(lambda: stand_ins.report(0) and stand_ins.report(1), "both workers started")

    with cpus_limited_to({min(os.sched_getaffinity(0))}):
        assert supervise_then_drain(stand_ins, config_of(pin_workers=True), while_serving) == 0
    assert [WORKER_CPU_ENV in stand_ins.report(i)["environment"] for i in range(2)] == [False, False]  # type: ignore[index]
    (warning,) = records(caplog, "pin_workers: fewer usable CPUs than workers; running them unpinned")
    assert warning.levelno == logging.WARNING
    assert warning.fields == {"workers": 2, "cpus": 1}  # type: ignore[attr-defined]


def test_the_supervisor_refuses_port_0_because_the_workers_must_share_one_port(stand_ins: StandIns) -> None:
    async def main() -> None:
        lifecycle = Lifecycle("supervisor")
        lifecycle.handle(signal.SIGTERM)  # should it start workers anyway, they are stopped at once
        with pytest.raises(ValueError, match=r"--workers > 1 needs a fixed port: the workers must all bind the same one"):
            await _supervise(config_of(address="127.0.0.1:0"), lifecycle)

    asyncio.run(main())
    assert stand_ins.report(0) is None  # refused before any worker was started
