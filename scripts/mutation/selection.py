"""Which tests judge a mutant, and how long they may take: the pure rules of `make mutate`.

The rule (docs/testing.md, "Mutation testing"): the module's selection runs once unmutated under
coverage. A mutant on a statement that nothing executed cannot be killed by that selection, so it
is recorded as a survivor ("not covered") without running. A statement executed inside tests of the pytest process runs those tests (each one that executed it); one
executed by a child process (a server) runs every test that was running while that process
lived (its start to its exit): the server of one test maps to that test, a server shared by a
whole session to every test from its start on. A statement executed outside any test (at import,
at collection), in a fixture's setup (whose result later tests may share) or by a child process
whose life is unknown runs the whole selection. A test that sets its own trace function hides
what it ran from coverage: it joins every mutant's tests.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

NOT_COVERED = "not covered"
NARROWED = "narrowed"
FULL = "full"
# A mutant may take this many times its tests' unmutated time before it counts as timed out; the
# floor keeps one slow server start under load from reading as a hang.
TIMEOUT_FACTOR = 3.0
TIMEOUT_FLOOR = 30.0


@dataclass(frozen=True)
class LineCoverage:
    """What the unmutated selection executed in the mutated module, by line number."""

    by_test: Mapping[int, frozenset[str]] = field(default_factory=dict)  # line -> node ids that ran it in-process
    outside_tests: frozenset[int] = frozenset()  # lines the pytest process ran outside a test's call (import, setup)
    in_subprocess: frozenset[int] = frozenset()  # lines a child process of unknown life ran
    # line -> node ids of the tests running while a child process that ran the line lived
    by_subprocess_test: Mapping[int, frozenset[str]] = field(default_factory=dict)
    # tests that set their own trace function: what they ran is unknown, so they judge every mutant
    untraced: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Baseline:
    """Seconds the unmutated selection took, to size each mutant's timeout."""

    startup: float  # the pytest process's own cost: interpreter, imports, collection
    by_test: Mapping[str, float]  # node id -> seconds (setup, call, teardown)
    largest_setup: float  # the costliest fixture setup seen (a server start): a narrowed set may pay it again
    total: float  # the whole selection, wall clock


@dataclass(frozen=True)
class Plan:
    kind: str  # NOT_COVERED, NARROWED or FULL
    tests: tuple[str, ...]  # pytest arguments, in the order to run them (empty when not covered)
    timeout: float  # seconds; 0 when not covered
    estimate: float  # expected seconds of a surviving run, for ordering the queue


def statement_spans(source: str) -> list[tuple[int, int]]:
    """The line ranges (first, last) of each statement's own code: a compound statement's header
    (decorators, `def` line and signature, `if` condition, `except` clause), not its body.
    Coverage reports a multi-line statement on some of its lines; a mutant may sit on any of them."""
    spans = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.stmt, ast.excepthandler)):
            continue
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        body = getattr(node, "body", None)
        if isinstance(body, list) and body:
            last = max(node.lineno, body[0].lineno - 1)
            # a one-line compound statement (`if x: y`) shares its line with its body
            last = min(last, node.end_lineno or last)
        else:
            last = node.end_lineno or node.lineno
        spans.append((first, last))
    return spans


def span_of(line: int, spans: Iterable[tuple[int, int]]) -> range:
    """The innermost statement span holding `line`; the line alone when none does."""
    holding = [(last - first, first, last) for first, last in spans if first <= line <= last]
    if not holding:
        return range(line, line + 1)
    _, first, last = min(holding)
    return range(first, last + 1)


def tests_alive(start: float, end: float, spans: Mapping[str, tuple[float, float]]) -> frozenset[str]:
    """The tests whose run (setup to teardown, wall clock) overlaps a child process's life."""
    return frozenset(test for test, (first, last) in spans.items() if first <= end and start <= last)


def mutant_timeout(seconds: float) -> float:
    return max(TIMEOUT_FACTOR * seconds, TIMEOUT_FLOOR)


def plan_for(lines: range, coverage: LineCoverage | None, selection: Sequence[str], baseline: Baseline) -> Plan:
    """The tests that judge a mutant on `lines` (one statement), by the rule in the docstring above.
    Without coverage data every mutant runs the whole selection."""
    if coverage is None or any(l in coverage.in_subprocess or l in coverage.outside_tests for l in lines):
        return Plan(FULL, tuple(selection), mutant_timeout(baseline.total), baseline.total)
    tests = set(coverage.untraced).union(*(coverage.by_test.get(l, frozenset())
                                           | coverage.by_subprocess_test.get(l, frozenset()) for l in lines))
    if not tests:
        return Plan(NOT_COVERED, (), 0.0, 0.0)
    ordered = tuple(sorted(tests, key=lambda t: run_order(t, baseline)))
    estimate = baseline.startup + baseline.largest_setup + sum(baseline.by_test.get(t, baseline.total) for t in ordered)
    estimate = min(estimate, baseline.total)  # never more than the whole selection took
    return Plan(NARROWED, ordered, mutant_timeout(estimate), estimate)


def run_order(test: str, baseline: Baseline) -> tuple[bool, float, str]:
    """Unit tests first, then the rest, each fastest first: under -x the first failing test ends
    the run. Unit tests first because a baseline charges a shared fixture's setup (a server start)
    to the test that ran first, so a later test on that server reads as milliseconds; run ahead
    of the unit tests, it pays the start, or waits out a start the mutant broke."""
    return (not test.startswith("tests/unit/"), baseline.by_test.get(test, baseline.total), test)


def queue_order(estimates: Mapping[str, float]) -> list[str]:
    """Jobs longest first: the workers' last jobs are then short ones, so they finish together."""
    return sorted(estimates, key=lambda job: (-estimates[job], job))


def projected_seconds(costs: Iterable[float], workers: int) -> float:
    """Wall time of `costs` taken longest first from one queue by `workers` workers."""
    loads = [0.0] * max(1, workers)
    for cost in sorted(costs, reverse=True):
        loads[loads.index(min(loads))] += cost
    return max(loads)
