"""The pure rules of `make mutate` (scripts/mutation/): which tests judge a mutant, when a mutant
is recorded as not covered, how long it may run, the order of the shared queue, and how stored
results are counted."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import importlib.util
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import toml as tomllib  # type: ignore[no-redef]

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

from mutation.pool import PORT_CLASH, pytest_command  # noqa: E402
from mutation.selection import (FULL, NARROWED, NOT_COVERED, TIMEOUT_FLOOR, Baseline, LineCoverage,  # noqa: E402
                                mutant_timeout, plan_for, projected_seconds, queue_order, span_of,
                                statement_spans)
from mutation.selection import tests_alive as alive_during  # noqa: E402  (not collected as a test)
from mutation.tree import make_copy, package_dirs  # noqa: E402

SOURCE = '''import functools

LIMIT = 3


@functools.cache
def bounded(values,
            limit=LIMIT):
    if len(values) > limit:
        raise ValueError(
            "too many")
    return [v
            for v in values]
'''
SELECTION = ("tests/unit/test_a.py", "tests/integration/test_b.py")
BASELINE = Baseline(startup=4.0, by_test={"t::slow": 9.0, "t::fast": 1.0, "t::other": 2.0}, largest_setup=0.0,
                    total=100.0)


def test_a_mutant_inside_a_multiline_statement_belongs_to_the_whole_statement():
    spans = statement_spans(SOURCE)
    assert span_of(11, spans) == range(10, 12)  # the string argument of a raise spanning two lines
    assert span_of(13, spans) == range(12, 14)  # a comprehension over two lines
    # a decorator and a signature's default on its second line are the header of the def
    assert span_of(6, spans) == span_of(8, spans) == range(6, 9)
    # an `if` is its condition, not its body
    assert span_of(9, spans) == range(9, 10)


def test_a_line_no_selected_test_executes_is_not_covered_and_not_run():
    lines = LineCoverage(by_test={10: frozenset({"t::fast"})})
    plan = plan_for(range(9, 10), lines, SELECTION, BASELINE)
    assert plan.kind == NOT_COVERED and plan.tests == () and plan.timeout == 0


def test_a_line_run_only_inside_tests_runs_exactly_those_tests_fastest_first():
    lines = LineCoverage(by_test={9: frozenset({"t::slow"}), 10: frozenset({"t::fast"}), 11: frozenset({"t::x"})})
    plan = plan_for(range(9, 11), lines, SELECTION, BASELINE)
    assert plan.kind == NARROWED
    assert plan.tests == ("t::fast", "t::slow")  # the union over the statement's lines, not t::x
    assert plan.estimate == pytest.approx(4.0 + 1.0 + 9.0)


def test_a_line_a_server_ran_runs_the_tests_running_while_that_server_lived():
    spans = {"t::before": (0.0, 10.0), "t::own": (10.0, 20.0), "t::during": (15.0, 30.0), "t::after": (31.0, 40.0)}
    assert alive_during(12.0, 30.5, spans) == {"t::own", "t::during"}
    assert alive_during(0.0, 99.0, spans) == set(spans)  # a server of the whole session: every test
    lines = LineCoverage(by_test={9: frozenset({"t::fast"})}, by_subprocess_test={9: frozenset({"t::slow"})})
    plan = plan_for(range(9, 10), lines, SELECTION, BASELINE)
    assert plan.kind == NARROWED and plan.tests == ("t::fast", "t::slow")


def test_a_test_that_set_its_own_tracer_judges_every_mutant():
    """Coverage sees nothing while a test's own sys.settrace runs (the tokenizer's linear-work test
    does that): a line it ran looked run by no one, and the tests after it by nobody at all."""
    lines = LineCoverage(by_test={10: frozenset({"t::fast"})}, untraced=frozenset({"t::other"}))
    assert plan_for(range(9, 10), lines, SELECTION, BASELINE).tests == ("t::other",)
    assert plan_for(range(10, 11), lines, SELECTION, BASELINE).tests == ("t::fast", "t::other")


@pytest.mark.parametrize("lines", [LineCoverage(by_test={9: frozenset({"t::fast"})}, in_subprocess=frozenset({9})),
                                   LineCoverage(by_test={9: frozenset({"t::fast"})}, outside_tests=frozenset({9})),
                                   LineCoverage(in_subprocess=frozenset({9})),
                                   None])
def test_a_line_a_server_or_an_import_runs_falls_back_to_the_whole_selection(lines):
    """A child process of unknown life or import-time code cannot be tied to tests; without coverage
    data no line can."""
    plan = plan_for(range(9, 10), lines, SELECTION, BASELINE)
    assert plan.kind == FULL and plan.tests == SELECTION
    assert plan.timeout == mutant_timeout(BASELINE.total)


def test_the_timeout_is_three_baselines_with_a_floor():
    assert mutant_timeout(100.0) == 300.0
    assert mutant_timeout(2.0) == TIMEOUT_FLOOR
    lines = LineCoverage(by_test={9: frozenset({"t::fast"})})
    assert plan_for(range(9, 10), lines, SELECTION, BASELINE).timeout == TIMEOUT_FLOOR
    # a narrowed set's estimate (start-up, one fixture setup, its tests) is capped at the whole selection's
    slow = Baseline(startup=90.0, by_test={"t::fast": 50.0}, largest_setup=40.0, total=100.0)
    assert plan_for(range(9, 10), lines, SELECTION, slow).timeout == mutant_timeout(100.0)


def test_the_queue_runs_longest_first_and_the_projection_balances_workers():
    assert queue_order({"a": 5.0, "b": 50.0, "c": 20.0}) == ["b", "c", "a"]
    assert projected_seconds([10, 10, 10, 10], 2) == 20
    assert projected_seconds([30, 10, 10, 10], 2) == 30  # one long job is the floor
    assert projected_seconds([30, 10, 10, 10], 1) == 60


def test_node_ids_survive_the_command_cosmic_ray_splits():
    node = "tests/unit/test_a.py::test_b[one word-\"quoted\"]"
    argv = shlex.split(pytest_command((node, "tests/x.py"), 42.7))
    assert argv[-2:] == [node, "tests/x.py"]
    assert "-x" in argv and argv[argv.index("--timeout") + 1] == "42"


def test_a_port_clash_is_recognised_so_it_is_rerun_not_counted():
    assert PORT_CLASH.search("RuntimeError: Failed to bind to address 127.0.0.1:5123")
    assert PORT_CLASH.search("OSError: [Errno 98] Address already in use")
    assert not PORT_CLASH.search("AssertionError: assert 'UNAVAILABLE' == 'OK'")


def _classify():
    spec = importlib.util.spec_from_file_location("mutate_script", SCRIPTS / "mutate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module.classify


def test_stored_results_are_counted_as_the_report_shows_them():
    classify = _classify()
    # cosmic-ray stores a timed-out run as KILLED with the output "timeout": it was counted killed
    assert classify("NORMAL", "KILLED", "timeout") == "timeout"
    assert classify("NORMAL", "KILLED", "F\n1 failed") == "killed"
    assert classify("NORMAL", "SURVIVED", "not covered: no test of the module's selection executes this line") \
        == "not covered"
    assert classify("NORMAL", "SURVIVED", "5 passed") == "survived"
    assert classify(None, None, None) == "pending"
    # cosmic-ray's operator failed (e.g. ExceptionReplacer on `except (OSError, asyncio.TimeoutError)`):
    # no mutant ran, so it is neither a survivor nor a kill
    assert classify("EXCEPTION", "INCOMPETENT", "Traceback (most recent call last): ...") == "incompetent"


def test_the_copy_imports_every_package_of_the_install(tmp_path):
    """The shim once mapped a fixed list that lacked `rnn_sentiment.inference`: every server module
    importing the Open Inference Protocol stubs failed in the copy, so no baseline could pass."""
    work = make_copy(tmp_path)
    assert "inference" in package_dirs()
    for name, folder in package_dirs().items():
        linked = work / "shim" / "rnn_sentiment" / name
        assert linked.resolve() == (work / "tree" / folder).resolve()
        assert any(linked.glob("*.py")), name


def test_a_module_edited_while_its_session_is_made_is_made_afresh_on_the_next_run(tmp_path, monkeypatch):
    """The saved source is the text cosmic-ray init read: an edit landing during init must leave
    it unequal to the file, or the session's mutant positions (the old text's) are kept for the
    new text, and mutants are judged by the wrong lines' tests."""
    _classify()  # loads scripts/mutate.py as the module mutate_script
    script = sys.modules["mutate_script"]
    module = tmp_path / "pkg" / "limits.py"
    module.parent.mkdir()
    module.write_text(SOURCE)
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "mutate_targets.toml").write_text((SCRIPTS / "mutate_targets.toml").read_text())
    monkeypatch.setattr(script, "REPO", tmp_path)
    monkeypatch.setattr(script, "TARGETS", tmp_path / "scripts" / "mutate_targets.toml")
    monkeypatch.setattr(script, "STATE", tmp_path / "state")
    real_run = script.subprocess.run

    def run_then_edit(command, *args, **kwargs):
        result = real_run(command, *args, **kwargs)
        if Path(command[0]).name == "cosmic-ray" and command[1] == "init":
            module.write_text("# a line added while init ran\n" + SOURCE)  # every position moves
        return result

    monkeypatch.setattr(script.subprocess, "run", run_then_edit)
    target = script.Target("pkg/limits.py", "server", ("tests/unit/test_a.py",), 60.0)
    session = script.init_session(target)
    assert not script._source_unchanged(target, session)  # so the next run makes it again


