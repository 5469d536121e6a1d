"""`rnn-sentiment eval` gives the same numbers in-process and against a running server, names what
it evaluated, and exits 2 with one error line when the data, the checkpoint or the server refuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rnn_sentiment.cli.main import build_parser, main
from tests.support import SHIPPED_MODELS, SST2_DIR, ServerProcess

GRU = SHIPPED_MODELS / "sst2-gru"


def _eval(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "rnn_sentiment.cli", "eval", "--data", str(SST2_DIR), "--json", *args],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_eval_over_grpc_matches_in_process(server: ServerProcess) -> None:
    if not (SST2_DIR / "dev.tsv").is_file():
        pytest.skip(f"SST-2 dev set not found at {SST2_DIR}")
    local = _eval("--checkpoint", str(SHIPPED_MODELS / "sst2-gru"))
    remote = _eval("--target", server.target, "--model", "sst2-gru", "--texts-per-call", "8")
    assert remote["sha256"] == local["sha256"]
    assert remote["count"] == local["count"] == 872
    assert remote["accuracy"] == local["accuracy"]
    assert remote["confusion"] == local["confusion"]
    assert remote["ece"] == pytest.approx(local["ece"], abs=1e-4)  # scores travel as float32
    assert [s["name"] for s in local["subsets"]][-1] == "with a negation"


# Eleven texts, so texts-per-call 4 sends calls of 4, 4 and 3 (the last one short).
SMALL_SET = [
    (1, "a warm , funny and beautifully acted story ."),
    (0, "the plot is thin and the pacing is slow ."),
    (1, "a charming and moving picture ."),
    (0, "it is not funny and never moving ."),
    (1, "the best film of the year ."),
    (0, "one long string of cliches ."),
    (1, "an intelligent , heartfelt drama ."),
    (0, "dull , lifeless and far too long ."),
    (1, "it never loses its nerve or its heart ."),
    (0, "a mess from start to finish ."),
    (1, "sweet and touching ."),
]


@pytest.fixture
def small_set(tmp_path: Path) -> Path:
    """A directory holding `small.tsv`, the SST-2 file layout (header, then label<TAB>text)."""
    (tmp_path / "small.tsv").write_text("label\tcontent\n" + "".join(f"{label}\t{text}\n" for label, text in SMALL_SET))
    return tmp_path


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`rnn-sentiment eval ARGS` in this process: exit code, stdout, stderr."""
    code = main(["eval", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_remote_eval_in_short_calls_scores_every_text_like_in_process(
        server: ServerProcess, small_set: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = small_set / "small.tsv"
    code, out, _ = _run(capsys, "--checkpoint", str(GRU), "--data", str(small_set), "--split", "small", "--json")
    assert code == 0
    local = json.loads(out)
    code, out, _ = _run(capsys, "--target", server.target, "--model", "sst2-gru", "--data", str(path),
                        "--texts-per-call", "4", "--json")
    assert code == 0
    remote = json.loads(out)
    assert local["count"] == remote["count"] == len(SMALL_SET)
    for key in ("checkpoint", "version", "sha256", "accuracy", "confusion", "labels", "subsets"):
        assert remote[key] == local[key], key
    assert local["checkpoint"] == "sst2-gru" and len(local["sha256"]) == 64
    assert local["data"] == remote["data"] == str(path)  # the directory and split name the same file
    assert remote["target"] == server.target and "target" not in local


def test_text_reports_name_the_model_its_hash_and_where_it_ran(
        server: ServerProcess, small_set: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = small_set / "small.tsv"
    code, out, _ = _run(capsys, "--checkpoint", str(GRU), "--data", str(path), "--json")
    info = json.loads(out)
    head = f"sst2-gru {info['version']} ({info['sha256'][:12]})"
    code, out, _ = _run(capsys, "--checkpoint", str(GRU), "--data", str(path))
    assert code == 0
    assert out.splitlines()[:2] == [f"{head} on {path}", f"examples   {len(SMALL_SET)}"]
    code, out, _ = _run(capsys, "--target", server.target, "--model", "sst2-gru", "--data", str(path),
                        "--texts-per-call", "8")
    assert code == 0
    assert out.splitlines()[:2] == [f"{head} at {server.target} on {path}", f"examples   {len(SMALL_SET)}"]


def test_bad_input_or_a_refusing_server_exits_2_with_one_error_line(
        server: ServerProcess, small_set: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = small_set / "small.tsv"
    bad_label = small_set / "bad.tsv"
    bad_label.write_text("label\tcontent\npositive\ta fine film .\n")
    missing = small_set / "missing.tsv"
    cases = {
        "remote, no such file": ["--target", server.target, "--data", str(missing)],
        "remote, a label that is not a number": ["--target", server.target, "--data", str(bad_label)],
        "remote, unknown model": ["--target", server.target, "--model", "no-such-model", "--data", str(path)],
        # the session's server takes at most 8 texts a call
        "remote, more texts per call than the server takes": ["--target", server.target, "--data", str(path),
                                                             "--texts-per-call", "9"],
        "local, no such file": ["--checkpoint", str(GRU), "--data", str(missing)],
        "local, a label that is not a number": ["--checkpoint", str(GRU), "--data", str(bad_label)],
        "local, not a checkpoint": ["--checkpoint", str(small_set), "--data", str(path)],
    }
    for case, args in cases.items():
        code, out, err = _run(capsys, *args)
        assert (code, out) == (2, ""), case
        assert err.startswith("error: ") and err.count("\n") == 1, (case, err)
    assert "no-such-model" in _run(capsys, *cases["remote, unknown model"])[2]
    assert "missing.tsv" in _run(capsys, *cases["local, no such file"])[2]


def test_eval_flags_and_their_documented_defaults() -> None:
    args = build_parser("eval").parse_args(["eval", "--target", "127.0.0.1:1"])
    assert (args.model, args.texts_per_call, args.data, args.split, args.json) == ("", 32, "../shared/data/sst2",
                                                                                   "dev", False)
    for both_or_neither in (["eval"], ["eval", "--checkpoint", "x", "--target", "y"]):
        with pytest.raises(SystemExit) as exit_info:
            build_parser("eval").parse_args(both_or_neither)
        assert exit_info.value.code == 2
