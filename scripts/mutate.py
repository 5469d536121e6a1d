"""`make mutate`: mutation testing (cosmic-ray) of the server, client, CLI and model edges.

Each worker mutates modules in its own private copy of the working tree, never in place:
cosmic-ray edits the file on disk for every mutant (scripts/mutation/tree.py). Per module, the
test selection of scripts/mutate_targets.toml runs once unmutated under coverage (the baseline,
which must pass); then each mutant runs only the tests that can see it, and a mutant on a line
no selected test executes is recorded as a survivor "not covered" without running
(scripts/mutation/selection.py has the rule). Sessions are kept in build/mutation/, so a run can
be stopped and resumed, area by area; each module's results also go to the committed
scripts/mutate_results.json, which the report is written from and a fresh clone resumes from
(scripts/mutation/record.py):

    .venv/bin/python scripts/mutate.py --list                       # modules, tests, mutant counts
    .venv/bin/python scripts/mutate.py server/servicer.py cli/main.py   # run (or resume) these
    .venv/bin/python scripts/mutate.py --limit 20 client/sync.py    # at most 20 more mutants
    .venv/bin/python scripts/mutate.py --workers 1 cli/main.py      # one worker (default: one per core)
    .venv/bin/python scripts/mutate.py --report                     # rewrite docs/testing.md's report
    .venv/bin/python scripts/mutate.py --fresh cli/main.py          # run again, ignoring its record
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: cosmic-ray brings `toml`, which reads the same files
    import toml as tomllib  # type: ignore[no-redef]
from dataclasses import dataclass
from pathlib import Path

from mutation import record
from mutation.selection import NOT_COVERED

REPO = Path(__file__).resolve().parent.parent
TARGETS = REPO / "scripts" / "mutate_targets.toml"
EQUIVALENT = REPO / "scripts" / "mutate_equivalent.toml"
RECORD = REPO / "scripts" / "mutate_results.json"  # what a fresh clone keeps (scripts/mutation/record.py)
STATE = REPO / "build" / "mutation"
REPORT = REPO / "docs" / "testing.md"
REPORT_START = "<!-- mutation report: written by scripts/mutate.py, do not edit by hand -->"
REPORT_END = "<!-- end of mutation report -->"
KILL_TARGET = 0.85


@dataclass(frozen=True)
class Target:
    module: str  # a file of the repository, e.g. "server/servicer.py"
    area: str  # the area it counts toward: server, client, cli, model
    tests: tuple[str, ...]  # pytest arguments selecting its tests
    timeout: float  # seconds the unmutated selection (and any one test) may take


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


def init_session(target: Target, use_record: bool = True) -> Path:
    config, session = session_paths(target)
    STATE.mkdir(parents=True, exist_ok=True)
    fresh_config = not config.exists() or config.read_text() != _config_text(target)
    if session.exists() and not fresh_config and _source_unchanged(target, session):
        return session
    session.unlink(missing_ok=True)
    session.with_suffix(".prepass.json").unlink(missing_ok=True)
    # The source as init is about to read it: saved as read *before* init, an edit made while
    # init runs leaves the saved copy unequal to the file, so the next run starts afresh (saved
    # after, it matched the new file while the mutants' positions were the old file's).
    source = (REPO / target.module).read_text()
    write_config(target, config)
    bin_dir = Path(sys.executable).parent
    # init only reads the module: the checkout itself will do
    subprocess.run([str(bin_dir / "cosmic-ray"), "init", str(config), str(session)], cwd=REPO, check=True)
    subprocess.run([str(bin_dir / "cr-filter-operators"), str(session), str(config)], cwd=REPO, check=True)
    subprocess.run([str(bin_dir / "cr-filter-pragma"), str(session)], cwd=REPO, check=True)
    (session.with_suffix(".source")).write_text(source)
    if use_record:
        restore_from_record(target, session, source)
    return session


def restore_from_record(target: Target, session: Path, source: str) -> int:
    """Give a fresh session the recorded results of the same source; returns how many."""
    recorded = record.load(RECORD).get(target.module)
    if recorded is None or not recorded.is_of(source):
        return 0
    known = record.restorable(recorded)
    with sqlite3.connect(session) as db:
        specs = db.execute("SELECT job_id, operator_name, occurrence FROM mutation_specs WHERE job_id NOT IN "
                           "(SELECT job_id FROM work_results)").fetchall()  # not those the filters skipped
        rows = [(job_id, *known[(operator, occurrence)]) for job_id, operator, occurrence in specs
                if (operator, occurrence) in known]
        db.executemany("INSERT INTO work_results (job_id, worker_outcome, output, test_outcome, diff) "
                       "VALUES (?, ?, ?, ?, '')", rows)
    if rows:
        print(f"{target.module}: {len(rows)} results restored from {RECORD.relative_to(REPO)}", flush=True)
    return len(rows)


def _config_text(target: Target) -> str:
    with tempfile.NamedTemporaryFile("r", suffix=".toml") as scratch:
        write_config(target, Path(scratch.name))
        return Path(scratch.name).read_text()


def _source_unchanged(target: Target, session: Path) -> bool:
    saved = session.with_suffix(".source")
    return saved.exists() and saved.read_text() == (REPO / target.module).read_text()


def forget_survivors(target: Target, session: Path) -> None:
    """Make the module's survivors pending again, except those judged equivalent."""
    known = equivalents()
    again = [o.job_id for o in outcomes(target)
             if o.result in ("survived", "not covered") and not equivalent_reason(o, known)]
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
            "SELECT s.job_id, s.operator_name, s.occurrence, s.start_pos_row, r.worker_outcome, r.test_outcome, r.output "
            "FROM mutation_specs s LEFT JOIN work_results r ON r.job_id = s.job_id ORDER BY s.start_pos_row"
        ).fetchall()
    found = []
    for job_id, operator, occurrence, row, worker, test, output in rows:
        found.append(Outcome(target.module, job_id, operator, occurrence, row,
                             lines[row - 1].strip() if 0 < row <= len(lines) else "", classify(worker, test, output)))
    return found