def test_unit_tests_run_before_tests_that_share_a_server_whatever_their_recorded_time():
    """A module fixture's server start is charged to the first test using it: a later test on
    that server reads as milliseconds, yet run alone it pays the start (or waits out a start the
    mutant broke) before the unit tests that would kill the mutant at once."""
    baseline = Baseline(startup=4.0, by_test={"tests/integration/test_tls.py::uses_the_server": 0.004,
                                              "tests/unit/server/test_tls.py::fast": 0.01,
                                              "tests/unit/server/test_tls.py::slower": 0.5},
                        largest_setup=30.0, total=100.0)
    coverage = LineCoverage(by_test={7: frozenset(baseline.by_test)})
    plan = plan_for(range(7, 8), coverage, tuple(baseline.by_test), baseline)
    assert plan.tests == ("tests/unit/server/test_tls.py::fast", "tests/unit/server/test_tls.py::slower",
                          "tests/integration/test_tls.py::uses_the_server")


def test_a_test_edited_while_the_baseline_runs_is_not_taken_as_covered_by_it(tmp_path, monkeypatch):
    """The saved pre-pass is keyed by the tree the copies were made from: keyed by the tree as it
    is when the baseline ends, a test edited meanwhile read as covered, and the next run reused a
    coverage map without it (a helper's --retry-survivors reported a mutant its new test kills)."""
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from mutation import runner
    from mutation.pool import PrepassResult

    (tmp_path / "server").mkdir()
    (tmp_path / "server" / "limits.py").write_text(SOURCE)
    test_file = tmp_path / "tests" / "test_limits.py"
    test_file.parent.mkdir()
    test_file.write_text("def test_bounded(): pass\n")
    monkeypatch.setattr(runner, "REPO", tmp_path)
    target = SimpleNamespace(module="server/limits.py", tests=("tests/test_limits.py",), timeout=60.0)
    session = tmp_path / "session.sqlite"
    digests = {target.module: runner.tree_digest(target)}  # as run_modules takes it, before the copies

    def baseline_while_a_test_is_edited(module, tests, timeout):
        test_file.write_text("def test_bounded(): assert True\n")  # lands while the baseline runs
        return PrepassResult(module, True, "", None, BASELINE)

    monkeypatch.setattr(runner, "prepass", baseline_while_a_test_is_edited)
    with ThreadPoolExecutor(1) as pool:
        runner._drain(pool, {target.module: (target, session, [])}, digests, [], [], lambda: None)
    saved = session.with_suffix(".prepass.json")
    assert runner._load_prepass(saved, digests[target.module]) is not None
    assert runner._load_prepass(saved, runner.tree_digest(target)) is None  # the next run takes a new one


