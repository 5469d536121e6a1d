"""`rnn-sentiment predict` in a pipeline: stdin in, JSON lines or CSV out, exit codes, against a real server.

The session server allows 8 texts per request, so 5,000 piped lines take hundreds of chunks.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

from tests.support import REPO_ROOT, ServerProcess, free_port

POSITIVE = "a warm , funny and beautifully acted film"
NEGATIVE = "a dull , lifeless and boring movie"


def _predict(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rnn_sentiment.cli", "predict", *args], input=stdin,
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, env={**os.environ, **(env or {})})


def test_five_thousand_piped_lines_come_back_in_order(server: ServerProcess) -> None:
    texts = [f"{POSITIVE if i % 3 else NEGATIVE} number {i}" for i in range(5000)]
    result = _predict("--target", server.target, "--format", "jsonl", stdin="\n".join(texts) + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bar: stderr is not a terminal
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["text"] for row in rows] == texts
    assert {row["label"] for i, row in enumerate(rows) if i % 3} == {"positive"}
    assert {row["label"] for i, row in enumerate(rows) if not i % 3} == {"negative"}


def test_json_lines_in_keep_their_fields_and_csv_out_has_a_header(server: ServerProcess) -> None:
    lines = [json.dumps({"id": 7, "text": POSITIVE}), "", json.dumps({"id": 8, "text": NEGATIVE})]
    as_jsonl = _predict("--target", server.target, "--format", "jsonl", stdin="\n".join(lines))
    assert as_jsonl.returncode == 0, as_jsonl.stderr
    assert [(r["id"], r["label"]) for r in map(json.loads, as_jsonl.stdout.splitlines())] == [
        (7, "positive"), (8, "negative")]
    # RNN_SENTIMENT_TARGET stands in for --target.
    as_csv = _predict("--format", "csv", "--batch-size", "1", stdin=f"{POSITIVE}\n\n{NEGATIVE}\n",
                      env={"RNN_SENTIMENT_TARGET": server.target})
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(r["text"], r["label"]) for r in rows] == [(POSITIVE, "positive"), (NEGATIVE, "negative")]
    assert len(rows[0]["probabilities"].split()) == 2


def test_exit_codes_say_whose_fault_it_was(server: ServerProcess) -> None:
    not_json = _predict("--target", server.target, "--input", "jsonl", stdin=f'{{"text": "{POSITIVE}"}}\nnot json\n')
    assert not_json.returncode == 2 and "stdin line 2: not JSON" in not_json.stderr
    assert "Traceback" not in not_json.stderr
    no_text = _predict("--target", server.target, stdin='{"review": "x"}\n')
    assert no_text.returncode == 2 and '"text"' in no_text.stderr
    assert _predict("--target", server.target, "--batch-size", "0", stdin="x\n").returncode == 2
    too_long = _predict("--target", server.target, stdin=POSITIVE + "\n" + "x" * 2000 + "\n")
    assert too_long.returncode == 1 and "INVALID_ARGUMENT" in too_long.stderr, too_long.stderr
    unknown_model = _predict("--target", server.target, "--model", "no-such-model", POSITIVE)
    assert unknown_model.returncode == 1 and "NOT_FOUND" in unknown_model.stderr
    nobody = _predict("--target", f"127.0.0.1:{free_port()}", "--timeout", "2", "--no-retry", POSITIVE)
    assert nobody.returncode == 1 and "Traceback" not in nobody.stderr


def test_help_shows_examples_and_exit_codes() -> None:
    result = subprocess.run([sys.executable, "-m", "rnn_sentiment.cli", "predict", "--help"],
                            capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert result.returncode == 0
    assert "exit codes:" in result.stdout and "rnn-sentiment predict --format csv" in result.stdout


def test_a_reader_that_stops_early_is_not_an_error(server: ServerProcess) -> None:
    pipeline = subprocess.run(
        f"yes '{POSITIVE}' | head -n 3000 | {sys.executable} -m rnn_sentiment.cli predict --target {server.target}"
        " | head -n 2", shell=True, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
        executable="/bin/bash", env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert pipeline.stdout.count("positive") == 2
    assert "Traceback" not in pipeline.stderr and "BrokenPipe" not in pipeline.stderr, pipeline.stderr
