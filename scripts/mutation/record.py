"""The mutation results a checkout keeps: scripts/mutate_results.json, committed with the code.

A session (build/mutation/*.sqlite) lives only in the checkout that ran it: a fresh clone has
none, and a report written from sessions alone forgot every module the clone had not run itself
(a full run is hours of a 2-core machine). So each module's results are also recorded here, with
the digest of the source they were measured on:

- the report reads a module's session when it is of the current source, else its record when the
  digests agree; a record of another source is listed as stale, never counted;
- a fresh session is given the recorded results of the same source before it runs (cosmic-ray
  numbers a module's mutants the same way every time: operator and occurrence), so a fresh
  clone resumes where the record stops;
- a module whose record is complete for its current source is not run again unless asked.

Results carried over from a report (before this record existed) keep their survivors in place
but their killed and timed-out mutants only as counts (`unplaced`): those cannot be given to a
session, so such a module runs from scratch when it is asked to run at all.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mutation.selection import NOT_COVERED

# What a session stores for each result the report distinguishes (cosmic-ray's enum names: the
# worker's outcome, the output, the tests' outcome); scripts/mutate.py's classify() reads them back.
RAW_RESULTS: dict[str, tuple[str, str, str | None]] = {
    "killed": ("NORMAL", "restored from the record", "KILLED"),
    "survived": ("NORMAL", "restored from the record", "SURVIVED"),
    "not covered": ("NORMAL", f"{NOT_COVERED}: restored from the record", "SURVIVED"),
    "timeout": ("ABNORMAL", "timeout", "KILLED"),
    "incompetent": ("EXCEPTION", "restored from the record", "INCOMPETENT"),
    "error": ("EXCEPTION", "restored from the record", "KILLED"),
}


@dataclass(frozen=True)
class RecordedMutant:
    operator: str  # cosmic-ray's operator name, e.g. "core/ReplaceComparisonOperator_Lt_LtE"
    occurrence: int  # its index among that operator's mutants of the module
    line: int
    source_line: str
    result: str  # as scripts/mutate.py's classify() names it


@dataclass
class ModuleRecord:
    source_sha256: str
    mutants: list[RecordedMutant] = field(default_factory=list)
    unplaced: dict[str, int] = field(default_factory=dict)  # counts by result, no position kept

    def pending(self) -> int:
        return sum(m.result == "pending" for m in self.mutants) + self.unplaced.get("pending", 0)

    def is_of(self, source: str) -> bool:
        return self.source_sha256 == source_digest(source)


def source_digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def load(path: Path) -> dict[str, ModuleRecord]:
    if not path.exists():
        return {}
    stored = json.loads(path.read_text())
    return {module: ModuleRecord(entry["source_sha256"],
                                 [RecordedMutant(**m) for m in entry["mutants"] if m["result"] != "skipped"],
                                 dict(entry.get("unplaced", {})))
            for module, entry in stored["modules"].items()}


def _dump(records: dict[str, ModuleRecord]) -> str:
    modules = {}
    for module in sorted(records):
        record = records[module]
        entry: dict = {"source_sha256": record.source_sha256, "mutants": [asdict(m) for m in record.mutants]}
        if record.unplaced:
            entry["unplaced"] = dict(sorted(record.unplaced.items()))
        modules[module] = entry
    # One mutant per line: a rerun's diff shows which mutants changed their result.
    lines = ['{"modules": {']
    for i, (module, entry) in enumerate(modules.items()):
        mutants = ",\n".join("    " + json.dumps(m, ensure_ascii=False) for m in entry["mutants"])
        unplaced = f', "unplaced": {json.dumps(entry["unplaced"])}' if "unplaced" in entry else ""
        lines.append(f'  {json.dumps(module)}: {{"source_sha256": {json.dumps(entry["source_sha256"])}{unplaced}, '
                     f'"mutants": [' + (f"\n{mutants}\n  " if mutants else "") + "]}"
                     + ("," if i < len(modules) - 1 else ""))
    lines.append("}}")
    return "\n".join(lines) + "\n"


@contextmanager
def updating(path: Path, lock_path: Path) -> Iterator[dict[str, ModuleRecord]]:
    """The records, to change in place; written back atomically under a lock (several runs of
    scripts/mutate.py may share one checkout, each writing the modules it ran)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = load(path)
        yield records
        scratch = path.with_suffix(".tmp")
        scratch.write_text(_dump(records))
        os.replace(scratch, path)


def from_results(source: str, mutants: Iterable[RecordedMutant]) -> ModuleRecord:
    """The record of a module's results; mutants its operator filter skipped are left out (a
    fresh session skips them again)."""
    return ModuleRecord(source_digest(source), sorted((m for m in mutants if m.result != "skipped"),
                                                      key=lambda m: (m.line, m.operator, m.occurrence)))


def restorable(record: ModuleRecord) -> dict[tuple[str, int], tuple[str, str, str | None]]:
    """(operator, occurrence) -> the raw result a session stores, for every recorded mutant that
    has run (a pending one stays pending)."""
    return {(m.operator, m.occurrence): RAW_RESULTS[m.result] for m in record.mutants if m.result in RAW_RESULTS}