@pytest.fixture(scope="module")
def made_sessions() -> dict[tuple[str, str], bytes]:
    """Sessions as cosmic-ray's init and filters made them, by (module source, config): one
    module's tests make each once (three cosmic-ray processes, seconds) and copy it after."""
    return {}


@pytest.fixture
def script_in(tmp_path, monkeypatch, made_sessions):
    """scripts/mutate.py pointed at a scratch repository holding pkg/limits.py (SOURCE), with the
    real targets' operators, an empty equivalents file, a report block and no sessions."""
    _classify()
    script = sys.modules["mutate_script"]
    real_run = script.subprocess.run
    copied: set[str] = set()

    def made_once(command, *args, **kwargs):
        tool = Path(command[0]).name
        if tool == "cosmic-ray" and command[1] == "init":
            config, session = Path(command[2]), Path(command[3])
            source = (tmp_path / tomllib.loads(config.read_text())["cosmic-ray"]["module-path"]).read_text()
            key = (source, config.read_text())
            if key not in made_sessions:
                for step in (command, [command[0].replace("cosmic-ray", "cr-filter-operators"), str(session), str(config)],
                             [command[0].replace("cosmic-ray", "cr-filter-pragma"), str(session)]):
                    real_run(step, *args, **kwargs)
                made_sessions[key] = session.read_bytes()
            session.write_bytes(made_sessions[key])
            copied.add(str(session))
            return subprocess.CompletedProcess(command, 0)
        if tool.startswith("cr-filter-") and command[1] in copied:
            return subprocess.CompletedProcess(command, 0)  # the copy was made after the filters
        return real_run(command, *args, **kwargs)

    monkeypatch.setattr(script.subprocess, "run", made_once)
    module = tmp_path / "pkg" / "limits.py"
    module.parent.mkdir()
    module.write_text(SOURCE)
    (tmp_path / "scripts").mkdir()
    targets = tmp_path / "scripts" / "mutate_targets.toml"
    targets.write_text('[operators]\nexclude = ' + repr(script.excluded_operators()).replace("'", '"')
                       + '\n\n[modules."pkg/limits.py"]\narea = "server"\ntests = ["tests/unit/test_a.py"]\n')
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "testing.md").write_text(f"# Testing\n\n{script.REPORT_START}\n{script.REPORT_END}\n")
    for name, path in (("REPO", tmp_path), ("TARGETS", targets), ("STATE", tmp_path / "state"),
                       ("RECORD", tmp_path / "scripts" / "mutate_results.json"),
                       ("EQUIVALENT", tmp_path / "scripts" / "mutate_equivalent.toml"),
                       ("REPORT", tmp_path / "docs" / "testing.md")):
        monkeypatch.setattr(script, name, path)
    return script


