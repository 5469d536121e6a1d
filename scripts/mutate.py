"""`make mutate`: mutation testing (cosmic-ray) of the server, client, CLI and model edges.

Each module is mutated in a private copy of the working tree, never in place: cosmic-ray edits
the file on disk for every mutant, and the copy keeps that away from anyone running the suite
meanwhile. The copy is importable as `rnn_sentiment` through a small path shim (the package
is the repository root mapped by setuptools' `package-dir`), so the integration tests' server
subprocesses run the mutant too.

Every module has its own test selection (scripts/mutate_targets.toml): the tests that exercise
it, fastest first, stopping at the first failure. Sessions are kept in build/mutation/, so a
run can be stopped and resumed, area by area:

    .venv/bin/python scripts/mutate.py --list                       # modules, tests, mutant counts
    .venv/bin/python scripts/mutate.py server/servicer.py cli/main.py   # run (or resume) these
    .venv/bin/python scripts/mutate.py --limit 20 client/sync.py    # at most 20 more mutants
    .venv/bin/python scripts/mutate.py --report                     # rewrite docs/testing.md's report
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: cosmic-ray brings `toml`, which reads the same files
    import toml as tomllib  # type: ignore[no-redef]
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGETS = REPO / "scripts" / "mutate_targets.toml"
EQUIVALENT = REPO / "scripts" / "mutate_equivalent.toml"
STATE = REPO / "build" / "mutation"
REPORT = REPO / "docs" / "testing.md"
REPORT_START = "<!-- mutation report: written by scripts/mutate.py, do not edit by hand -->"
REPORT_END = "<!-- end of mutation report -->"
# The installed layout: import name -> folder of the repository (pyproject.toml's package-dir).
PACKAGE_DIRS = {"v1": "proto/rnn_sentiment/v1", "model": "model", "server": "server", "client": "client", "cli": "cli"}
COPY_IGNORE = shutil.ignore_patterns(".venv", ".git", "build", "__pycache__", "*.egg-info", ".pytest_cache",
                                     "node_modules", ".deploy-cache", "runs", ".hypothesis")
KILL_TARGET = 0.85


@dataclass(frozen=True)
class Target:
    module: str  # a file of the repository, e.g. "server/servicer.py"
    area: str  # the area it counts toward: server, client, cli, model
    tests: tuple[str, ...]  # pytest arguments selecting its tests
    timeout: float  # seconds one test run may take before the mutant counts as timed out


@dataclass(frozen=True)
class Outcome:
    module: str
    job_id: str
    operator: str
    occurrence: int
    line: int
    source_line: str
    result: str  # killed, survived, timeout, incompetent, skipped, pending


def load_targets() -> dict[str, Target]:
    data = tomllib.loads(TARGETS.read_text())
    defaults = data.get("defaults", {})
    return {
        module: Target(module, spec["area"], tuple(spec["tests"]), float(spec.get("timeout", defaults.get("timeout", 300))))
        for module, spec in data["modules"].items()
    }


def excluded_operators() -> list[str]:
    return list(tomllib.loads(TARGETS.read_text())["operators"]["exclude"])


def make_copy() -> Path:
    """A copy of the working tree with an import shim: `rnn_sentiment.*` resolves into the copy."""
    work = Path(tempfile.mkdtemp(prefix="rnn-sentiment-mutate-"))
    tree = work / "tree"
    shutil.copytree(REPO, tree, ignore=COPY_IGNORE, symlinks=True)
    package = work / "shim" / "rnn_sentiment"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name, folder in PACKAGE_DIRS.items():
        (package / name).symlink_to(tree / folder, target_is_directory=True)
    # ../shared (data sets beside the clone) is where the tests look for it.
    if (REPO.parent / "shared").exists():
        (work / "shared").symlink_to(REPO.parent / "shared", target_is_directory=True)
    return work


def check_copy_is_imported(work: Path) -> None:
    """The shim must win over the editable install, or every mutant would go untested."""
    found = subprocess.run([sys.executable, "-c", "import rnn_sentiment.server.servicer as m; print(m.__file__)"],
                           env=environment(work), capture_output=True, text=True, check=True).stdout.strip()
    if not Path(found).resolve().is_relative_to((work / "tree").resolve()):
        raise SystemExit(f"the copy is not what imports: rnn_sentiment.server.servicer is {found}")


def baseline(target: Target, work: Path) -> None:
    """The selection must pass unmutated, or a mutant's failing run would prove nothing."""
    config, _ = session_paths(target)
    command = tomllib.loads(config.read_text())["cosmic-ray"]["test-command"]
    started = time.monotonic()
    result = subprocess.run(command, shell=True, cwd=work / "tree", env=environment(work),
                            capture_output=True, text=True, timeout=target.timeout)
    if result.returncode != 0:
        raise SystemExit(f"{target.module}: its tests fail without any mutant; fix that first:\n"
                         f"{command}\n{result.stdout[-3000:]}{result.stderr[-2000:]}")
    print(f"{target.module}: baseline passes in {time.monotonic() - started:.0f} s", flush=True)


