"""The work a worker process does in its own copy of the tree: a module's coverage pre-pass (its
baseline) and single mutants. Workers never touch the sessions: results go back to the parent,
the one writer of each module's SQLite session."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mutation.selection import Baseline, LineCoverage, tests_alive
from mutation.tree import environment

_WORK: Path | None = None
# A test server that could not bind its port fails the run for a reason that has nothing to do
# with the mutant (two workers drew the same free port): such a run is repeated, never counted.
PREPASS_TIMEOUTS = 3
SETUP_CONTEXT = "@setup"  # the suffix mutate_contexts gives lines run in a test's setup (tree.py)
PORT_CLASH = re.compile(r"address already in use|failed to bind", re.IGNORECASE)


def pytest_command(tests: tuple[str, ...] | list[str], timeout: float, extra: tuple[str, ...] = ()) -> str:
    """A pytest run for cosmic-ray (which shlex-splits it): stop at the first failure, no random
    order, no cache writes, no rewriting of assertions (every test file is imported afresh: the
    copy writes no bytecode), the suite's own addopts off."""
    flags = ["-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", "--assert=plain", "-o", "addopts=",
             "--no-header", "--tb=line", "--timeout", str(int(timeout)), *extra]
    return shlex.join([sys.executable, "-m", "pytest", *flags, *tests])


def take_copy(copies) -> None:
    """Worker initializer: claim one private copy for the worker's life."""
    global _WORK
    _WORK = Path(copies.get())
    os.environ.update(environment(_WORK))
    os.chdir(_WORK / "tree")  # cosmic-ray applies mutants to module paths relative to here


@dataclass(frozen=True)
class PrepassResult:
    module: str
    passed: bool
    output: str
    coverage: LineCoverage | None  # None where coverage.py is not installed
    baseline: Baseline


def prepass(module: str, tests: tuple[str, ...], timeout: float) -> PrepassResult:
    """The selection once, unmutated: it must pass; under coverage it also says which test ran
    which line of `module`, in the pytest process and in its children."""
    assert _WORK is not None
    out = _WORK / "coverage" / module.replace("/", "__")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.iterdir():
        stale.unlink()
    try:
        import coverage  # noqa: F401
        measured = True
    except ImportError:
        measured = False
    pattern = f"*/{module}"
    (out / "main.rc").write_text(f"[run]\ndata_file = {out / 'main.coverage'}\ninclude = {pattern}\n")
    # sigterm and os._exit: a server stopped by a signal or a worker leaving through os._exit
    # still writes what it ran, or its lines would read as "not covered".
    (out / "sub.rc").write_text(f"[run]\ndata_file = {out / 'sub.coverage'}\nparallel = true\ninclude = {pattern}\n"
                                f"sigterm = true\npatch = _exit\n")
    env = dict(os.environ, MUTATE_DURATIONS=str(out / "durations.json"), MUTATE_SUBPROCESS_RC=str(out / "sub.rc"),
               MUTATE_PROCESS_LOG=str(out / "processes.log"))
    command = shlex.split(pytest_command(tests, timeout, ("-p", "mutate_contexts")))
    if measured:
        command[1:3] = ["-m", "coverage", "run", f"--rcfile={out / 'main.rc'}", "-m", "pytest"]
    started = time.monotonic()
    # `timeout` bounds each test; the whole selection under coverage may take a few of those
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output = process.communicate(timeout=PREPASS_TIMEOUTS * timeout)[0][-5000:]
        passed = process.returncode == 0
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its servers too: they share its session
        process.communicate()
        passed, output = False, f"timed out after {PREPASS_TIMEOUTS * timeout:.0f} s"
    total = time.monotonic() - started
    seconds, setup, spans, untraced = {}, {}, {}, []
    if (out / "durations.json").exists():
        recorded = json.loads((out / "durations.json").read_text())
        seconds, setup, spans, untraced = recorded["seconds"], recorded["setup"], recorded["spans"], recorded["untraced"]
    baseline = Baseline(startup=max(0.0, total - sum(seconds.values())), by_test=seconds,
                        largest_setup=max(setup.values(), default=0.0), total=total)
    lines = read_coverage(out, _WORK / "tree" / module, spans, untraced) if measured and passed else None
    return PrepassResult(module, passed, output, lines, baseline)


def read_coverage(out: Path, source: Path, spans: dict[str, list[float]], untraced: list[str]) -> LineCoverage:
    from coverage import CoverageData

    wanted = str(source.resolve())
    by_test: dict[int, set[str]] = {}
    outside: set[int] = set()
    main = CoverageData(basename=str(out / "main.coverage"))
    main.read()
    for name in main.measured_files():
        if str(Path(name).resolve()) != wanted:
            continue
        for line, contexts in main.contexts_by_lineno(name).items():
            for context in contexts:
                if context and not context.endswith(SETUP_CONTEXT):
                    by_test.setdefault(line, set()).add(context)
                else:  # outside any test, or in a fixture's setup whose result later tests may share
                    outside.add(line)
    starts: dict[int, list[float]] = {}
    log = out / "processes.log"
    for entry in (log.read_text().split("\n") if log.exists() else []):
        if entry.strip():
            pid, started = entry.split()
            starts.setdefault(int(pid), []).append(float(started))
    unattributed: set[int] = set()
    by_subprocess_test: dict[int, set[str]] = {}
    for path in out.glob("sub.coverage.*"):
        data = CoverageData(basename=str(path))
        data.read()
        ran = set().union(*(data.lines(name) or () for name in data.measured_files()
                            if str(Path(name).resolve()) == wanted))
        if not ran:
            continue
        ended = path.stat().st_mtime  # coverage writes a child's data as it exits
        pid = re.search(r"\.pid(\d+)\.", path.name)
        began = [s for s in starts.get(int(pid.group(1)), []) if s <= ended] if pid else []
        alive = tests_alive(max(began), ended, {t: tuple(s) for t, s in spans.items()}) if began else frozenset()
        if not alive:
            unattributed |= ran
            continue
        for line in ran:
            by_subprocess_test.setdefault(line, set()).update(alive)
    return LineCoverage({line: frozenset(tests) for line, tests in by_test.items()}, frozenset(outside),
                        frozenset(unattributed), {line: frozenset(t) for line, t in by_subprocess_test.items()},
                        frozenset(untraced))


@dataclass(frozen=True)
class MutantJob:
    module: str
    job_id: str
    mutations: list  # cosmic-ray MutationSpec values
    tests: tuple[str, ...]
    timeout: float


def run_mutant(job: MutantJob) -> tuple[str, str, dict, float]:
    """Apply one mutant in this worker's copy, run its tests, put the source back."""
    from cosmic_ray.mutating import mutate_and_test
    from cosmic_ray.work_item import TestOutcome

    started = time.monotonic()
    command = pytest_command(job.tests, job.timeout)
    for _attempt in range(3):
        result = mutate_and_test(job.mutations, command, job.timeout)
        if not (result.test_outcome == TestOutcome.KILLED and PORT_CLASH.search(result.output or "")):
            break
    fields = {"worker_outcome": result.worker_outcome.value, "output": result.output,
              "test_outcome": result.test_outcome.value if result.test_outcome else None, "diff": result.diff}
    return job.module, job.job_id, fields, time.monotonic() - started
