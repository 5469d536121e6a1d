"""Worker pinning: which CPUs workers get, and that a pin covers every thread of the process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from rnn_sentiment.server import affinity

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only")


def test_each_worker_gets_its_own_cpu_from_the_usable_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(affinity, "usable_cpus", lambda: [2, 5, 7])
    assert affinity.worker_cpus(2) == [2, 5]
    assert affinity.worker_cpus(3) == [2, 5, 7]


def test_no_pinning_for_one_worker_or_more_workers_than_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(affinity, "usable_cpus", lambda: [0, 1])
    assert affinity.worker_cpus(1) is None  # one worker should be free to use every core
    assert affinity.worker_cpus(3) is None


def test_pin_covers_threads_started_before_and_after() -> None:
    cpu = min(os.sched_getaffinity(0))
    script = textwrap.dedent(f"""
        import os, threading, time
        from pathlib import Path
        from rnn_sentiment.server.affinity import pin_from_environment
        stop = threading.Event()
        before = threading.Thread(target=stop.wait); before.start()
        assert pin_from_environment() == {cpu}
        after = threading.Thread(target=stop.wait); after.start()
        masks = {{task.name: sorted(os.sched_getaffinity(int(task.name))) for task in Path("/proc/self/task").iterdir()}}
        stop.set()
        print(len(masks), sorted({{tuple(m) for m in masks.values()}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, affinity.WORKER_CPU_ENV: str(cpu)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", f"[({cpu},)]"]


def test_without_the_variable_nothing_is_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(affinity.WORKER_CPU_ENV, raising=False)
    before = os.sched_getaffinity(0)
    assert affinity.pin_from_environment() is None
    assert os.sched_getaffinity(0) == before


def test_usable_cpus_are_this_processs_own_not_another_processs() -> None:
    """A worker started under `taskset` (or in a cpuset) may use only its own CPUs; pinning must
    choose among those, not among the CPUs some other process (pid 1) may use."""
    cpu = max(os.sched_getaffinity(0))
    script = "from rnn_sentiment.server.affinity import usable_cpus; print(usable_cpus())"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"[{cpu}]"


def test_pinning_a_worker_whose_threads_come_and_go_never_fails() -> None:
    """gRPC's and the model's threads start and end while a worker pins itself: a thread listed in
    /proc/self/task may be gone by the time it is pinned, and that must not stop the worker."""
    cpu = min(os.sched_getaffinity(0))
    script = textwrap.dedent(f"""
        import threading, time
        from rnn_sentiment.server.affinity import pin_this_process
        stop = threading.Event()
        def churn():
            while not stop.is_set():
                thread = threading.Thread(target=lambda: None); thread.start(); thread.join()
        churners = [threading.Thread(target=churn) for _ in range(2)]
        for thread in churners: thread.start()
        try:
            started = time.monotonic()
            while time.monotonic() - started < 1.0:  # ~500 threads gone mid-walk in a second here
                pin_this_process({cpu})
        finally:
            stop.set()
        print("pinned")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["pinned"]
