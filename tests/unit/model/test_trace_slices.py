"""A trace cut into slices computes the same numbers as in one go, for every cell, depth, direction
and pooling; small budgets really cut (node groups, unit rows and stretches of tokens); and no
torch mode stays switched on between slices (other work runs on the thread there)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from rnn_sentiment.model.attribution import (
    UNSLICED, SliceShape, integrated_gradients_slices, memory_profile_slices, occlusion_slices,
    recurrent_macs_per_token, run_slices, slice_shape,
)
from rnn_sentiment.model.checkpoint import LoadedModel
from rnn_sentiment.model.inference import encode_texts
from rnn_sentiment.model.trace import ATTRIBUTION_METHODS, TraceOptions, TraceResult, trace_slices, trace_text

TEXT = "the movie is not good but the acting is great and it 's fun ."
CONFIGS = [
    dict(cell="rnn"), dict(cell="gru"), dict(cell="lstm"), dict(cell="gru", bidirectional=True),
    dict(cell="lstm", pooling="attention", num_layers=2), dict(cell="rnn", pooling="mean", num_layers=2),
    dict(cell="gru", pooling="max"), dict(cell="lstm", bidirectional=True, pooling="mean"),
]
EVERYTHING = TraceOptions(attributions=ATTRIBUTION_METHODS, integrated_gradients_steps=12, all_layers=True,
                          memory=True)


def as_loaded(network, vocab) -> LoadedModel:
    return LoadedModel(name="tiny", version="1", config=network.config, training=None, vocab=vocab,
                       network=network, sha256="", path=Path("."))


def run_counting(slices) -> tuple[TraceResult, int]:
    """The result and the number of slices it took; checks the thread's torch modes between slices."""
    count = 0
    while True:
        try:
            next(slices)
        except StopIteration as done:
            return done.value, count + 1
        count += 1
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


def assert_same_trace(sliced: TraceResult, whole: TraceResult) -> None:
    assert sliced.prediction == whole.prediction
    for mine, theirs in zip(sliced.steps, whole.steps, strict=True):
        assert mine.memory == pytest.approx(theirs.memory, rel=1e-5, abs=1e-7)
        assert mine.probabilities == pytest.approx(theirs.probabilities, abs=1e-6)
        for cell, other in zip(mine.cells, theirs.cells, strict=True):
            assert cell.memory == pytest.approx(other.memory, rel=1e-5, abs=1e-7)
    assert sliced.memory is not None and whole.memory is not None
    assert dataclasses.astuple(sliced.memory) == pytest.approx(dataclasses.astuple(whole.memory), rel=1e-5)
    for mine, theirs in zip(sliced.attributions, whole.attributions, strict=True):
        assert mine.method == theirs.method
        assert mine.scores == pytest.approx(theirs.scores, rel=1e-5, abs=1e-6), mine.method
        if theirs.logit_difference is not None:
            assert mine.logit_difference == pytest.approx(theirs.logit_difference, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("settings", CONFIGS)
@pytest.mark.parametrize("budget", [2_000, 20_000])
def test_a_sliced_trace_equals_the_trace_in_one_go(settings, budget, vocab, tiny_network):
    loaded = as_loaded(tiny_network(len(vocab), hidden_size=8, **settings), vocab)
    encoded = encode_texts([TEXT], vocab, 128)[0]
    whole = trace_text(loaded, encoded, EVERYTHING)
    sliced, count = run_counting(trace_slices(loaded, encoded, EVERYTHING, slice_macs=budget))
    assert_same_trace(sliced, whole)
    _, unsliced_count = run_counting(trace_slices(loaded, encoded, EVERYTHING, slice_macs=UNSLICED))
    assert count > unsliced_count  # the budget did cut the work


@pytest.mark.parametrize("settings", [dict(cell="rnn"), dict(cell="gru", num_layers=2), dict(cell="lstm")])
def test_each_sliced_attribution_equals_its_one_pass_and_cuts_the_text_in_time(settings, vocab, tiny_network):
    network = tiny_network(len(vocab), hidden_size=8, **settings)
    ids = torch.tensor(vocab.encode(TEXT.split()))
    steps = len(ids)
    # Every node in one group, two tokens a slice: the text cut in time.
    budget = 12 * 2 * 3 * recurrent_macs_per_token(network)
    shape = slice_shape(network, 12, steps, budget, backward=True)
    assert shape.rows == 12 and shape.tokens < steps

    whole = run_slices(integrated_gradients_slices(network, ids, 1, 12))
    sliced, count = run_counting(integrated_gradients_slices(network, ids, 1, 12, slice_macs=budget))
    torch.testing.assert_close(sliced.scores, whole.scores, rtol=1e-5, atol=1e-6)
    assert sliced.logit_difference == pytest.approx(whole.logit_difference, rel=1e-5, abs=1e-6)
    assert count >= 2 * math.ceil(steps / shape.tokens)  # forward and back, stretch by stretch

    layers = list(range(network.config.num_layers))
    whole_memory = run_slices(memory_profile_slices(network, ids, layers))
    sliced_memory, _ = run_counting(memory_profile_slices(network, ids, layers, slice_macs=budget))
    for key, values in whole_memory.items():
        torch.testing.assert_close(sliced_memory[key], values, rtol=1e-5, atol=1e-7)

    whole_occlusion = run_slices(occlusion_slices(network, ids, 1))
    sliced_occlusion, _ = run_counting(occlusion_slices(network, ids, 1, slice_macs=budget))
    torch.testing.assert_close(sliced_occlusion, whole_occlusion, rtol=1e-5, atol=1e-6)


def test_slices_take_rows_first_then_tokens_and_never_cut_a_bidirectional_text(vocab, tiny_network):
    network = tiny_network(len(vocab), hidden_size=8, cell="gru")
    per_token = recurrent_macs_per_token(network)
    assert per_token == 3 * 8 * (8 + 8)  # gates × hidden × (embedding + hidden)
    # As many rows as one token's step allows; small batches are billed as 16 rows.
    assert slice_shape(network, 100, 20, slice_macs=5 * per_token, backward=False) == SliceShape(rows=5, tokens=1)
    assert slice_shape(network, 100, 20, slice_macs=320 * per_token, backward=False) == SliceShape(rows=100, tokens=3)
    assert slice_shape(network, 3, 20, slice_macs=320 * per_token, backward=False) == SliceShape(rows=3, tokens=20)
    assert slice_shape(network, 100, 20, slice_macs=1, backward=True) == SliceShape(rows=1, tokens=1)
    both = tiny_network(len(vocab), hidden_size=8, cell="gru", bidirectional=True)
    assert slice_shape(both, 100, 20, slice_macs=1, backward=True).tokens == 20