@dataclass(frozen=True)
class ModuleResults:
    outcomes: list[Outcome]
    unplaced: dict[str, int]  # results kept only as counts (record.py says when)
    stale: bool  # measured on another source than the module's current one: not counted


def module_results(target: Target, records: dict[str, record.ModuleRecord]) -> ModuleResults | None:
    """The module's results: its record when it is of the current source (sync_record has put
    the session's results there), else its session when that is."""
    source = (REPO / target.module).read_text()
    _, session = session_paths(target)
    recorded = records.get(target.module)
    if recorded is not None and recorded.is_of(source):
        return ModuleResults(_recorded_outcomes(target, recorded), dict(recorded.unplaced), stale=False)
    if session.exists() and _source_unchanged(target, session):
        return ModuleResults(outcomes(target), {}, stale=False)
    if session.exists():
        return ModuleResults(outcomes(target), {}, stale=True)
    if recorded is not None:
        return ModuleResults(_recorded_outcomes(target, recorded), dict(recorded.unplaced), stale=True)
    return None


def _recorded_outcomes(target: Target, recorded: record.ModuleRecord) -> list[Outcome]:
    return [Outcome(target.module, "", m.operator, m.occurrence, m.line, m.source_line, m.result)
            for m in recorded.mutants]


def sync_record(targets: dict[str, Target]) -> None:
    """Copy every session of its module's current source into the committed record."""
    with record.updating(RECORD, STATE / "record.lock") as records:
        for target in targets.values():
            _, session = session_paths(target)
            if not (session.exists() and _source_unchanged(target, session)):
                continue
            found = outcomes(target)
            source = (REPO / target.module).read_text()
            recorded = records.get(target.module)
            if not found:  # no operator applies to it: recorded with no mutants, so a fresh clone knows
                records[target.module] = record.from_results(source, [])
                continue
            # Counts carried over from a report cannot go into a session: keep them until the
            # session that replaces them has run to the end.
            if recorded is not None and recorded.is_of(source) and recorded.unplaced and any(
                    o.result == "pending" for o in found):
                continue
            # For one source, results only accumulate: a mutant pending in the session (made
            # afresh, or a survivor --retry-survivors runs again) keeps its recorded result
            # until it has run again.
            ran = ({(m.operator, m.occurrence): m for m in recorded.mutants if m.result != "pending"}
                   if recorded is not None and recorded.is_of(source) else {})
            records[target.module] = record.from_results(source, [
                ran.get((o.operator, o.occurrence)) if o.result == "pending" and (o.operator, o.occurrence) in ran
                else record.RecordedMutant(o.operator, o.occurrence, o.line, o.source_line, o.result)
                for o in found])


