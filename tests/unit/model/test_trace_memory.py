"""The memory profile is the Jacobian norm it claims to be, and it measures vanishing memory."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.autograd.functional import jacobian

from rnn_sentiment.model.attribution import memory_profile, summarise_memory
from rnn_sentiment.model.checkpoint import LoadedModel
from rnn_sentiment.model.inference import encode_texts
from rnn_sentiment.model.trace import TraceOptions, trace_text

TEXT = "the plot is boring but the acting is great and it 's fun ."


def as_loaded(network, vocab) -> LoadedModel:
    return LoadedModel(name="tiny", version="1", config=network.config, training=None, vocab=vocab,
                       network=network, sha256="", path=Path("."))


@pytest.mark.parametrize("settings", [
    dict(cell="rnn"), dict(cell="lstm"), dict(cell="gru", bidirectional=True, num_layers=2),
])
def test_memory_is_the_frobenius_norm_of_the_final_state_jacobian(settings, vocab, tiny_network):
    network = tiny_network(len(vocab), **settings).double()
    ids = torch.tensor(vocab.encode(TEXT.split()))
    x = network.embedding(ids).detach()  # [T, E]
    layers = list(range(network.config.num_layers))
    profile = memory_profile(network, ids, layers)
    directions = network.config.num_directions

    def final_states(inputs):  # [T, E] -> [L*D, H]
        final = network.encode_embedded(inputs.unsqueeze(0), torch.tensor([len(ids)])).final_state
        return (final[0] if isinstance(final, tuple) else final)[:, 0]

    full = jacobian(final_states, x)  # [L*D, H, T, E]
    for layer in layers:
        for direction in range(directions):
            expected = full[layer * directions + direction].pow(2).sum(dim=(0, 2)).sqrt()  # [T]
            torch.testing.assert_close(profile[(layer, direction)], expected, rtol=1e-9, atol=1e-12)


def test_trace_memory_combines_the_top_layers_directions(vocab, tiny_network):
    network = tiny_network(len(vocab), cell="gru", bidirectional=True, num_layers=2)
    loaded = as_loaded(network, vocab)
    encoded = encode_texts([TEXT], vocab, 128)[0]
    trace = trace_text(loaded, encoded, TraceOptions(memory=True))
    for step in trace.steps:
        forward, backward = step.cells
        assert step.memory == pytest.approx(math.hypot(forward.memory, backward.memory), rel=1e-5)
    # The forward direction's final state is read last, so its memory is largest at the end;
    # the backward one ends at the first token.
    forward_curve = [s.cells[0].memory for s in trace.steps]
    backward_curve = [s.cells[1].memory for s in trace.steps]
    assert forward_curve[-1] > forward_curve[0] and backward_curve[0] > backward_curve[-1]
    assert trace.memory is not None and trace.memory.last_tokens == math.ceil(len(trace.steps) / 3)


def _elman(tiny_network, vocab, recurrent: float):
    """An Elman RNN in its linear regime with W_hh = recurrent · I: memory decays by `recurrent`."""
    network = tiny_network(len(vocab), cell="rnn", embedding_dim=8, hidden_size=8)
    with torch.no_grad():
        network.rnn.weight_hh_l0.copy_(recurrent * torch.eye(8))
        network.rnn.weight_ih_l0.mul_(0.01)
        network.rnn.bias_ih_l0.zero_()
        network.rnn.bias_hh_l0.zero_()
    return as_loaded(network, vocab)


def test_a_contracting_recurrence_shows_vanishing_memory_and_recency(vocab, tiny_network):
    encoded = encode_texts([TEXT], vocab, 128)[0]
    forgetful = trace_text(_elman(tiny_network, vocab, 0.5), encoded, TraceOptions(memory=True)).memory
    retentive = trace_text(_elman(tiny_network, vocab, 0.98), encoded, TraceOptions(memory=True)).memory
    assert forgetful.decay_per_token == pytest.approx(0.5, rel=0.02)
    assert retentive.decay_per_token == pytest.approx(0.98, rel=0.02)
    assert forgetful.recency > 0.95 and retentive.recency < 0.45


def test_summary_of_known_curves():
    geometric = [0.5 ** (9 - t) for t in range(10)]
    summary = summarise_memory(geometric)
    assert summary.decay_per_token == pytest.approx(0.5)
    assert summary.last_tokens == 4
    assert summary.recency == pytest.approx(sum(geometric[-4:]) / sum(geometric))
    flat = summarise_memory([2.0] * 9)
    assert flat.recency == pytest.approx(1 / 3) and flat.decay_per_token == pytest.approx(1.0)
    single = summarise_memory([0.7])
    assert (single.recency, single.decay_per_token, single.last_tokens) == (1.0, 1.0, 1)
