"""A served model's token limit is the server's setting: it truncates as configured, says so in
ModelInfo and Prediction, and the CLI tells the user on stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from rnn_sentiment.client import SentimentClient
from tests.support import ServerProcess

# 40 tokens, every one a word the models know, none repeated inside a kept part.
WORDS = ("the film is a warm , funny and beautifully acted story that never loses its nerve or its heart "
         "but the plot is thin and the pacing is slow ; still , it is a charming and moving picture .").split()
TEXT = " ".join(WORDS)
GRU, RNN = "sst2-gru", "sst2-rnn"


@pytest.fixture(scope="module")
def limited() -> Iterator[ServerProcess]:
    """16 tokens, head_tail, for every model but sst2-rnn, which reads its first 8."""
    process = ServerProcess(extra_args=["--max-tokens", "16", "--truncation", "head_tail",
                                        "--model-token-limits", f"{RNN}=8:head"])
    process.start()
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture
def client(limited: ServerProcess) -> Iterator[SentimentClient]:
    with SentimentClient(limited.target, timeout=60) as c:
        yield c


def test_model_info_reports_the_configured_limit_and_strategy(client: SentimentClient) -> None:
    gru, rnn = client.model_info(GRU), client.model_info(RNN)
    assert (gru.max_tokens, gru.truncation, gru.truncation_head_tokens) == (16, "head_tail", 4)
    assert (rnn.max_tokens, rnn.truncation, rnn.truncation_head_tokens) == (8, "head", 8)


def test_head_tail_reads_the_first_and_last_tokens(client: SentimentClient) -> None:
    assert len(WORDS) == 40
    (cut,) = client.predict(TEXT, model=GRU).predictions
    assert cut.truncated and (cut.token_count, cut.text_token_count) == (16, 40)
    # What the model read is exactly the first 4 and the last 12 tokens.
    (kept,) = client.predict(" ".join(WORDS[:4] + WORDS[-12:]), model=GRU).predictions
    assert not kept.truncated and cut.probabilities == kept.probabilities
    trace = client.trace(TEXT, model=GRU)
    assert [step.token for step in trace.steps] == WORDS[:4] + WORDS[-12:]


def test_a_per_model_override_keeps_the_head(client: SentimentClient) -> None:
    (cut,) = client.predict(TEXT, model=RNN).predictions
    (kept,) = client.predict(" ".join(WORDS[:8]), model=RNN).predictions
    assert cut.truncated and (cut.token_count, cut.text_token_count) == (8, 40)
    assert cut.probabilities == kept.probabilities


def _cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "rnn_sentiment.cli", *args[:1], "--target", server.target, *args[1:]]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_predict_says_on_stderr_what_it_read_and_dropped(limited: ServerProcess) -> None:
    result = _cli(limited, "predict", "--model", GRU, TEXT, "a fun film")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"note: text 1 has 40 tokens; {GRU} read 16 (the first 4 and the last 12) and dropped the middle 24 "
        "(its --max-tokens limit; see docs/models.md#long-texts)"
    ]
    # stdout stays one line per text, for pipelines.
    assert [line.split(maxsplit=2)[2] for line in result.stdout.splitlines()] == [TEXT, "a fun film"]
    head = _cli(limited, "predict", "--model", RNN, TEXT)
    assert head.returncode == 0, head.stderr
    assert "the text has 40 tokens; sst2-rnn read 8 (the first 8) and dropped the last 32" in head.stderr


def test_json_output_carries_the_fields_and_no_note(limited: ServerProcess) -> None:
    result = _cli(limited, "predict", "--json", "--model", GRU, TEXT)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    (prediction,) = json.loads(result.stdout)["predictions"]
    assert prediction["truncated"] and prediction["text_token_count"] == 40 and prediction["token_count"] == 16


def test_trace_table_says_it_too(limited: ServerProcess) -> None:
    result = _cli(limited, "trace", "--model", GRU, "--color", "never", "--attributions", "prefix", TEXT)
    assert result.returncode == 0, result.stderr
    assert f"the text has 40 tokens; {GRU} read 16 (the first 4 and the last 12)" in result.stderr
    assert result.stdout.splitlines()[-1].endswith(", truncated")