def complete_in_record(target: Target) -> bool:
    """Its record is of the current source and nothing of it is left to run."""
    recorded = record.load(RECORD).get(target.module)
    return (recorded is not None and recorded.is_of((REPO / target.module).read_text())
            and recorded.pending() == 0)


def classify(worker: str | None, test: str | None, output: str | None) -> str:
    """A stored cosmic-ray result (enum names, as its sessions keep them) as the report counts it."""
    if worker is None:
        return "pending"
    if worker == "SKIPPED":
        return "skipped"
    if worker == "ABNORMAL" or (test == "KILLED" and output == "timeout"):  # cosmic-ray's mark of a timeout
        return "timeout"
    if worker == "EXCEPTION" and test == "INCOMPETENT":  # cosmic-ray could not make the mutant: nothing ran
        return "incompetent"
    if worker != "NORMAL":
        return "error"
    if test == "SURVIVED" and (output or "").startswith(NOT_COVERED):
        return "not covered"
    return {"KILLED": "killed", "SURVIVED": "survived", "INCOMPETENT": "incompetent"}.get(test or "", "survived")


def equivalents() -> list[dict]:
    return tomllib.loads(EQUIVALENT.read_text()).get("equivalent", []) if EQUIVALENT.exists() else []


def equivalent_reason(outcome: Outcome, known: list[dict]) -> str | None:
    for entry in known:
        if (entry["module"] == outcome.module and re.fullmatch(entry["operator"], outcome.operator)
                and entry["line"] in outcome.source_line
                and entry.get("occurrence", outcome.occurrence) == outcome.occurrence):
            return entry["reason"]
    return None


COLUMNS = ("killed", "survived", "not covered", "timeout", "equivalent", "pending")
HEADER = ("killed | survived | not covered | timed out | equivalent | not run yet | killed of run, non-equivalent |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")


def report(targets: dict[str, Target]) -> str:
    known = equivalents()
    by_area: dict[str, dict[str, int]] = {}
    rows = []
    survivors = []
    not_started: list[str] = []
    stale: list[str] = []
    without_mutants: list[str] = []
    records = record.load(RECORD)
    for target in targets.values():
        counts = {k: 0 for k in (*COLUMNS, "incompetent", "skipped")}
        results = module_results(target, records)
        if results is None:
            not_started.append(target.module)
            continue
        if not results.stale and not results.unplaced and all(o.result == "skipped" for o in results.outcomes):
            without_mutants.append(target.module)  # none of the chosen operators applies to it
            continue
        if results.stale:
            stale.append(target.module)
            continue
        for result, count in results.unplaced.items():
            counts[result] += count
        for outcome in results.outcomes:
            result = outcome.result
            if result in ("survived", "not covered") and (reason := equivalent_reason(outcome, known)):
                result = "equivalent"
                survivors.append((outcome, f"equivalent: {reason}"))
            elif result in ("survived", "not covered"):
                survivors.append((outcome, "**survived**" + (" (no selected test executes it)" if result == "not covered" else "")))
            elif result == "incompetent":
                survivors.append((outcome, "not made: cosmic-ray's operator failed on this line, so no mutant ran "
                                           "(not counted)"))
            counts[result if result in counts else "survived"] += 1
        area = by_area.setdefault(target.area, {k: 0 for k in counts})
        for k, v in counts.items():
            area[k] += v
        rows.append((f"`{target.module}`", counts))
    lines = [REPORT_START, "", "| module | " + HEADER]
    lines += [_row(name, c) for name, c in rows]
    lines += ["", "| area | " + HEADER]
    lines += [_row(area, c) for area, c in sorted(by_area.items())]
    if not_started:
        lines += ["", f"Not started yet ({len(not_started)} modules): " + ", ".join(f"`{m}`" for m in not_started) + "."]
    if without_mutants:
        lines += ["", "No mutants (none of the operators applies): " + ", ".join(f"`{m}`" for m in without_mutants) + "."]
    if stale:
        lines += ["", f"Run on an earlier source, not counted until run again ({len(stale)} modules): "
                  + ", ".join(f"`{m}`" for m in stale) + "."]
    lines += ["", "Timed-out mutants count as killed (the suite did not pass); not covered ones as survivors (no "
              "selected test executes their line, so none was run); mutants cosmic-ray could not make are listed, "
              "not counted. Survivors, with the reason where one is judged equivalent "
              "(scripts/mutate_equivalent.toml):", ""]
    for outcome, verdict in survivors:
        lines.append(f"- `{outcome.module}:{outcome.line}` {outcome.operator.removeprefix('core/')} "
                     f"(`{outcome.source_line[:70]}`): {verdict}")
    if not survivors:
        lines.append("- none")
    lines += ["", REPORT_END]
    return "\n".join(lines)