def _run_every_mutant(script, target, result_of) -> None:
    """Store a result for each pending mutant, as a finished run would."""
    import sqlite3

    _, session = script.session_paths(target)
    with sqlite3.connect(session) as db:
        specs = db.execute("SELECT job_id, operator_name FROM mutation_specs WHERE job_id NOT IN "
                           "(SELECT job_id FROM work_results)").fetchall()
        db.executemany("INSERT INTO work_results (job_id, worker_outcome, output, test_outcome, diff) "
                       "VALUES (?, 'NORMAL', ?, ?, '')",
                       [(job_id, *result_of(operator)) for job_id, operator in specs])


def _survives_if_numbers(operator: str) -> tuple[str, str]:
    return ("1 passed", "SURVIVED") if "NumberReplacer" in operator else ("1 failed", "KILLED")


def test_a_fresh_clone_keeps_the_report_its_sessions_never_saw(script_in):
    """Sessions live only in the checkout that ran them: the report written from them alone told a
    fresh clone that every module was "not started" and overwrote the committed counts. The record
    (scripts/mutate_results.json) keeps them."""
    target = script_in.load_targets()["pkg/limits.py"]
    script_in.init_session(target)
    _run_every_mutant(script_in, target, _survives_if_numbers)
    script_in.write_report(script_in.load_targets())
    with_session = script_in.REPORT.read_text()
    assert "| `pkg/limits.py` |" in with_session

    shutil.rmtree(script_in.STATE)  # a fresh clone: the committed files, no build/
    script_in.write_report(script_in.load_targets())
    assert script_in.REPORT.read_text() == with_session
    assert "Not started yet" not in with_session