def environment(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(work / "shim"), str(work / "tree")])
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a stale .pyc of another mutant must never be imported
    return env


def session_paths(target: Target) -> tuple[Path, Path]:
    stem = target.module.replace("/", "__").removesuffix(".py")
    return STATE / f"{stem}.toml", STATE / f"{stem}.sqlite"


def write_config(target: Target, config: Path) -> None:
    tests = " ".join(target.tests)
    command = (f"{sys.executable} -m pytest -x -q -p no:randomly -p no:cacheprovider "
               f"-o addopts= --timeout {int(target.timeout)} {tests}")
    exclude = ", ".join(json.dumps(e) for e in excluded_operators())
    config.write_text(f"""[cosmic-ray]
module-path = "{target.module}"
timeout = {target.timeout}
excluded-modules = []
test-command = {json.dumps(command)}

[cosmic-ray.distributor]
name = "local"

[cosmic-ray.filters.operators-filter]
exclude-operators = [{exclude}]
""")


def run(command: list[str], cwd: Path, env: dict[str, str]) -> None:
    subprocess.run(command, cwd=cwd, env=env, check=True)


def init_session(target: Target, work: Path) -> Path:
    config, session = session_paths(target)
    STATE.mkdir(parents=True, exist_ok=True)
    fresh_config = not config.exists() or config.read_text() != _config_text(target)
    if session.exists() and not fresh_config and _source_unchanged(target, session):
        return session
    session.unlink(missing_ok=True)
    write_config(target, config)
    env = environment(work)
    bin_dir = Path(sys.executable).parent
    run([str(bin_dir / "cosmic-ray"), "init", str(config), str(session)], work / "tree", env)
    run([str(bin_dir / "cr-filter-operators"), str(session), str(config)], work / "tree", env)
    run([str(bin_dir / "cr-filter-pragma"), str(session)], work / "tree", env)
    (session.with_suffix(".source")).write_text((REPO / target.module).read_text())
    return session


def _config_text(target: Target) -> str:
    with tempfile.NamedTemporaryFile("r", suffix=".toml") as scratch:
        write_config(target, Path(scratch.name))
        return Path(scratch.name).read_text()


def _source_unchanged(target: Target, session: Path) -> bool:
    saved = session.with_suffix(".source")
    return saved.exists() and saved.read_text() == (REPO / target.module).read_text()


