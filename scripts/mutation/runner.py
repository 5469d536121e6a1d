"""Runs modules' pending mutants on N workers: a coverage pre-pass per module, then every mutant
that some test can see, from one shared queue. The parent is the only writer of the sessions."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path

from mutation.pool import MutantJob, PrepassResult, prepass, run_mutant, take_copy
from mutation.selection import (NOT_COVERED, Baseline, LineCoverage, Plan, plan_for, queue_order, span_of,
                                statement_spans)
from mutation.tree import REPO, check_copy_is_imported, make_copy

DIGEST_FOLDERS = ("model", "server", "client", "cli", "proto", "tests", "scripts/mutation")
NOT_COVERED_OUTPUT = f"{NOT_COVERED}: no test of the module's selection executes this line; not run"


def tree_digest(target) -> str:
    """What a pre-pass depends on: the selection and every source and test file. Unchanged, the
    stored pre-pass is reused (a run with --limit then costs no new baseline)."""
    digest = hashlib.sha256(json.dumps([target.module, list(target.tests), target.timeout]).encode())
    for folder in DIGEST_FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            if "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _save_prepass(path: Path, key: str, result: PrepassResult) -> None:
    lines = result.coverage
    path.write_text(json.dumps({
        "key": key,
        "coverage": None if lines is None else {
            "by_test": {str(line): sorted(tests) for line, tests in lines.by_test.items()},
            "outside_tests": sorted(lines.outside_tests), "in_subprocess": sorted(lines.in_subprocess),
            "by_subprocess_test": {str(line): sorted(tests) for line, tests in lines.by_subprocess_test.items()},
            "untraced": sorted(lines.untraced)},
        "baseline": asdict(result.baseline)}))


def _load_prepass(path: Path, key: str) -> tuple[LineCoverage | None, Baseline] | None:
    if not path.exists():
        return None
    stored = json.loads(path.read_text())
    if stored.get("key") != key:
        return None
    c = stored["coverage"]
    lines = None if c is None else LineCoverage({int(l): frozenset(t) for l, t in c["by_test"].items()},
                                               frozenset(c["outside_tests"]), frozenset(c["in_subprocess"]),
                                               {int(l): frozenset(t) for l, t in c["by_subprocess_test"].items()},
                                               frozenset(c["untraced"]))
    return lines, Baseline(**stored["baseline"])


def _pending(session: Path, limit: int | None) -> list:
    from cosmic_ray.work_db import WorkDB, use_db

    with use_db(str(session), WorkDB.Mode.open) as db:
        pending = sorted(db.pending_work_items, key=lambda item: (item.mutations[0].start_pos, item.job_id))
    return pending[:limit]


def _record(session: Path, job_id: str, fields: dict) -> None:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkResult

    with use_db(str(session), WorkDB.Mode.open) as db:
        db.set_result(job_id, WorkResult(**fields))


def run_modules(targets: list, workers: int, limit: int | None, progress: Callable[[], None]) -> list[str]:
    """Run (or resume) the pending mutants of `targets` [(Target, session path)]; returns the
    modules whose baseline failed."""
    todo = {t.module: (t, session, items) for t, session in targets if (items := _pending(session, limit))}
    if not todo:
        return []
    try:
        import coverage  # noqa: F401
    except ImportError:
        print("coverage.py is not installed (the dev extras bring it): every mutant runs its whole selection",
              flush=True)
    workers = min(workers, sum(len(items) for _, _, items in todo.values()))
    root = REPO / "build" / "mutation" / "work"
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # What the copies hold, taken before they are made: a file edited while a baseline runs is
    # then a change the next run sees, not one its saved pre-pass claims to have covered.
    digests = {module: tree_digest(target) for module, (target, _, _) in todo.items()}
    copies = [make_copy(root) for _ in range(workers)]
    print(f"{workers} workers, {len(copies)} copies of the tree in {time.monotonic() - started:.0f} s", flush=True)
    check_copy_is_imported(copies[0])
    failed: list[str] = []
    log: list[dict] = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout`, `kill`: clean up as for Ctrl-C
    context = multiprocessing.get_context("fork")
    handed = context.Queue()
    for copy in copies:
        handed.put(str(copy))
    try:
        with ProcessPoolExecutor(workers, mp_context=context, initializer=take_copy, initargs=(handed,)) as pool:
            try:
                _drain(pool, todo, digests, failed, log, progress)
            except BaseException:  # Ctrl-C or `timeout`: stop the tests running in the copies first
                _stop_leftovers(copies)
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    finally:
        _stop_leftovers(copies)
        for copy in copies:
            shutil.rmtree(copy, ignore_errors=True)
    _summary(log, time.monotonic() - started, workers)
    return failed


def _drain(pool, todo: dict, digests: dict[str, str], failed: list[str], log: list[dict],
           progress: Callable[[], None]) -> None:
    running = {}
    prepared: dict[str, tuple[LineCoverage | None, Baseline]] = {}
    for module, (target, session, _) in todo.items():
        stored = _load_prepass(session.with_suffix(".prepass.json"), digests[module])
        if stored is not None:
            prepared[module] = stored
            print(f"{module}: pre-pass reused (nothing changed since it ran)", flush=True)
        else:
            running[pool.submit(prepass, module, target.tests, target.timeout)] = ("prepass", module)
    for module, stored in prepared.items():
        _submit_mutants(pool, running, todo[module], *stored)
    while running:
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            kind, key = running.pop(future)
            if kind == "prepass":
                result: PrepassResult = future.result()
                target, session, _ = todo[key]
                if not result.passed:
                    failed.append(key)
                    print(f"{key}: its tests fail without any mutant; fix that first:\n{result.output}", flush=True)
                    continue
                _save_prepass(session.with_suffix(".prepass.json"), digests[key], result)
                print(f"{key}: baseline passes in {result.baseline.total:.0f} s "
                      f"({'with' if result.coverage else 'without'} coverage)", flush=True)
                _submit_mutants(pool, running, todo[key], result.coverage, result.baseline)
            else:
                module, job_id, fields, seconds = future.result()
                plan: Plan = key
                _record(todo[module][1], job_id, fields)
                _log(log, module, job_id, plan, fields, seconds, todo[module][2])
                if len(log) % 10 == 0:
                    progress()


def _stop_leftovers(copies: list[Path]) -> None:
    """Kill what still runs in a copy: a mutant's pytest leads its own process group (cosmic-ray
    starts it in a new session), with the servers it started."""
    mine = os.getpgrp()
    roots = [str(copy.resolve()) for copy in copies]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            group = os.getpgid(int(entry.name))
        except OSError:
            continue
        if group != mine and any(cwd.startswith(root) for root in roots):
            try:
                os.killpg(group, signal.SIGKILL)
            except OSError:
                pass


def _submit_mutants(pool, running: dict, entry, lines: LineCoverage | None, baseline: Baseline) -> None:
    target, session, items = entry
    spans = statement_spans((REPO / target.module).read_text())
    plans = {item.job_id: plan_for(span_of(item.mutations[0].start_pos[0], spans), lines, target.tests, baseline)
             for item in items}
    by_id = {item.job_id: item for item in items}
    skipped = 0
    for job_id in queue_order({j: p.estimate for j, p in plans.items()}):
        plan = plans[job_id]
        if plan.kind == NOT_COVERED:
            _record(session, job_id, {"worker_outcome": "normal", "test_outcome": "survived",
                                      "output": NOT_COVERED_OUTPUT})
            skipped += 1
            continue
        job = MutantJob(target.module, job_id, list(by_id[job_id].mutations), plan.tests, plan.timeout)
        running[pool.submit(run_mutant, job)] = ("mutant", plan)
    counts = {kind: sum(p.kind == kind for p in plans.values()) for kind in ("narrowed", "full")}
    print(f"{target.module}: {len(items)} mutants: {skipped} not covered (recorded, not run), "
          f"{counts['narrowed']} on the tests that reach their line, {counts['full']} on the whole selection",
          flush=True)


def _log(log: list, module: str, job_id: str, plan: Plan, fields: dict, seconds: float, items: list) -> None:
    item = next(i for i in items if i.job_id == job_id)
    spec = item.mutations[0]
    result = "timeout" if fields["output"] == "timeout" else fields["test_outcome"] or fields["worker_outcome"]
    log.append({"module": module, "line": spec.start_pos[0], "operator": spec.operator_name, "plan": plan.kind,
                "tests": len(plan.tests), "timeout": round(plan.timeout), "result": result, "seconds": round(seconds, 1)})
    print(f"{module}:{spec.start_pos[0]} {spec.operator_name.removeprefix('core/')} -> {result} "
          f"({plan.kind}, {len(plan.tests)} test args, {seconds:.0f} s)", flush=True)


def _summary(log: list, wall: float, workers: int) -> None:
    (REPO / "build" / "mutation" / "last_run.json").write_text(json.dumps({"wall": wall, "workers": workers, "mutants": log}))
    if log:
        mean = sum(entry["seconds"] for entry in log) / len(log)
        print(f"{len(log)} mutants run in {wall:.0f} s with {workers} workers (mean {mean:.1f} s of a worker each); "
              f"details in build/mutation/last_run.json", flush=True)
