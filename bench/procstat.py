"""CPU time and resident memory of a process tree, read from /proc (Linux), plus machine facts."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces; everything after its closing parenthesis splits.
    return raw[raw.rindex(")") + 2:].split()


def tree_pids(root: int) -> list[int]:
    """`root` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        if _stat_fields(pid) is not None:
            found.append(pid)
            stack.extend(children.get(pid, []))
    return found


@dataclass(frozen=True)
class TreeSample:
    cpu_seconds: float  # user + system, summed over the tree's live processes
    rss_bytes: int  # summed
    max_rss_bytes: int  # the largest single process (one worker)
    processes: int


def sample_tree(root: int) -> TreeSample:
    cpu, rss, largest, count = 0.0, 0, 0, 0
    for pid in tree_pids(root):
        fields = _stat_fields(pid)
        if fields is None:
            continue
        # Fields 14 and 15 of /proc/PID/stat (utime, stime); index 0 here is field 3 (state).
        cpu += (int(fields[11]) + int(fields[12])) / _TICKS
        process_rss = int(fields[21]) * _PAGE  # field 24: rss in pages
        rss += process_rss
        largest = max(largest, process_rss)
        count += 1
    return TreeSample(cpu, rss, largest, count)


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (from /proc/stat), to see other load."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / _TICKS


def machine_facts() -> dict[str, object]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "mem_total_gib": mem_total_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg()[0],
    }
