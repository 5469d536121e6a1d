"""The step-by-step cell replay reproduces the fused module, and its gates mean what they say."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rnn_sentiment.model.cell_replay import replay_cells
from rnn_sentiment.model.checkpoint import LoadedModel
from rnn_sentiment.model.inference import encode_texts, predict_encoded
from rnn_sentiment.model.trace import TraceOptions, trace_text

TEXT = "the plot is boring but the acting is great and it 's fun ."


def as_loaded(network, vocab) -> LoadedModel:
    return LoadedModel(name="tiny", version="1", config=network.config, training=None, vocab=vocab,
                       network=network, sha256="", path=Path("."))


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_replay_reproduces_the_modules_states(cell, bidirectional, num_layers, vocab, tiny_network):
    network = tiny_network(len(vocab), cell=cell, bidirectional=bidirectional, num_layers=num_layers)
    ids = torch.tensor(vocab.encode(TEXT.split()))  # [T]
    replays = replay_cells(network, ids)
    directions = 2 if bidirectional else 1
    assert [(r.layer, r.direction) for r in replays] == [
        (layer, direction) for layer in range(num_layers) for direction in ("forward", "backward")[:directions]
    ]
    with torch.no_grad():
        encoded = network.encode(ids.unsqueeze(0), torch.tensor([len(ids)]))
    top = torch.cat([r.hidden for r in replays[-directions:]], dim=-1)  # [T, H*D]
    torch.testing.assert_close(top, encoded.outputs[0], atol=1e-5, rtol=0)
    h_n, c_n = encoded.final_state if cell == "lstm" else (encoded.final_state, None)
    for index, replay in enumerate(replays):
        last = -1 if replay.direction == "forward" else 0  # the backward direction ends at token 0
        torch.testing.assert_close(replay.hidden[last], h_n[index, 0], atol=1e-5, rtol=0)
        if c_n is not None:
            torch.testing.assert_close(replay.cell[last], c_n[index, 0], atol=1e-5, rtol=0)
        for values in replay.gates.values():
            assert values.shape == replay.hidden.shape and bool(((values > 0) & (values < 1)).all())
        # The gates, re-run from x_t and h_before_t with the module's weights, rebuild its h_t.
        torch.testing.assert_close(replay.reconstructed(), replay.hidden, atol=1e-5, rtol=0)
        assert set(replay.gates) == {"rnn": set(), "gru": {"update", "reset"},
                                     "lstm": {"input", "forget", "output"}}[cell]


def test_a_wrong_gate_order_would_not_rebuild_the_states(vocab, tiny_network):
    # The check above has teeth: swap GRU's r and z weight blocks and the rebuild fails.
    network = tiny_network(len(vocab), cell="gru", hidden_size=6)
    ids = torch.tensor(vocab.encode(TEXT.split()))
    (replay,) = replay_cells(network, ids)
    replay.gates["update"], replay.gates["reset"] = replay.gates["reset"], replay.gates["update"]
    assert not torch.allclose(replay.reconstructed(), replay.hidden, atol=1e-3)


def _set_gate_bias(network, gate: int, value: float) -> None:
    """Push one gate's pre-activation (chunk `gate` of the stacked weights) to `value`."""
    size = network.config.hidden_size
    with torch.no_grad():
        network.rnn.bias_ih_l0[gate * size:(gate + 1) * size] = value


def _trace(network, vocab, **options):
    loaded = as_loaded(network, vocab)
    encoded = encode_texts([TEXT], vocab, 128)[0]
    return trace_text(loaded, encoded, TraceOptions(**options)), predict_encoded(loaded, [encoded])[0]


def test_gru_update_gate_near_one_keeps_the_state(vocab, tiny_network):
    network = tiny_network(len(vocab), cell="gru")
    _set_gate_bias(network, 1, 30.0)  # z: PyTorch stacks r, z, n
    trace, _ = _trace(network, vocab)
    assert all(step.cells[0].gates["update"] > 0.999 for step in trace.steps)
    assert all(step.change_norm < 1e-6 for step in trace.steps)  # z = 1: h_t = h_{t-1} = 0