def test_a_fresh_session_resumes_from_the_record_of_the_same_source(script_in):
    target = script_in.load_targets()["pkg/limits.py"]
    script_in.init_session(target)
    ran = {o.job_id: o for o in script_in.outcomes(target)}
    first_three = sorted(j for j, o in ran.items() if o.result == "pending")[:3]
    _run_every_mutant(script_in, target, _survives_if_numbers)
    import sqlite3

    _, session = script_in.session_paths(target)
    with sqlite3.connect(session) as db:  # a run stopped after three mutants
        db.execute(f"DELETE FROM work_results WHERE worker_outcome = 'NORMAL' AND job_id NOT IN "
                   f"({','.join('?' * len(first_three))})", first_three)
    script_in.sync_record(script_in.load_targets())
    before = sorted((o.operator, o.occurrence, o.result) for o in script_in.outcomes(target))

    shutil.rmtree(script_in.STATE)
    script_in.init_session(target)
    after = sorted((o.operator, o.occurrence, o.result) for o in script_in.outcomes(target))
    assert after == before
    assert sum(r != "pending" for *_, r in after if r != "skipped") == 3
    assert not script_in.complete_in_record(target)  # so `make mutate` runs the rest


def test_a_record_of_another_source_is_neither_counted_nor_restored(script_in):
    target = script_in.load_targets()["pkg/limits.py"]
    script_in.init_session(target)
    _run_every_mutant(script_in, target, _survives_if_numbers)
    script_in.sync_record(script_in.load_targets())
    assert script_in.complete_in_record(target)

    shutil.rmtree(script_in.STATE)
    (script_in.REPO / "pkg" / "limits.py").write_text(SOURCE.replace("LIMIT = 3", "LIMIT = 4"))
    assert not script_in.complete_in_record(target)
    script_in.write_report(script_in.load_targets())
    report = script_in.REPORT.read_text()
    assert "| `pkg/limits.py` |" not in report
    assert "Run on an earlier source, not counted until run again (1 modules): `pkg/limits.py`" in report
    script_in.init_session(target)
    assert {o.result for o in script_in.outcomes(target)} <= {"pending", "skipped"}


def test_counts_carried_over_from_a_report_wait_for_a_complete_run_to_replace_them(script_in):
    """A module carried over from the report keeps its killed mutants only as counts; a session
    started on it must not overwrite them with its own partial results."""
    from mutation import record

    target = script_in.load_targets()["pkg/limits.py"]
    source = (script_in.REPO / "pkg" / "limits.py").read_text()
    carried = record.from_results(source, [])
    carried.unplaced = {"killed": 5}
    with record.updating(script_in.RECORD, script_in.STATE / "record.lock") as records:
        records["pkg/limits.py"] = carried
    script_in.init_session(target)  # nothing of it can be placed: every mutant is pending
    script_in.sync_record(script_in.load_targets())
    assert record.load(script_in.RECORD)["pkg/limits.py"].unplaced == {"killed": 5}
    _run_every_mutant(script_in, target, _survives_if_numbers)
    script_in.sync_record(script_in.load_targets())
    replaced = record.load(script_in.RECORD)["pkg/limits.py"]
    assert replaced.unplaced == {} and replaced.mutants and replaced.pending() == 0


