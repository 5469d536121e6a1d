"""`rnn-sentiment` client commands run in this process against the session's server: exit codes,
error lines, and what `info`, `health` and `trace` print."""

from __future__ import annotations

from pathlib import Path

import pytest

from rnn_sentiment.cli.main import main
from rnn_sentiment.client import SentimentClient
from tests.support import ServerProcess


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_refused_call_exits_1_with_its_status_and_reason_on_one_line(
        server: ServerProcess, capsys: pytest.CaptureFixture[str]) -> None:
    # the session's server takes at most 1,000 characters a text; the reason already names the field
    code, out, err = _run(capsys, "predict", "--target", server.target, "x" * 1001)
    assert (code, out) == (1, "")
    assert err == "error: INVALID_ARGUMENT: texts[0]: has 1001 characters; the limit is 1000\n"


def test_unusable_client_settings_exit_2_and_name_the_setting(
        server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "token"
    code, out, err = _run(capsys, "predict", "--target", server.target, "--token-file", str(missing), "good")
    assert (code, out, err) == (2, "", f"error: --token-file {str(missing)!r}: No such file or directory\n")
    code, out, err = _run(capsys, "info", "--target", server.target, "--tls-client-cert", str(missing))
    assert (code, out) == (2, "") and err.startswith("error: client_cert and client_key go together")


def test_info_prints_one_line_per_model_marking_only_the_default(
        server: ServerProcess, client: SentimentClient, capsys: pytest.CaptureFixture[str]) -> None:
    served = client.list_models()
    code, out, _ = _run(capsys, "info", "--target", server.target, "--all")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == len(served)
    for line, model in zip(lines, served, strict=True):
        a = model.architecture
        assert line.startswith(f"{model.name}@{model.version}{' (default)' if model.is_default else ''}: "
                               f"{'bi' if a.bidirectional else ''}{a.cell_type} {a.num_layers}x{a.hidden_size}, ")
        assert ("n-gram buckets" in line) == bool(a.subword_buckets)
        assert f"max tokens {model.max_tokens} ({model.truncation})" in line
        assert line.endswith(f"; sha256 {model.checkpoint_sha256[:12]}")
    other = next(m for m in served if not m.is_default)
    code, out, _ = _run(capsys, "info", "--target", server.target, "--model", other.name)
    assert code == 0 and out.startswith(f"{other.name}@{other.version}: ") and out.count("\n") == 1


def test_health_of_one_service_exits_0_when_serving_and_1_when_unknown(
        server: ServerProcess, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "health", server.target, "--service", "rnn_sentiment.v1.SentimentService")
    assert (code, out) == (0, "SERVING\n")
    code, out, err = _run(capsys, "health", server.target, "--service", "no.such.Service")
    assert (code, out, err) == (1, "", "NOT_FOUND: unknown service 'no.such.Service'\n")


def test_trace_without_attributions_and_to_a_file(
        server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, table, _ = _run(capsys, "trace", "--target", server.target, "--attributions", "none", "good film")
    assert code == 0 and table.splitlines()[-1].startswith("prediction: positive")
    assert "IG" not in table.splitlines()[0].split()  # no attribution columns
    written = tmp_path / "trace.txt"
    code, out, err = _run(capsys, "trace", "--target", server.target, "--attributions", "none",
                          "--output", str(written), "good film")
    assert (code, out, err) == (0, "", f"wrote {written}\n")
    assert written.read_text(encoding="utf-8") == table
