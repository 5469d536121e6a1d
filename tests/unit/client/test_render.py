from __future__ import annotations

import json

from rnn_sentiment.client.render import trace_json, trace_table
from rnn_sentiment.client.results import Prediction, TraceResult, TraceStep


def _trace() -> TraceResult:
    steps = (
        TraceStep("a", True, (0.1, 0.2), 0.22, (0.45, 0.55), 0.05),
        TraceStep("zorblax", False, (0.3, -0.2), 0.36, (0.2, 0.8), 0.25),
    )
    prediction = Prediction("positive", 0.8, (0.2, 0.8), 2, 1, False)
    return TraceResult(prediction, steps, ("negative", "positive"), "m", "1")


def test_table_has_one_row_per_token_and_marks_unknown_words() -> None:
    table = trace_table(_trace()).splitlines()
    rows = [line for line in table if line.startswith(("a ", "zorblax"))]
    assert len(rows) == 2
    assert rows[1].startswith("zorblax?")
    assert "0.800" in rows[1] and "+0.250" in rows[1]
    assert "prediction: positive (0.800) by m@1; 2 tokens, 1 unknown" in table[-1]


def test_json_round_trips() -> None:
    data = json.loads(trace_json(_trace()))
    assert [s["token"] for s in data["steps"]] == ["a", "zorblax"]
    assert data["labels"] == ["negative", "positive"]