def _row(name: str, c: dict[str, int]) -> str:
    return f"| {name} | " + " | ".join(str(c[k]) for k in COLUMNS) + f" | {_score(c)} |"


def _score(c: dict[str, int]) -> str:
    ran = c["killed"] + c["timeout"] + c["survived"] + c["not covered"]
    if not ran:
        return "–"
    score = (c["killed"] + c["timeout"]) / ran
    return f"{score:.0%}{'' if score >= KILL_TARGET else ' (below 85%)'}"


def write_report(targets: dict[str, Target]) -> None:
    sync_record(targets)
    text = REPORT.read_text()
    start, end = text.index(REPORT_START), text.index(REPORT_END) + len(REPORT_END)
    REPORT.write_text(text[:start] + report(targets) + text[end:])


def count_mutants(targets: dict[str, Target]) -> None:
    for target in targets.values():
        init_session(target)
        todo = sum(o.result == "pending" for o in outcomes(target))
        print(f"{target.module:32} {target.area:7} {todo:4} mutants to run  tests: {' '.join(target.tests)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help="modules to run (default: every one in mutate_targets.toml)")
    parser.add_argument("--list", action="store_true", help="print each module's test selection and mutant count")
    parser.add_argument("--limit", type=int, help="run at most this many pending mutants per module")
    parser.add_argument("--report", action="store_true", help="only rewrite the report in docs/testing.md")
    parser.add_argument("--fresh", action="store_true",
                        help="run the modules from scratch, not from their record in scripts/mutate_results.json")
    parser.add_argument("--retry-survivors", action="store_true",
                        help="run the modules' survivors (not those judged equivalent) again, after adding tests")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="parallel workers, each with its own copy of the tree (default: one per core)")
    args = parser.parse_args(argv)
    targets = load_targets()
    unknown = [m for m in args.modules if m not in targets]
    if unknown:
        parser.error(f"not in scripts/mutate_targets.toml: {', '.join(unknown)}")
    chosen = {m: targets[m] for m in args.modules} if args.modules else dict(targets)
    if args.report:
        write_report(targets)
        return 0
    if args.list:
        count_mutants(chosen)
        return 0
    from mutation.runner import run_modules

    sessions = {}
    for target in list(chosen.values()):
        no_session = not session_paths(target)[1].exists()
        if no_session and not (args.fresh or args.retry_survivors) and complete_in_record(target):
            print(f"{target.module}: complete in {RECORD.relative_to(REPO)} for its current source, not run "
                  "(--fresh runs it again)", flush=True)
            del chosen[target.module]
            continue
        if args.fresh:
            session_paths(target)[1].unlink(missing_ok=True)
        sessions[target.module] = init_session(target, use_record=not args.fresh)
        if args.retry_survivors:
            forget_survivors(target, sessions[target.module])
    failed = run_modules([(t, sessions[t.module]) for t in chosen.values()], max(1, args.workers), args.limit,
                         lambda: write_report(targets))
    write_report(targets)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
