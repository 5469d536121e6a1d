from __future__ import annotations

import json
import re

from rnn_sentiment.client.render import trace_json, trace_table, traces_table
from rnn_sentiment.client.trace_layout import gate_series, unit_order
from tests.unit.client.trace_samples import TOKENS, sample_trace

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_table_has_every_asked_column_and_one_row_per_word():
    table = trace_table(sample_trace()).splitlines()
    header = table[0].split()
    for column in ("P(pos)", "change", "|h|", "|Δh|", "z", "r", "prefix", "IG", "occl", "memory"):
        assert column in header
    rows = table[2:2 + len(TOKENS)]
    assert [row.split()[0] for row in rows] == [*TOKENS[:-1], "zorblax?"]
    # The IG column of the last word holds its score, signed.
    ig = header.index("IG")  # header and rows both start with the token
    assert rows[-1].split()[ig] == "+0.400"
    assert "integrated gradients: 32 steps" in "\n".join(table)
    assert "memory: last 3 tokens carry 90% of the influence; ×0.50 per token (half-life 1.0 tokens)" in table
    assert table[-1].startswith("prediction: positive")
    assert not ANSI.search("\n".join(table))


def test_lstm_and_rnn_tables_show_their_own_cells():
    lstm = trace_table(sample_trace(cell="lstm")).splitlines()[0].split()
    assert {"i", "f", "o", "|c|"} <= set(lstm) and "z" not in lstm
    rnn = trace_table(sample_trace(cell="rnn", attributions=False, memory=False)).splitlines()[0].split()
    assert not {"z", "r", "i", "f", "o", "IG", "memory"} & set(rnn)


def test_colour_marks_each_word_and_keeps_the_layout():
    plain = trace_table(sample_trace())
    coloured = trace_table(sample_trace(), color=True)
    assert coloured.count("\x1b[38;2;") >= 2 * len(TOKENS)  # token and bar of every row
    lines = coloured.splitlines()
    words = next(line for line in lines if line.startswith("words: "))
    assert ANSI.sub("", words) == "words: " + " ".join(TOKENS)
    stripped = [ANSI.sub("", line) for line in lines if not line.startswith("words: ")]
    assert stripped == plain.splitlines()
    # The last word (IG +0.4, toward positive) is on the most saturated blue.
    assert "\x1b[48;2;5;113;176m" in words.split(" ")[-1]


def test_compare_prints_both_tables_and_both_memory_summaries():
    text = traces_table([sample_trace(), sample_trace(cell="rnn", model="sst2-rnn")])
    assert text.count("prediction: positive") == 2
    assert "sst2-gru: last 3 tokens" in text and "sst2-rnn: last 3 tokens" in text


def test_json_carries_the_new_fields_and_lists_compared_traces():
    data = json.loads(trace_json(sample_trace()))
    assert data["steps"][0]["cells"][0]["update_gate"] == 0.3
    assert [a["method"] for a in data["attributions"]] == ["prefix", "integrated_gradients", "occlusion"]
    assert data["memory_profile"]["recency"] == 0.9
    both = json.loads(trace_json([sample_trace(), sample_trace(model="other")]))
    assert [t["model"] for t in both] == ["sst2-gru", "other"]


def test_units_are_ordered_by_the_word_where_they_peak():
    trace = sample_trace(units=12)
    order = unit_order(trace)
    peaks = [max(range(len(TOKENS)), key=lambda t: abs(trace.steps[t].hidden_state[u])) for u in order]
    assert peaks == sorted(peaks) and sorted(order) == list(range(12))
    assert gate_series(trace) == {"update": [0.3 + 0.05 * t for t in range(len(TOKENS))],
                                  "reset": [0.6] * len(TOKENS)}
