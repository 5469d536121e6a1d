"""bench/frontend.py and bench/grpc_stacks.py: variant lists, the round maths, the overlays' pip and
protoc command lines, the stack probe; and the sync no-op server answering a real Predict."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from bench import grpc_stacks
from bench.frontend import Spread, Variant, parse_variants, per_round_ratios, spread, summarize
from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[2]


def test_default_variants_alternate_stacks_and_leave_out_a_missing_sync_server() -> None:
    variants = parse_variants(None, ["1.75.1", "1.85.4"], sync_server_present=False)
    assert [v.name for v in variants[:2]] == ["ceiling aio-uvloop grpcio 1.75.1", "ceiling aio-uvloop grpcio 1.85.4"]
    assert {(v.kind, v.front_end) for v in variants} == {
        ("ceiling", "aio-uvloop"), ("ceiling", "aio-asyncio"), ("ceiling", "sync"),
        ("full", "aio-uvloop"), ("full", "aio-asyncio")}
    assert len(variants) == 10
    with_sync = parse_variants(None, ["1.85.4"], sync_server_present=True)
    assert Variant("full", "sync", "1.85.4") in with_sync


def test_variant_specs_expand_a_star_and_name_the_valid_choices_on_a_typo() -> None:
    variants = parse_variants("ceiling:*,full:sync", ["1.85.4"], sync_server_present=False)
    assert [(v.kind, v.front_end) for v in variants] == [
        ("ceiling", "aio-uvloop"), ("ceiling", "aio-asyncio"), ("ceiling", "sync"), ("full", "sync")]
    with pytest.raises(ValueError, match="FRONT_END in"):
        parse_variants("full:uvloop", ["1.85.4"], sync_server_present=False)
    with pytest.raises(ValueError, match="no stacks"):
        parse_variants("full:sync", [], sync_server_present=False)


def test_spread_and_per_round_ratios() -> None:
    assert spread([3.0, 1.0, 2.0, 10.0]) == Spread(2.5, 1.0, 10.0)
    assert spread([]) is None
    assert per_round_ratios([150.0, 200.0, 90.0], [100.0, 100.0, 0.0]) == [1.5, 2.0]


def _run(variant: Variant, round_number: int, rps: float, concurrency: int = 32) -> dict:
    return {"variant": variant.name, "kind": variant.kind, "front_end": variant.front_end, "stack": variant.stack,
            "round": round_number, "concurrency": concurrency, "rps": rps, "p50_ms": rps / 100, "p99_ms": rps / 10,
            "errors": 1, "server_cpu_cores": 1.0}


def test_summary_takes_medians_over_rounds_and_ratios_to_the_baseline_of_the_same_kind() -> None:
    base, old = Variant("ceiling", "aio-uvloop", "1.85.4"), Variant("ceiling", "sync", "1.75.1")
    full_base = Variant("full", "aio-uvloop", "1.85.4")
    runs = [_run(base, 1, 100), _run(base, 2, 200), _run(base, 3, 120),
            _run(old, 1, 150), _run(old, 2, 220), _run(old, 3, 180), _run(full_base, 1, 50)]
    rows = {r["variant"]: r for r in summarize(runs, "1.85.4")}
    assert rows[old.name]["rps"] == {"median": 180, "low": 150, "high": 220}
    assert rows[old.name]["ratio_of_medians"] == 1.5  # 180 / 120
    assert rows[old.name]["round_ratios"] == [1.5, 1.1, 1.5]
    assert rows[old.name]["errors"] == 3 and rows[old.name]["rounds"] == 3
    assert rows[base.name]["ratio_of_medians"] == 1.0
    # A full-server row divides by the full-server baseline, never by the ceiling's.
    assert rows[full_base.name]["baseline"] == full_base.name and rows[full_base.name]["ratio_of_medians"] == 1.0


def test_summary_without_a_baseline_row_gives_no_ratio() -> None:
    lone = Variant("full", "sync", "1.75.1")
    [row] = summarize([_run(lone, 1, 80)], "1.85.4")
    assert row["baseline"] is None and row["ratio_of_medians"] is None and row["round_ratios"] == []


CONSTRAINTS = "torch==2.13.0\ngrpcio==1.85.4\ngrpcio-status==1.85.3\ngrpcio-health-checking==1.85.1\n" \
              "grpcio-reflection==1.85.1\nprotobuf==7.36.2  # runtime 7\n"


def test_companions_take_the_newest_release_of_the_same_minor() -> None:
    assert grpc_stacks.companion_version("1.85.4", ["1.86.0", "1.85.3", "1.85.1", "1.84.2", "1.85.0rc1"]) == "1.85.3"
    assert grpc_stacks.companion_version("1.75.1", ["1.76.0", "1.75.1", "1.75.0"]) == "1.75.1"
    with pytest.raises(SystemExit):
        grpc_stacks.companion_version("1.90.0", ["1.85.3"])


def test_the_constraints_stack_installs_exactly_the_pins_with_the_constraints_file() -> None:
    stack = grpc_stacks.resolve_stack("1.85.4", CONSTRAINTS, versions_of=lambda package: pytest.fail(package))
    assert stack.requirements == ("grpcio==1.85.4", "grpcio-status==1.85.3", "grpcio-health-checking==1.85.1",
                                  "grpcio-reflection==1.85.1", "protobuf==7.36.2")
    command = grpc_stacks.install_command(stack, Path("/x/1.85.4"), python="py")
    assert command[:4] == ["py", "-m", "pip", "install"]
    assert command[command.index("--target") + 1] == "/x/1.85.4"
    assert command[command.index("-c") + 1] == str(grpc_stacks.CONSTRAINTS)
    assert command[-5:] == list(stack.requirements)


def test_another_stack_takes_matching_companions_and_lets_pip_choose_protobuf() -> None:
    available = {"grpcio-status": ["1.75.1", "1.75.0"], "grpcio-health-checking": ["1.76.0", "1.75.1"],
                 "grpcio-reflection": ["1.75.0", "1.74.0"]}
    stack = grpc_stacks.resolve_stack("1.75.1", CONSTRAINTS, versions_of=available.__getitem__)
    assert stack.requirements == ("grpcio==1.75.1", "grpcio-status==1.75.1", "grpcio-health-checking==1.75.1",
                                  "grpcio-reflection==1.75.0", "protobuf")
    assert not stack.constrained
    assert "-c" not in grpc_stacks.install_command(stack, Path("/x"))
    assert grpc_stacks.stack_environment(stack, Path("/tree"))["PYTHONPATH"] == os.pathsep.join(
        [str(grpc_stacks.STACKS_DIR / "1.75.1"), "/tree"])


def test_protoc_runs_compile_both_contracts_like_make_proto() -> None:
    commands = grpc_stacks.protoc_commands(Path("/out"), python="py")
    assert [c[-1] for c in commands] == ["proto/rnn_sentiment/v1/sentiment.proto", "proto/inference/grpc_service.proto"]
    assert all(["py", "-m", "grpc_tools.protoc"] == c[:3] and "--grpc_python_out=/out" in c for c in commands)
    assert "-Irnn_sentiment/inference=proto/inference" in commands[1]


def test_the_probe_reports_what_a_process_imported_and_the_check_refuses_another_stack(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(grpc_stacks.SITECUSTOMIZE)
    done = subprocess.run([sys.executable, "-c", "pass"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    [report] = grpc_stacks.probe_reports(done.stderr)
    assert report.grpc == grpc.__version__ and report.pid > 0
    assert Path(report.stubs_file).resolve() == Path(pb.__file__).resolve()
    here = grpc_stacks.GrpcStack(grpc.__version__, (), False)
    with pytest.raises(RuntimeError, match="should run stack"):
        grpc_stacks.check_probes([report], here, stubs=tmp_path)  # the committed stubs are not the bake-off's
    with pytest.raises(RuntimeError, match="no frontend-stack line"):
        grpc_stacks.check_probes([], here, stubs=tmp_path)


def test_the_sync_noop_server_answers_predict_and_stops_on_sigterm() -> None:
    server = subprocess.Popen([sys.executable, "-m", "bench.noop_server", "--front-end", "sync", "--threads", "2",
                               "--address", "127.0.0.1:0"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        assert line.startswith("serving on port"), line
        port = int(line.split()[-1])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            answer = pb_grpc.SentimentServiceStub(channel).Predict(pb.PredictRequest(texts=["good", "bad"]), timeout=10)
        assert len(answer.predictions) == 2 and answer.model == "sst2-gru"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        server.stdout.close()


def test_the_newest_release_skips_pre_releases_and_compares_numerically() -> None:
    versions = ["1.9.0", "1.10.0rc1", "1.10.0", "1.2.3", "1.11.0.dev0"]
    assert grpc_stacks.newest_release("grpcio", lambda package: versions) == "1.10.0"