def exec_session(target: Target, session: Path, work: Path, limit: int | None) -> None:
    """Run pending mutants in source order, as cosmic-ray's local distributor does; with `limit`,
    only that many (the rest stay pending for a later run)."""
    from cosmic_ray.mutating import mutate_and_test
    from cosmic_ray.work_db import WorkDB, use_db

    config, _ = session_paths(target)
    settings = tomllib.loads(config.read_text())["cosmic-ray"]
    os.environ.update(environment(work))
    os.chdir(work / "tree")  # mutants are applied to module paths relative to here
    try:
        with use_db(str(session), WorkDB.Mode.open) as db:
            pending = sorted(db.pending_work_items, key=lambda item: (item.mutations[0].start_pos, item.job_id))
            for item in pending[:limit]:
                started = time.monotonic()
                result = mutate_and_test(item.mutations, settings["test-command"], settings["timeout"])
                db.set_result(item.job_id, result)
                spec = item.mutations[0]
                print(f"{spec.module_path}:{spec.start_pos[0]} {spec.operator_name.removeprefix('core/')} "
                      f"-> {result.test_outcome.value if result.test_outcome else result.worker_outcome.value} "
                      f"({time.monotonic() - started:.0f} s)", flush=True)
    finally:
        os.chdir(REPO)


def forget_survivors(target: Target, session: Path) -> None:
    """Make the module's survivors pending again, except those judged equivalent."""
    known = equivalents()
    again = [o.job_id for o in outcomes(target) if o.result == "survived" and not equivalent_reason(o, known)]
    with sqlite3.connect(session) as db:
        db.executemany("DELETE FROM work_results WHERE job_id = ?", [(job_id,) for job_id in again])


def pending_jobs(session: Path) -> list[str]:
    with sqlite3.connect(session) as db:
        rows = db.execute("SELECT job_id FROM mutation_specs WHERE job_id NOT IN (SELECT job_id FROM work_results) "
                          "ORDER BY module_path, start_pos_row, operator_name, occurrence").fetchall()
    return [r[0] for r in rows]


def outcomes(target: Target) -> list[Outcome]:
    _, session = session_paths(target)
    if not session.exists():
        return []
    source = session.with_suffix(".source")
    lines = (source.read_text() if source.exists() else (REPO / target.module).read_text()).splitlines()
    with sqlite3.connect(session) as db:
        rows = db.execute(
            "SELECT s.job_id, s.operator_name, s.occurrence, s.start_pos_row, r.worker_outcome, r.test_outcome "
            "FROM mutation_specs s LEFT JOIN work_results r ON r.job_id = s.job_id ORDER BY s.start_pos_row"
        ).fetchall()
    found = []
    for job_id, operator, occurrence, row, worker, test in rows:
        if worker is None:
            result = "pending"
        elif worker == "SKIPPED":
            result = "skipped"
        elif worker == "ABNORMAL":
            result = "timeout"
        elif worker == "NORMAL":
            result = {"KILLED": "killed", "SURVIVED": "survived", "INCOMPETENT": "incompetent"}.get(test, "survived")
        else:
            result = "error"
        found.append(Outcome(target.module, job_id, operator, occurrence, row,
                             lines[row - 1].strip() if 0 < row <= len(lines) else "", result))
    return found


def equivalents() -> list[dict]:
    return tomllib.loads(EQUIVALENT.read_text()).get("equivalent", []) if EQUIVALENT.exists() else []


def equivalent_reason(outcome: Outcome, known: list[dict]) -> str | None:
    for entry in known:
        if (entry["module"] == outcome.module and re.fullmatch(entry["operator"], outcome.operator)
                and entry["line"] in outcome.source_line
                and entry.get("occurrence", outcome.occurrence) == outcome.occurrence):
            return entry["reason"]
    return None


