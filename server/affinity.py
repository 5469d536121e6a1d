"""Worker CPU pinning (`--pin-workers`): each worker process and all its threads on one CPU.

A worker is an event loop thread, a model thread and gRPC's poller threads, which hand every
request to each other; pinned, they share one core's caches and the workers never contend for
a core. Off by default: a pinned worker cannot move away from another busy process on its core,
and the kernel keeps handing it its share of connections. Linux only; elsewhere workers run
unpinned. Kept because it wins the A/B of `make bench-speedcode` (docs/performance.md).
"""

from __future__ import annotations

import os
from pathlib import Path

WORKER_CPU_ENV = "RNN_SENTIMENT_WORKER_CPU"  # set by the supervisor for each worker it starts


def usable_cpus() -> list[int]:
    """The CPUs this process may run on, in order (a container's cpuset, not the host's)."""
    if not hasattr(os, "sched_getaffinity"):
        return []
    return sorted(os.sched_getaffinity(0))


def worker_cpus(workers: int) -> list[int] | None:
    """One CPU per worker, or None when pinning cannot give every worker a CPU of its own."""
    cpus = usable_cpus()
    if workers < 2 or len(cpus) < workers:
        return None  # one worker should use every core; more workers than CPUs would share anyway
    return cpus[:workers]


def pin_this_process(cpu: int) -> None:
    """Pin every thread of this process to `cpu`; threads started later inherit it."""
    # sched_setaffinity(0) would move only the calling thread: walk the process's threads.
    for task in Path("/proc/self/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), {cpu})
        except ProcessLookupError:
            pass  # the thread ended meanwhile


def pin_from_environment() -> int | None:
    """In a worker: apply the CPU the supervisor chose (WORKER_CPU_ENV); returns it, or None."""
    value = os.environ.get(WORKER_CPU_ENV, "")
    if not value:
        return None
    cpu = int(value)
    pin_this_process(cpu)
    return cpu
