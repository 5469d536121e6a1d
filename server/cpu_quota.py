"""The CPUs a cgroup CPU quota lets this process use: `docker run --cpus`, a Kubernetes CPU limit.

A quota is not an affinity: a container limited to 2 CPUs on a 64-core host still sees 64 CPUs in
`os.sched_getaffinity` and may run on any of them, for 2 CPUs' worth of time per period. One worker
per visible CPU there would start 64 workers (each holds the model: tens of GB) that the kernel
throttles to the time of 2. So the default worker count is capped by the quota (ServerConfig.
resolved_workers). Read from the cgroup files, cgroup v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us`
over `cpu.cfs_period_us`); a limit set on a parent cgroup binds too, so the smallest along the
path counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """CPUs' worth of time per period this process may use (2.0 for `--cpus 2`), or None without a quota.

    root: where the cgroup filesystems are mounted; proc_cgroup: this process's cgroup paths
    (both parameters exist so the parsing is tested on files laid out as the kernel lays them).
    """
    try:
        memberships = proc_cgroup.read_text().splitlines()
    except OSError:
        return None  # not Linux, or no procfs: no quota we can see
    limits: list[float] = []
    for line in memberships:
        # "hierarchy-ID:controller-list:cgroup-path"; v2's unified hierarchy is "0::/path".
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0":  # v1 numbers its hierarchies from 1
            limits += _limits_along(root, path, _v2_limit)
        elif "cpu" in controllers.split(","):
            # v1 mounts a hierarchy at its controller list: "cpu", or "cpu,cpuacct" when joined.
            limits += _limits_along(root / controllers, path, _v1_limit)
    return min(limits) if limits else None


def _limits_along(mount: Path, path: str, read_limit: Callable[[Path], float | None]) -> list[float]:
    """The limits set on `path`'s cgroup and its ancestors under `mount`, where their files exist.

    Inside a container the mount is usually the container's own cgroup while /proc/self/cgroup still
    names the host's path (cgroup v1, or v2 without a cgroup namespace): then the host's path is
    absent under the mount and the mount's own files are the container's."""
    if not mount.is_dir():
        return []
    parts = Path(path.lstrip("/")).parts
    cgroup = mount.joinpath(*parts)
    # The cgroup itself, then each parent up to the mount's root (as many parents as the path has parts).
    levels = (read_limit(directory) for directory in (cgroup, *cgroup.parents[:len(parts)]))
    return [limit for limit in levels if limit is not None]


def _v2_limit(directory: Path) -> float | None:
    try:
        quota, _, period = (directory / "cpu.max").read_text().strip().partition(" ")
    except OSError:
        return None
    if quota == "max":
        return None
    return _ratio(quota, period or "100000")


def _v1_limit(directory: Path) -> float | None:
    try:
        quota = (directory / "cpu.cfs_quota_us").read_text().strip()
        period = (directory / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return _ratio(quota, period)  # a quota of -1 is "no limit"


def _ratio(quota: str, period: str) -> float | None:
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return quota_us / period_us


def cpus_within_quota(visible: int, quota: float | None) -> int:
    """How many workers `visible` CPUs give under `quota`: whole CPUs of the quota (at least one),
    never more than are visible. A fractional quota rounds down: each worker gets a whole CPU's
    time rather than one of them being throttled for part of every period."""
    if quota is None:
        return max(1, visible)
    return max(1, min(visible, int(quota)))
