"""The hand-written backward pass through the replayed cells equals autograd's gradient × input."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

import rnn_sentiment.model
from rnn_sentiment.model.attribution import gradient_x_input
from rnn_sentiment.model.cell_replay import replay_cells
from rnn_sentiment.model.checkpoint import LoadedModel, load_checkpoint
from rnn_sentiment.model.inference import encode_texts
from rnn_sentiment.model.replay_backward import replayed_gradient_x_input
from rnn_sentiment.model.trace import TraceOptions, trace_text

TEXT = "the movie is not good but the acting is great and it 's fun ."
SHIPPED_GRU = Path(rnn_sentiment.model.__file__).resolve().parent / "checkpoints" / "sst2-gru"
ARCHITECTURES = [
    dict(cell=cell, num_layers=layers, bidirectional=bidirectional, pooling=pooling)
    for cell, layers, bidirectional, pooling in itertools.product(
        ("rnn", "gru", "lstm"), (1, 2), (False, True), ("last", "mean", "max", "attention"))
]


def sharp_network(tiny_network, vocab_size, **settings):
    """A tiny network with doubled weights: far from linear, so a wrong derivative shows."""
    network = tiny_network(vocab_size, hidden_size=8, **settings)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.mul_(2.0)
    return network


def as_loaded(network, vocab) -> LoadedModel:
    return LoadedModel(name="tiny", version="1", config=network.config, training=None, vocab=vocab,
                       network=network, sha256="", path=Path("."))


def _name(settings: dict) -> str:
    direction = "bi" if settings["bidirectional"] else "uni"
    return f"{settings['cell']}-{settings['num_layers']}-{direction}-{settings['pooling']}"


@pytest.mark.parametrize("settings", ARCHITECTURES, ids=_name)
def test_equals_autograd_in_float32(settings, vocab, tiny_network):
    network = sharp_network(tiny_network, len(vocab), **settings)
    ids = torch.tensor(vocab.encode(TEXT.split()))
    for target in (0, 1):
        expected = gradient_x_input(network, ids, target)
        assert expected.abs().max() > 1e-3  # scores of zero would make agreement meaningless
        torch.testing.assert_close(replayed_gradient_x_input(network, ids, target), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("settings", [dict(cell="rnn"), dict(cell="gru", bidirectional=True, num_layers=2),
                                      dict(cell="lstm", num_layers=2, pooling="max")], ids=str)
def test_equals_autograd_to_rounding_in_float64(settings, vocab, tiny_network):
    # In double precision any mistake in an equation shows far above 1e-10; float32 could hide a small one.
    network = sharp_network(tiny_network, len(vocab), **settings).double()
    ids = torch.tensor(vocab.encode(TEXT.split()))
    torch.testing.assert_close(replayed_gradient_x_input(network, ids, 1), gradient_x_input(network, ids, 1),
                               rtol=0, atol=1e-10)


@pytest.mark.parametrize("settings", [dict(cell="gru"), dict(cell="lstm", bidirectional=True, num_layers=2)], ids=str)
def test_trace_reports_the_same_scores_as_autograd(settings, vocab, tiny_network):
    # The trace hands its own replays (made from inference-mode outputs) to the backward pass.
    network = sharp_network(tiny_network, len(vocab), **settings)
    encoded = encode_texts([TEXT], vocab, 128)[0]
    trace = trace_text(as_loaded(network, vocab), encoded, TraceOptions(attributions=("gradient_x_input",)))
    target = network.config.labels.index(trace.prediction.label)
    expected = gradient_x_input(network, torch.tensor(encoded.ids), target)
    assert trace.attributions[0].scores == pytest.approx(expected.tolist(), abs=1e-5)


def test_replays_missing_a_layer_are_refused(vocab, tiny_network):
    network = tiny_network(len(vocab), num_layers=2)
    ids = torch.tensor(vocab.encode(TEXT.split()))
    top_only = [r for r in replay_cells(network, ids) if r.layer == 1]
    with pytest.raises(ValueError, match="every layer"):
        replayed_gradient_x_input(network, ids, 1, top_only)


def test_equals_autograd_on_the_shipped_gru():
    if not (SHIPPED_GRU / "config.json").is_file():
        pytest.skip(f"{SHIPPED_GRU} is not present")
    loaded = load_checkpoint(SHIPPED_GRU)
    encoded = encode_texts(["it 's not a bad film at all , but the plot is thin and the acting is wooden ."],
                           loaded.vocab, loaded.config.max_tokens)[0]
    ids = torch.tensor(encoded.ids)
    for target in (0, 1):
        expected = gradient_x_input(loaded.network, ids, target)
        assert expected.abs().max() > 1e-2
        torch.testing.assert_close(replayed_gradient_x_input(loaded.network, ids, target), expected,
                                   rtol=0, atol=1e-5)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_weights_changed_after_a_call_are_used(cell, vocab, tiny_network):
    # Nothing derived from the weights (a transposed copy, a per-layer module) may outlive a call.
    network = sharp_network(tiny_network, len(vocab), cell=cell, num_layers=2)
    ids = torch.tensor(vocab.encode(TEXT.split()))
    before = replayed_gradient_x_input(network, ids, 1)
    with torch.no_grad():  # in place, as load_state_dict updates weights
        network.rnn.weight_hh_l0.mul_(-1.5)
        network.rnn.weight_hh_l1.mul_(0.5)
    expected = gradient_x_input(network, ids, 1)
    assert not torch.allclose(before, expected, atol=1e-3)
    torch.testing.assert_close(replayed_gradient_x_input(network, ids, 1), expected, rtol=0, atol=1e-5)
