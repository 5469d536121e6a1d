"""A trace fed by ONNX Runtime's recurrence (Predictor.step_states) is the torch trace."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from rnn_sentiment.model.backends import make_predictor
from rnn_sentiment.model.checkpoint import LoadedModel, load_checkpoint
from rnn_sentiment.model.inference import encode_texts
from rnn_sentiment.model.trace import StepStates, TraceOptions, TraceResult, trace_text

pytest.importorskip("onnxruntime", reason="the server extra installs onnxruntime")

SHIPPED_GRU = Path(__file__).resolve().parents[3] / "model" / "checkpoints" / "sst2-gru"
TEXT = "the movie is not good but the acting is great and it 's fun ."
TOLERANCE = 1e-5
EVERYTHING = TraceOptions(attributions=("prefix", "gradient_x_input"), all_layers=True)
UNIDIRECTIONAL = [
    dict(cell=cell, num_layers=layers, pooling=pooling)
    for cell, layers, pooling in itertools.product(("rnn", "gru", "lstm"), (1, 2), ("last", "mean", "max", "attention"))
]


def _loaded(network, vocab) -> LoadedModel:
    return LoadedModel(name="tiny", version="1", config=network.config, training=None, vocab=vocab,
                       network=network, sha256="", path=Path("."))


def _flat(trace: TraceResult) -> dict[str, list[float]]:
    """Every number a trace reports, by what it is."""
    values: dict[str, list[float]] = {
        "probabilities": [p for s in trace.steps for p in s.probabilities],
        "delta_positive": [s.delta_positive for s in trace.steps],
        "hidden": [h for s in trace.steps for h in s.hidden],
        "norms": [v for s in trace.steps for v in (s.hidden_norm, s.change_norm)],
        "attention": [s.attention for s in trace.steps if s.attention is not None],
        "cells": [v for s in trace.steps for c in s.cells
                  for v in (c.hidden_norm, c.change_norm, *c.gates.values(),
                            *([c.cell_norm] if c.cell_norm is not None else []))],
        "baseline": list(trace.baseline),
    }
    for attribution in trace.attributions:
        values[attribution.method] = attribution.scores
    return values


def _assert_same_trace(actual: TraceResult, expected: TraceResult) -> None:
    assert actual.prediction.label == expected.prediction.label
    assert [s.token for s in actual.steps] == [s.token for s in expected.steps]
    assert [[(c.layer, c.direction) for c in s.cells] for s in actual.steps] == \
        [[(c.layer, c.direction) for c in s.cells] for s in expected.steps]
    mine, theirs = _flat(actual), _flat(expected)
    assert mine.keys() == theirs.keys()
    for name in theirs:
        assert len(mine[name]) == len(theirs[name]), name
        worst = max((abs(a - b) for a, b in zip(mine[name], theirs[name])), default=0.0)
        assert worst <= TOLERANCE, f"{name} differs by {worst:.2e}"


@pytest.mark.parametrize("architecture", UNIDIRECTIONAL, ids=lambda a: "-".join(str(v) for v in a.values()))
def test_onnx_fed_trace_equals_the_torch_trace(vocab, tiny_network, architecture):
    # Doubled weights: far from linear, so states that were subtly wrong would show downstream.
    network = tiny_network(len(vocab), seed=5, hidden_size=8, temperature=1.3, **architecture)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.mul_(2.0)
    loaded = _loaded(network, vocab)
    predictor = make_predictor(loaded, "onnxruntime", threads=1)
    (encoded,) = encode_texts([TEXT], vocab, 128)
    states = predictor.step_states(encoded)
    assert states is not None and len(states.layers) == architecture["num_layers"]
    expected = trace_text(loaded, encoded, EVERYTHING)
    assert max(abs(s) for s in expected.attributions[1].scores) > 1e-3  # zero scores would agree trivially
    actual = trace_text(loaded, encoded, EVERYTHING, states)
    _assert_same_trace(actual, expected)
    # The last step is Predict's answer on the same session for this text, exactly.
    assert tuple(actual.steps[-1].probabilities) == tuple(predictor([encoded])[0].probabilities)
    assert actual.prediction == predictor([encoded])[0]


def test_onnx_fed_trace_of_the_shipped_gru():
    loaded = load_checkpoint(SHIPPED_GRU)
    predictor = make_predictor(loaded, "onnxruntime", threads=1)
    (encoded,) = encode_texts([TEXT], loaded.vocab, loaded.config.max_tokens)
    expected = trace_text(loaded, encoded, EVERYTHING)
    actual = trace_text(loaded, encoded, EVERYTHING, predictor.step_states(encoded))
    _assert_same_trace(actual, expected)


def test_bidirectional_and_torch_only_predictors_leave_the_trace_to_torch(vocab, tiny_network):
    (encoded,) = encode_texts([TEXT], vocab, 128)
    bidirectional = _loaded(tiny_network(len(vocab), bidirectional=True), vocab)
    assert make_predictor(bidirectional, "onnxruntime", threads=1).step_states(encoded) is None
    unidirectional = _loaded(tiny_network(len(vocab)), vocab)
    assert make_predictor(unidirectional, "torch", threads=1).step_states(encoded) is None


def test_states_that_do_not_fit_are_refused(vocab, tiny_network):
    loaded = _loaded(tiny_network(len(vocab), num_layers=2), vocab)
    (encoded,) = encode_texts([TEXT], vocab, 128)
    states = make_predictor(loaded, "onnxruntime", threads=1).step_states(encoded)
    assert states is not None
    (shorter,) = encode_texts(["the movie"], vocab, 128)
    with pytest.raises(ValueError, match="layer states of shape"):
        trace_text(loaded, shorter, states=states)  # another text's states
    with pytest.raises(ValueError, match="layer states of shape"):
        trace_text(loaded, encoded, states=StepStates(states.layers[:1], states.probabilities))  # a layer missing
    bidirectional = _loaded(tiny_network(len(vocab), bidirectional=True), vocab)
    with pytest.raises(ValueError, match="unidirectional"):
        trace_text(bidirectional, encoded, states=states)


def test_a_wrong_state_would_show(vocab, tiny_network):
    # The comparison above has teeth: nudge one bottom-layer state and the trace moves past tolerance.
    loaded = _loaded(tiny_network(len(vocab), num_layers=2, hidden_size=8), vocab)
    (encoded,) = encode_texts([TEXT], vocab, 128)
    states = make_predictor(loaded, "onnxruntime", threads=1).step_states(encoded)
    assert states is not None
    bottom = states.layers[0].clone()
    bottom[0, 3, 0] += 1e-2
    nudged = StepStates([bottom, *states.layers[1:]], states.probabilities)
    with pytest.raises(AssertionError, match="differs"):
        _assert_same_trace(trace_text(loaded, encoded, EVERYTHING, nudged), trace_text(loaded, encoded, EVERYTHING))


def test_without_hidden_states_only_the_state_lists_are_left_out(vocab, tiny_network):
    loaded = _loaded(tiny_network(len(vocab), cell="lstm", num_layers=2), vocab)
    (encoded,) = encode_texts([TEXT], vocab, 128)
    full = trace_text(loaded, encoded, EVERYTHING)
    lean = trace_text(loaded, encoded, TraceOptions(attributions=EVERYTHING.attributions, all_layers=True,
                                                    hidden_states=False))
    assert all(step.hidden == [] for step in lean.steps) and all(len(step.hidden) == 6 for step in full.steps)
    for step in (*full.steps, *lean.steps):
        step.hidden = []
    assert lean == full
