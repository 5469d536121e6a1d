"""A cgroup CPU quota read from files laid out as the kernel lays them (v1 and v2), and what it does
to the default worker count. tests/system/test_docker_stack.py runs a real `docker run --cpus 1`."""

from __future__ import annotations

from pathlib import Path

import pytest

from rnn_sentiment.server import config as config_module
from rnn_sentiment.server.config import ServerConfig
from rnn_sentiment.server.cpu_quota import cpu_quota, cpus_within_quota


# (cgroup files under the mount root -> their content, /proc/self/cgroup, the quota in CPUs)
LAYOUTS = {
    "v2, the process's own cgroup": (
        {"cgroup.controllers": "cpuset cpu io memory pids", "kubepods/pod1/cpu.max": "150000 100000"},
        "0::/kubepods/pod1", 1.5),
    "v2, a parent's limit binds a child without one": (
        {"system.slice/cpu.max": "200000 100000", "system.slice/rnn.service/cpu.max": "max 100000"},
        "0::/system.slice/rnn.service", 2.0),
    "v2, the smallest limit along the path": (
        {"pod/cpu.max": "100000 100000", "pod/container/cpu.max": "400000 100000"}, "0::/pod/container", 1.0),
    "v2, max everywhere": ({"user.slice/cpu.max": "max 100000"}, "0::/user.slice", None),
    # What `docker run --cpus 1` shows on a cgroup v1 host: /proc/self/cgroup names the host's path,
    # while the container's own cgroup is mounted at the controller's root.
    "v1 in a container: the mount's root": (
        {"cpu/cpu.cfs_quota_us": "100000", "cpu/cpu.cfs_period_us": "100000",
         "memory/memory.limit_in_bytes": "9223372036854771712"},
        "4:memory:/docker/d849\n2:cpuacct:/docker/d849\n1:cpu:/docker/d849\n0::/docker/d849", 1.0),
    "v1, cpu and cpuacct mounted together": (
        {"cpu,cpuacct/job/cpu.cfs_quota_us": "50000", "cpu,cpuacct/job/cpu.cfs_period_us": "100000"},
        "3:cpu,cpuacct:/job", 0.5),
    "v1, -1 is no limit": ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, "1:cpu:/", None),
    # The smallest values are a quota still; a cpu.max without a period means the kernel's default.
    "the smallest quota": ({"cpu.max": "1 1000"}, "0::/", 0.001),
    "the smallest period": ({"cpu.max": "5 1"}, "0::/", 5.0),
    "no period": ({"cpu.max": "250000"}, "0::/", 2.5),
    **{f"odd cpu.max {content!r}": ({"cpu.max": content}, "0::/", None)
       for content in ("", "garbage 100000", "100000 0", "100000 -1", "-5 100000", "0 100000")},
}


@pytest.mark.parametrize(("files", "membership", "cpus"), LAYOUTS.values(), ids=LAYOUTS.keys())
def test_the_quota_from_the_cgroup_files(tmp_path: Path, files: dict[str, str], membership: str,
                                         cpus: float | None) -> None:
    root = tmp_path / "cgroup"
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content + "\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(membership + "\n")
    assert cpu_quota(root, proc) == cpus


def test_no_procfs_entry_is_no_quota(tmp_path: Path) -> None:
    assert cpu_quota(tmp_path, tmp_path / "missing") is None


def test_this_machine_answers_without_error() -> None:
    quota = cpu_quota()
    assert quota is None or quota > 0


def test_workers_are_whole_cpus_of_the_quota_never_more_than_visible() -> None:
    assert cpus_within_quota(64, 2.0) == 2
    assert cpus_within_quota(64, 1.5) == 1  # a worker per whole CPU of time
    assert cpus_within_quota(64, 0.5) == 1  # always at least one
    assert cpus_within_quota(2, 8.0) == 2  # a quota above the visible CPUs adds none
    assert cpus_within_quota(4, None) == 4
    assert cpus_within_quota(0, None) == 1


def test_the_default_worker_count_follows_the_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    visible = ServerConfig().resolved_workers
    monkeypatch.setattr(config_module, "cpu_quota", lambda: 1.0)
    assert ServerConfig().resolved_workers == 1
    assert ServerConfig(workers=3).resolved_workers == 3  # an explicit count is the operator's call
    monkeypatch.setattr(config_module, "cpu_quota", lambda: None)
    assert ServerConfig().resolved_workers == visible
