"""A private copy of the working tree that imports as `rnn_sentiment`, one per worker.

cosmic-ray writes every mutant to the file on disk; the copy keeps that away from anyone running
the suite meanwhile, and one copy per worker keeps two workers' mutants apart. The path shim maps
`rnn_sentiment.*` into the copy (pyproject.toml's `package-dir`), so the integration tests'
server subprocesses run the mutant too, and carries the coverage hooks of the pre-pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: cosmic-ray brings `toml`, which reads the same files
    import toml as tomllib  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parent.parent.parent
_IGNORED_NAMES = shutil.ignore_patterns(".venv", ".peers-venv", ".git", "build", "__pycache__", "*.egg-info",
                                        ".pytest_cache", "node_modules", ".deploy-cache", "runs", ".hypothesis")

# Started by the interpreter of every process whose path holds the shim: a server subprocess
# measures itself when the pre-pass's pytest has set COVERAGE_PROCESS_START (coverage's own .pth
# does the same where coverage is installed in site-packages; starting twice is a no-op).
# Each such process notes when it started (its coverage data file's time is when it ended): the
# tests running meanwhile are the ones that can have made it run a line.
SITECUSTOMIZE = '''import os
if os.environ.get("COVERAGE_PROCESS_START"):
    try:
        import coverage
    except ImportError:
        pass
    else:
        if os.environ.get("MUTATE_PROCESS_LOG"):
            import time
            with open(os.environ["MUTATE_PROCESS_LOG"], "a") as log:
                log.write(f"{os.getpid()} {time.time()}\\n")
        coverage.process_startup()
'''

# A pytest plugin (`-p mutate_contexts`) for the pre-pass: names the coverage context after the
# running test, records each test's seconds and wall-clock span, and turns subprocess coverage on for the children.
CONTEXT_PLUGIN = '''import json, os, sys, time
import pytest

_seconds, _setup, _spans = {}, {}, {}
SETUP = "@setup"
# A test that sets its own trace function (sys.settrace) blinds coverage while it runs: it is
# recorded as untraced (it then judges every mutant) and coverage's tracer is put back after it.
_untraced, _current = set(), [None]
_settrace = sys.settrace


def _watching_settrace(function):
    if _current[0] is not None:
        _untraced.add(_current[0])
    return _settrace(function)


def _coverage():
    try:
        import coverage
    except ImportError:
        return None
    return coverage.Coverage.current()


def pytest_configure(config):
    if os.environ.get("MUTATE_SUBPROCESS_RC") and _coverage() is not None:
        os.environ["COVERAGE_PROCESS_START"] = os.environ["MUTATE_SUBPROCESS_RC"]
        sys.settrace = _watching_settrace


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    cov = _coverage()
    if cov is not None:
        cov.switch_context(item.nodeid)
    started, tracer = time.time(), sys.gettrace()
    _current[0] = item.nodeid
    try:
        return (yield)
    finally:
        _current[0] = None
        _spans[item.nodeid] = (started, time.time())
        if cov is not None:
            if sys.gettrace() is not tracer:
                _settrace(tracer)
            cov.switch_context("")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    # what fixtures set up may be used by later tests too: its lines get a context of their own
    cov = _coverage()
    if cov is not None:
        cov.switch_context(item.nodeid + SETUP)
    try:
        return (yield)
    finally:
        if cov is not None:
            cov.switch_context(item.nodeid)


def pytest_runtest_logreport(report):
    _seconds[report.nodeid] = _seconds.get(report.nodeid, 0.0) + report.duration
    if report.when == "setup":
        _setup[report.nodeid] = report.duration


def pytest_sessionfinish(session):
    path = os.environ.get("MUTATE_DURATIONS")
    if path:
        with open(path, "w") as out:
            json.dump({"seconds": _seconds, "setup": _setup, "spans": _spans, "untraced": sorted(_untraced)}, out)
'''


def package_dirs() -> dict[str, str]:
    """Import name under `rnn_sentiment` -> folder of the repository, from pyproject.toml."""
    mapping = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return {name.removeprefix("rnn_sentiment."): folder for name, folder in mapping.items()
            if name.startswith("rnn_sentiment.") and "." not in name.removeprefix("rnn_sentiment.")}


def _ignore(folder: str, names: list[str]) -> set[str]:
    ignored = set(_IGNORED_NAMES(folder, names))
    if Path(folder).resolve() == (REPO / "bench" / "results").resolve():
        ignored.add("tmp")  # scratch output of benchmarks, tens of MB
    return ignored


def make_copy(root: Path | None = None) -> Path:
    """A copy of the working tree (work/tree) with its import shim (work/shim)."""
    work = Path(tempfile.mkdtemp(prefix="rnn-sentiment-mutate-", dir=root))
    tree = work / "tree"
    shutil.copytree(REPO, tree, ignore=_ignore, symlinks=True)
    package = work / "shim" / "rnn_sentiment"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name, folder in package_dirs().items():
        (package / name).symlink_to(tree / folder, target_is_directory=True)
    (work / "shim" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (work / "shim" / "mutate_contexts.py").write_text(CONTEXT_PLUGIN)
    # ../shared (data sets beside the clone) is where the tests look for it.
    if (REPO.parent / "shared").exists():
        (work / "shared").symlink_to(REPO.parent / "shared", target_is_directory=True)
    return work


def environment(work: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    # the shim first; a PYTHONPATH already set (e.g. where coverage lives) stays after it
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(work / "shim"), str(work / "tree"), env.get("PYTHONPATH", "")] if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a stale .pyc of another mutant must never be imported
    return env


def check_copy_is_imported(work: Path) -> None:
    """The shim must win over the editable install, or every mutant would go untested."""
    found = subprocess.run([sys.executable, "-c", "import rnn_sentiment.server.app as m; print(m.__file__)"],
                           env=environment(work), capture_output=True, text=True)
    if found.returncode != 0:
        raise SystemExit(f"the copy does not import:\n{found.stderr[-2000:]}")
    path = found.stdout.strip()
    if not Path(path).resolve().is_relative_to((work / "tree").resolve()):
        raise SystemExit(f"the copy is not what imports: rnn_sentiment.server.app is {path}")