def test_a_module_no_operator_applies_to_is_reported_as_without_mutants_not_as_not_started(script_in):
    """cli/train_command.py has no number, comparison or operator to mutate: after its run it
    read "not started" for ever."""
    (script_in.REPO / "pkg" / "names.py").write_text('"""Flag names."""\n\nSPELLINGS = {"data": ("--data",)}\n')
    with open(script_in.TARGETS, "a") as targets:
        targets.write('\n[modules."pkg/names.py"]\narea = "cli"\ntests = ["tests/unit/test_a.py"]\n')
    script_in.init_session(script_in.load_targets()["pkg/names.py"])
    script_in.write_report(script_in.load_targets())
    report = script_in.REPORT.read_text()
    assert "No mutants (none of the operators applies): `pkg/names.py`." in report
    assert "Not started yet (1 modules): `pkg/limits.py`." in report
    # A fresh clone has only the record: it must say so too (it read "not started" again).
    shutil.rmtree(script_in.STATE)
    script_in.write_report(script_in.load_targets())
    assert script_in.REPORT.read_text() == report
    assert script_in.complete_in_record(script_in.load_targets()["pkg/names.py"])  # make mutate skips it


def test_a_record_listing_the_filters_skipped_mutants_still_restores(script_in):
    """The operator filter marks excluded mutants skipped when a session is made; a record that
    also lists them (the first version wrote them) made the restore insert a second result for
    the same mutant and stop the run."""
    import json
    import sqlite3

    target = script_in.load_targets()["pkg/limits.py"]
    _, session = script_in.session_paths(target)
    script_in.init_session(target)
    _run_every_mutant(script_in, target, _survives_if_numbers)
    with sqlite3.connect(session) as db:
        assert db.execute("SELECT count(*) FROM work_results WHERE worker_outcome = 'SKIPPED'").fetchone()[0] > 0
    every = [{"operator": o.operator, "occurrence": o.occurrence, "line": o.line, "source_line": o.source_line,
              "result": o.result} for o in script_in.outcomes(target)]
    script_in.RECORD.write_text(json.dumps({"modules": {"pkg/limits.py": {
        "source_sha256": script_in.record.source_digest(SOURCE), "mutants": every}}}))
    expected = sorted((o.operator, o.occurrence, o.result) for o in script_in.outcomes(target))

    shutil.rmtree(script_in.STATE)
    script_in.init_session(target)
    assert sorted((o.operator, o.occurrence, o.result) for o in script_in.outcomes(target)) == expected


def test_a_session_made_afresh_never_takes_results_back_out_of_the_record(script_in):
    """A session made afresh (a new test selection, or a restore that failed) holds every mutant
    pending: synced as it was, it overwrote a module's finished results in the record."""
    import sqlite3

    target = script_in.load_targets()["pkg/limits.py"]
    script_in.init_session(target)
    _run_every_mutant(script_in, target, _survives_if_numbers)
    script_in.sync_record(script_in.load_targets())
    finished = script_in.record.load(script_in.RECORD)["pkg/limits.py"]

    _, session = script_in.session_paths(target)
    with sqlite3.connect(session) as db:
        db.execute("DELETE FROM work_results WHERE worker_outcome = 'NORMAL'")
    script_in.sync_record(script_in.load_targets())
    assert script_in.record.load(script_in.RECORD)["pkg/limits.py"] == finished


# The picture renderers are out of issue 21's scope; package markers hold no behaviour.
NOT_MUTATED = {"client/render.py", "client/render_html.py", "client/render_png.py", "client/trace_layout.py",
               "server/__init__.py", "client/__init__.py", "cli/__init__.py", "cli/__main__.py"}


def test_every_module_of_the_server_client_and_cli_is_mutated():
    """Five modules (metric_buffer, model_limits, predict_many, targets, predict_command) were
    never listed, so no report counted them; a module added later must be listed too."""
    _classify()
    targets = sys.modules["mutate_script"].load_targets()
    repo = SCRIPTS.parent
    modules = {str(path.relative_to(repo)) for folder in ("server", "client", "cli") for path in (repo / folder).glob("*.py")}
    assert sorted(modules - NOT_MUTATED - set(targets)) == []
    assert sorted(NOT_MUTATED & set(targets)) == []
