"""A cgroup CPU quota read from files laid out as the kernel lays them (v1 and v2), and what it does
to the default worker count. tests/system/test_docker_stack.py runs a real `docker run --cpus 1`."""

from __future__ import annotations

from pathlib import Path

import pytest

from rnn_sentiment.server import config as config_module
from rnn_sentiment.server.config import ServerConfig
from rnn_sentiment.server.cpu_quota import cpu_quota, cpus_within_quota


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def _proc_cgroup(tmp_path: Path, text: str) -> Path:
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(text)
    return proc


def test_v2_quota_of_the_process_cgroup(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    _write(root / "cgroup.controllers", "cpuset cpu io memory pids")
    _write(root / "kubepods" / "pod1" / "cpu.max", "150000 100000")  # limits.cpu: 1500m
    proc = _proc_cgroup(tmp_path, "0::/kubepods/pod1\n")
    assert cpu_quota(root, proc) == 1.5


def test_v2_a_parent_limit_binds_a_child_without_one(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    _write(root / "system.slice" / "cpu.max", "200000 100000")
    _write(root / "system.slice" / "rnn.service" / "cpu.max", "max 100000")
    proc = _proc_cgroup(tmp_path, "0::/system.slice/rnn.service\n")
    assert cpu_quota(root, proc) == 2.0


def test_the_smallest_limit_along_the_path_counts(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    _write(root / "pod" / "cpu.max", "100000 100000")
    _write(root / "pod" / "container" / "cpu.max", "400000 100000")
    proc = _proc_cgroup(tmp_path, "0::/pod/container\n")
    assert cpu_quota(root, proc) == 1.0


def test_v2_max_everywhere_is_no_quota(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    _write(root / "user.slice" / "cpu.max", "max 100000")
    proc = _proc_cgroup(tmp_path, "0::/user.slice\n")
    assert cpu_quota(root, proc) is None


def test_v1_inside_a_container_reads_the_mount_root(tmp_path: Path) -> None:
    # What `docker run --cpus 1` shows on a cgroup v1 host: /proc/self/cgroup names the host's path,
    # while the container's own cgroup is mounted at the controller's root.
    root = tmp_path / "cgroup"
    _write(root / "cpu" / "cpu.cfs_quota_us", "100000")
    _write(root / "cpu" / "cpu.cfs_period_us", "100000")
    _write(root / "memory" / "memory.limit_in_bytes", "9223372036854771712")
    proc = _proc_cgroup(tmp_path, "4:memory:/docker/d849\n2:cpuacct:/docker/d849\n1:cpu:/docker/d849\n0::/docker/d849\n")
    assert cpu_quota(root, proc) == 1.0


def test_v1_joined_cpu_and_cpuacct_mount(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    _write(root / "cpu,cpuacct" / "job" / "cpu.cfs_quota_us", "50000")
    _write(root / "cpu,cpuacct" / "job" / "cpu.cfs_period_us", "100000")
    proc = _proc_cgroup(tmp_path, "3:cpu,cpuacct:/job\n")
    assert cpu_quota(root, proc) == 0.5


def test_v1_minus_one_is_no_quota(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    _write(root / "cpu" / "cpu.cfs_quota_us", "-1")
    _write(root / "cpu" / "cpu.cfs_period_us", "100000")
    proc = _proc_cgroup(tmp_path, "1:cpu:/\n")
    assert cpu_quota(root, proc) is None


@pytest.mark.parametrize("content", ["", "garbage 100000", "100000 0", "100000 -1", "-5 100000", "0 100000"])
def test_unreadable_or_odd_files_are_no_quota(tmp_path: Path, content: str) -> None:
    root = tmp_path / "cgroup"
    _write(root / "cpu.max", content)
    proc = _proc_cgroup(tmp_path, "0::/\n")
    assert cpu_quota(root, proc) is None


@pytest.mark.parametrize(("content", "cpus"), [("1 1000", 0.001), ("5 1", 5.0), ("250000", 2.5)])
def test_any_positive_quota_and_period_count(tmp_path: Path, content: str, cpus: float) -> None:
    # The smallest values are a quota still; a cpu.max without a period means the kernel's default.
    root = tmp_path / "cgroup"
    _write(root / "cpu.max", content)
    proc = _proc_cgroup(tmp_path, "0::/\n")
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
