"""make bench-peers' pure parts: TorchServe rows per executor and which peer row each ratio takes."""

from __future__ import annotations

import pytest

from bench.peers.run import PEER_GROUPS, parse_args, ratios
from bench.peers.torchserve import BACKENDS, HANDLER, TorchServeConfig


def test_a_torchserve_row_names_its_executor_and_asks_the_handler_for_it() -> None:
    torch_row, onnx_row = TorchServeConfig(workers=1), TorchServeConfig(workers=2, backend="onnx")
    assert torch_row.label == "TorchServe 0.12 (torch, batch 32/5 ms, 1 worker)"
    assert onnx_row.label == "TorchServe 0.12 (onnx, batch 32/5 ms, 2 workers)"
    assert (torch_row.executor, onnx_row.executor) == ("torch", "onnxruntime")
    assert HANDLER.is_file()


def test_an_unknown_torchserve_backend_is_refused_with_the_options() -> None:
    with pytest.raises(ValueError, match=r"options are \['torch', 'onnx'\]"):
        TorchServeConfig(backend="tensorrt")


def test_the_backend_flag_runs_both_by_default_and_takes_a_subset() -> None:
    assert parse_args([]).torchserve_backend == ["torch", "onnx"]
    assert parse_args(["--torchserve-backend", "onnx"]).torchserve_backend == ["onnx"]
    assert parse_args(["--torchserve-backend", "onnx, torch,onnx"]).torchserve_backend == ["onnx", "torch"]


def test_the_backend_flag_refuses_an_unknown_executor(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--torchserve-backend", "torch,tvm"])
    assert "unknown backend tvm; options are torch,onnx" in capsys.readouterr().err


def _run(server: str, concurrency: int, rps: float, executor: str | None = None) -> dict:
    run = {"server": server, "concurrency": concurrency, "rps": rps, "p99_ms": 10.0}
    if executor is not None:
        run["executor"] = executor
    return run


OURS = "ours, --workers 2"
TS_TORCH = TorchServeConfig(workers=2).label
TS_ONNX = TorchServeConfig(workers=1, backend="onnx").label


def test_ours_is_set_against_the_best_torchserve_row_of_either_executor_and_the_best_onnx_row() -> None:
    runs = [_run(OURS, 32, 3000.0), _run(TS_TORCH, 32, 2000.0, "torch"), _run(TS_ONNX, 32, 1500.0, "onnx"),
            _run("MLServer 1.7.1 (1 worker)", 32, 600.0, "torch")]
    by_label = {r["ratio"]: r["value"] for r in ratios(runs)}
    assert by_label == {
        f"{OURS} / best TorchServe, either executor ({TS_TORCH}), req/s at concurrency 32": 1.5,
        f"{OURS} / best TorchServe on ONNX Runtime ({TS_ONNX}), req/s at concurrency 32": 2.0,
        f"{OURS} / best MLServer (MLServer 1.7.1 (1 worker)), req/s at concurrency 32": 5.0,
    }


def test_the_best_row_is_chosen_per_concurrency() -> None:
    runs = [_run(OURS, 1, 800.0), _run(OURS, 128, 2000.0),
            _run(TS_TORCH, 1, 100.0, "torch"), _run(TS_ONNX, 1, 200.0, "onnx"),
            _run(TS_TORCH, 128, 1600.0, "torch"), _run(TS_ONNX, 128, 1000.0, "onnx")]
    either = {r["ratio"].rsplit(" ", 1)[-1]: r["ratio"] for r in ratios(runs) if "either" in r["ratio"]}
    assert TS_ONNX in either["1"] and TS_TORCH in either["128"]


def test_without_onnx_rows_there_is_no_onnx_ratio() -> None:
    runs = [_run(OURS, 32, 3000.0), _run(TS_TORCH, 32, 2000.0, "torch")]
    assert [r["ratio"] for r in ratios(runs)] == [
        f"{OURS} / best TorchServe, either executor ({TS_TORCH}), req/s at concurrency 32"]


def test_a_row_without_an_executor_never_counts_as_onnx() -> None:
    onnx_group = next(g for g in PEER_GROUPS if g.executor == "onnx")
    assert not onnx_group.holds(_run(TS_TORCH, 32, 1.0))
    assert onnx_group.holds(_run(TS_ONNX, 32, 1.0, "onnx"))
    assert not onnx_group.holds(_run(OURS, 32, 1.0, "onnx"))


def test_the_targets_of_the_issue_sit_on_concurrency_32_and_128_only() -> None:
    runs = [_run(OURS, c, 1000.0) for c in (1, 32, 128)] + [_run(TS_ONNX, c, 500.0, "onnx") for c in (1, 32, 128)]
    targets = {r["ratio"]: r["target"] for r in ratios(runs)}
    assert all(t == "" for label, t in targets.items() if label.endswith("concurrency 1"))
    assert all(t == "≥ 1.5, lower p99" for label, t in targets.items() if label.endswith("concurrency 32"))
    assert all(t == "≥ 1.25, lower p99" for label, t in targets.items() if label.endswith("concurrency 128"))


def test_streampredict_texts_are_set_against_torchserve_best_unary_at_32_and_128_and_never_as_ours() -> None:
    streamed = f"{OURS}, StreamPredict, 32 streams × 64 one-text messages"
    runs = [_run(OURS, 32, 3000.0), _run(TS_TORCH, 32, 2000.0, "torch"), _run(TS_TORCH, 128, 4000.0, "torch"),
            _run(OURS, 128, 3500.0), {**_run(streamed, 32, 100.0), "texts_per_s": 6400.0, "stream_predict": True}]
    by_label = {r["ratio"]: (r["value"], r["target"]) for r in ratios(runs)}
    assert by_label[f"{streamed}: texts/s / best TorchServe, either executor ({TS_TORCH}), req/s at concurrency 32"] \
        == (3.2, "≥ 2")
    assert by_label[f"{streamed}: texts/s / best TorchServe, either executor ({TS_TORCH}), req/s at concurrency 128"] \
        == (1.6, "≥ 2")
    assert not [label for label in by_label if label.startswith(f"{streamed} /")]  # not a unary row of ours