def report(targets: dict[str, Target]) -> str:
    known = equivalents()
    by_area: dict[str, dict[str, int]] = {}
    rows = []
    survivors = []
    not_started: list[str] = []
    for target in targets.values():
        counts = {k: 0 for k in ("killed", "survived", "timeout", "equivalent", "incompetent", "pending", "skipped")}
        found = outcomes(target)
        if not found:
            not_started.append(target.module)
            continue
        for outcome in found:
            result = outcome.result
            if result == "survived" and (reason := equivalent_reason(outcome, known)):
                result = "equivalent"
                survivors.append((outcome, reason))
            elif result == "survived":
                survivors.append((outcome, None))
            counts[result if result in counts else "survived"] += 1
        area = by_area.setdefault(target.area, {k: 0 for k in counts})
        for k, v in counts.items():
            area[k] += v
        rows.append((target.module, counts))
    lines = [REPORT_START, "",
             "| module | killed | survived | timed out | equivalent | not run yet | killed of run, non-equivalent |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for module, c in rows:
        lines.append(f"| `{module}` | {c['killed']} | {c['survived']} | {c['timeout']} | {c['equivalent']} | "
                     f"{c['pending']} | {_score(c)} |")
    lines += ["", "| area | killed | survived | timed out | equivalent | not run yet | killed of run, non-equivalent |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for area, c in sorted(by_area.items()):
        lines.append(f"| {area} | {c['killed']} | {c['survived']} | {c['timeout']} | {c['equivalent']} | "
                     f"{c['pending']} | {_score(c)} |")
    if not_started:
        lines += ["", f"Not started yet ({len(not_started)} modules): " + ", ".join(f"`{m}`" for m in not_started) + "."]
    lines += ["", "Timed-out mutants count as killed (the suite did not pass). Survivors, with the reason where "
              "one is judged equivalent (scripts/mutate_equivalent.toml):", ""]
    for outcome, reason in survivors:
        verdict = f"equivalent: {reason}" if reason else "**survived**"
        lines.append(f"- `{outcome.module}:{outcome.line}` {outcome.operator.removeprefix('core/')} "
                     f"(`{outcome.source_line[:70]}`): {verdict}")
    if not survivors:
        lines.append("- none")
    lines += ["", REPORT_END]
    return "\n".join(lines)


def _score(c: dict[str, int]) -> str:
    ran = c["killed"] + c["timeout"] + c["survived"]
    if not ran:
        return "–"
    score = (c["killed"] + c["timeout"]) / ran
    return f"{score:.0%}{'' if score >= KILL_TARGET else ' (below 85%)'}"


def write_report(targets: dict[str, Target]) -> None:
    text = REPORT.read_text()
    start, end = text.index(REPORT_START), text.index(REPORT_END) + len(REPORT_END)
    REPORT.write_text(text[:start] + report(targets) + text[end:])


def count_mutants(targets: dict[str, Target], work: Path) -> None:
    for target in targets.values():
        session = init_session(target, work)
        found = outcomes(target)
        todo = sum(o.result == "pending" for o in found)
        print(f"{target.module:32} {target.area:7} {todo:4} mutants to run  tests: {' '.join(target.tests)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help="modules to run (default: every one in mutate_targets.toml)")
    parser.add_argument("--list", action="store_true", help="print each module's test selection and mutant count")
    parser.add_argument("--limit", type=int, help="run at most this many pending mutants per module")
    parser.add_argument("--report", action="store_true", help="only rewrite the report in docs/testing.md")
    parser.add_argument("--retry-survivors", action="store_true",
                        help="run the modules' survivors (not those judged equivalent) again, after adding tests")
    args = parser.parse_args(argv)
    targets = load_targets()
    chosen = {m: targets[m] for m in args.modules} if args.modules else targets
    if args.report:
        write_report(targets)
        return 0
    work = make_copy()
    try:
        if args.list:
            count_mutants(chosen, work)
            return 0
        check_copy_is_imported(work)
        for target in chosen.values():
            session = init_session(target, work)
            if args.retry_survivors:
                forget_survivors(target, session)
            if not pending_jobs(session):
                continue
            baseline(target, work)
            started = time.monotonic()
            exec_session(target, session, work, args.limit)
            print(f"{target.module}: {time.monotonic() - started:.0f} s", flush=True)
            write_report(targets)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
