"""Worker CPU pinning (`--pin-workers`): each worker process and all its threads on one CPU.

A worker is an event loop thread, a model thread and gRPC's poller threads, which hand every
request to each other. Left to the scheduler, they migrate between cores and meet cold caches;
pinned, a worker's threads share one core's caches and the workers never contend for a core.
But a pinned worker cannot move away from another busy process on its core. Measured with
`--workers 2` on 2 cores (h2load on the same machine, alternating rounds, docs/performance.md):
+2-12% req/s with h2load alone beside it; with h2load also writing its per-request log (the
benchmark's setting) -4 to +1% at concurrency 32 and +9% at 128 at first, +4 to +12% at every
concurrency once the per-request Python shrank (metric buffer, length runs), but for one +1.5%.
It stays off by default, since the kernel keeps handing a pinned worker its share of connections
however busy its core is: turn it on where the workers have the cores to themselves. Linux
only; elsewhere workers run unpinned.
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