def test_gru_reset_gate_near_zero_is_reported_as_reset(vocab, tiny_network):
    network = tiny_network(len(vocab), cell="gru")
    _set_gate_bias(network, 0, -30.0)  # r
    trace, _ = _trace(network, vocab)
    assert all(step.cells[0].gates["reset"] < 1e-6 for step in trace.steps)
    assert all(0.0 < step.cells[0].gates["update"] < 1.0 for step in trace.steps)


def test_lstm_gates_are_named_by_what_they_do(vocab, tiny_network):
    network = tiny_network(len(vocab), cell="lstm")
    _set_gate_bias(network, 0, -30.0)  # i closed: nothing is written, the cell stays empty
    trace, _ = _trace(network, vocab)
    assert all(s.cells[0].gates["input"] < 1e-6 and s.cells[0].cell_norm < 1e-6 for s in trace.steps)
    network = tiny_network(len(vocab), cell="lstm")
    _set_gate_bias(network, 1, 30.0)  # f open
    _set_gate_bias(network, 3, -30.0)  # o closed: the module's hidden state is ~0 though c grows
    trace, _ = _trace(network, vocab)
    assert all(s.cells[0].gates["forget"] > 0.999 and s.cells[0].gates["output"] < 1e-6 for s in trace.steps)
    assert all(s.hidden_norm < 1e-6 for s in trace.steps)  # module's own output
    norms = [s.cells[0].cell_norm for s in trace.steps]
    assert norms[-1] > norms[0] > 0


@pytest.mark.parametrize("settings", [
    dict(cell="rnn"), dict(cell="gru", bidirectional=True, num_layers=2),
    dict(cell="lstm", pooling="attention"), dict(cell="gru", pooling="max", num_layers=2),
])
def test_trace_steps_carry_cells_change_and_attention(settings, vocab, tiny_network):
    network = tiny_network(len(vocab), **settings)
    trace, predicted = _trace(network, vocab)
    everything, _ = _trace(network, vocab, all_layers=True)
    directions = 2 if settings.get("bidirectional") else 1
    layers = settings.get("num_layers", 1)
    assert trace.steps[-1].probabilities == pytest.approx(predicted.probabilities, abs=1e-6)
    first, second = trace.steps[0], trace.steps[1]
    assert first.change_norm == pytest.approx(first.hidden_norm, abs=1e-6)  # against the zero state
    expected = torch.linalg.vector_norm(torch.tensor(second.hidden) - torch.tensor(first.hidden))
    assert second.change_norm == pytest.approx(float(expected), abs=1e-5)
    for step in trace.steps:
        assert [(c.layer, c.direction) for c in step.cells] == [
            (layers - 1, d) for d in ("forward", "backward")[:directions]]
        # The directions' norms compose the concatenated state's norm.
        assert step.hidden_norm == pytest.approx(sum(c.hidden_norm ** 2 for c in step.cells) ** 0.5, abs=1e-5)
        gates = {"rnn": set(), "gru": {"update", "reset"}, "lstm": {"input", "forget", "output"}}
        assert set(step.cells[0].gates) == gates[settings["cell"]]
        assert (step.cells[0].cell_norm is not None) == (settings["cell"] == "lstm")
        assert step.memory is None and step.cells[0].memory is None
    assert [len(s.cells) for s in everything.steps] == [layers * directions] * len(trace.steps)
    if settings.get("pooling") == "attention":
        weights = [s.attention for s in trace.steps]
        assert sum(weights) == pytest.approx(1.0, abs=1e-5) and weights == trace.attention
    else:
        assert all(s.attention is None for s in trace.steps)


def test_replay_follows_a_weight_tensor_replaced_after_the_first_replay(vocab, tiny_network):
    """A replaced (not updated in place) weight, e.g. load_state_dict(assign=True), must not leave
    the replay on the old one."""
    network = tiny_network(len(vocab), cell="gru")
    ids = torch.tensor(vocab.encode(TEXT.split()))  # [T]
    before = replay_cells(network, ids)[0].hidden
    network.rnn.weight_hh_l0 = torch.nn.Parameter(network.rnn.weight_hh_l0.detach() * 3.0)
    after = replay_cells(network, ids)[0].hidden
    with torch.no_grad():
        encoded = network.encode(ids.unsqueeze(0), torch.tensor([len(ids)]))
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, encoded.outputs[0], atol=1e-5, rtol=0)
