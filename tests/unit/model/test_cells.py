"""Each CELLS entry is its torch module: the step, the scan, the gate layout and the backward walk."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rnn_sentiment.model.cells import (
    CANDIDATE, CELLS, CellKind, ReplayedSteps, StepActivations, cell_kind, layer_weights, scan, step,
)
from rnn_sentiment.model.config import CELLS as CONFIG_CELLS

INPUTS, HIDDEN, BATCH, STEPS = 5, 4, 3, 7


def sharp_module(kind: CellKind, bidirectional: bool = False, dtype: torch.dtype = torch.float32):
    """A small module with doubled weights: far from linear, so a wrong equation shows."""
    torch.manual_seed(0)
    module = kind.module(input_size=INPUTS, hidden_size=HIDDEN, batch_first=True,
                         bidirectional=bidirectional).to(dtype).eval()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.mul_(2.0)
    return module


def random_state(kind: CellKind, directions: int = 1):
    """A non-zero starting state in the module's layout [D, B, H] (or (h, c))."""
    h = torch.randn(directions, BATCH, HIDDEN)
    return (h, torch.randn(directions, BATCH, HIDDEN)) if kind.has_memory else h


def direction_state(state, direction: int):
    """One direction's state [B, H] (or (h, c)) out of the module's [D, B, H] layout."""
    return tuple(s[direction] for s in state) if isinstance(state, tuple) else state[direction]


def assert_states_close(actual, expected) -> None:
    actual = actual if isinstance(actual, tuple) else (actual,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=0, atol=1e-5)


def test_the_table_covers_every_cell_a_config_accepts():
    assert tuple(CELLS) == CONFIG_CELLS
    for name, kind in CELLS.items():
        assert kind.name == name and cell_kind(name) is kind


def test_an_unknown_cell_is_refused_with_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown cell 'transformer'; options are \['rnn', 'gru', 'lstm'\]"):
        cell_kind("transformer")


@pytest.mark.parametrize("name", list(CELLS))
def test_the_gate_blocks_are_the_modules_stacked_rows(name):
    kind = CELLS[name]
    module = sharp_module(kind)
    assert module.weight_ih_l0.shape[0] == len(kind.gates) * HIDDEN
    assert set(kind.reported) <= set(kind.gates) - {CANDIDATE}
    blocks = kind.blocks(module.weight_ih_l0.detach(), dim=0)
    assert list(blocks) == list(kind.gates) and all(b.shape == (HIDDEN, INPUTS) for b in blocks.values())
    # ONNX's stacking is a permutation of the same named blocks.
    restacked = kind.blocks(kind.onnx_stacked(module.weight_ih_l0.detach()), dim=0)  # in PyTorch's names
    onnx_blocks = dict(zip(kind.onnx_gates, restacked.values()))
    for gate in kind.gates:
        torch.testing.assert_close(onnx_blocks[gate], blocks[gate], rtol=0, atol=0)


@pytest.mark.parametrize("name", list(CELLS))
def test_one_step_equals_the_torch_module(name):
    kind = CELLS[name]
    module = sharp_module(kind)
    x = torch.randn(BATCH, 1, INPUTS)
    for state in (None, random_state(kind)):
        with torch.no_grad():
            _, expected = module(x, state)  # [1, B, H] (or (h, c))
            actual = step(kind, x[:, 0], direction_state(state, 0) if state is not None else None,
                          layer_weights(module, 0, 0))
        assert_states_close(actual, direction_state(expected, 0))


@pytest.mark.parametrize("name", list(CELLS))
def test_a_sequence_equals_the_torch_module_in_both_directions(name):
    kind = CELLS[name]
    module = sharp_module(kind, bidirectional=True)
    x = torch.randn(BATCH, STEPS, INPUTS)
    state = random_state(kind, directions=2)
    with torch.no_grad():
        expected_outputs, expected_final = module(x, state)  # [B, T, 2H]
        for direction in (0, 1):
            outputs, final = scan(kind, x, layer_weights(module, 0, direction), direction_state(state, direction),
                                  reverse=bool(direction))
            torch.testing.assert_close(outputs, expected_outputs[..., direction * HIDDEN:(direction + 1) * HIDDEN],
                                       rtol=0, atol=1e-5)
            assert_states_close(final, direction_state(expected_final, direction))


@pytest.mark.parametrize("name", list(CELLS))
def test_steps_carried_chunk_by_chunk_equal_the_whole_sequence(name):
    # What a stream does: the state after one chunk starts the next.
    kind = CELLS[name]
    module = sharp_module(kind)
    weights = layer_weights(module, 0, 0)
    x = torch.randn(BATCH, STEPS, INPUTS)
    with torch.no_grad():
        whole, whole_final = scan(kind, x, weights)
        state = None
        for t in range(STEPS):
            state = step(kind, x[:, t], state, weights)
    assert_states_close(state, whole_final)
    torch.testing.assert_close(state[0] if isinstance(state, tuple) else state, whole[:, -1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", list(CELLS))
def test_a_state_of_the_wrong_kind_is_refused(name):
    kind = CELLS[name]
    module = sharp_module(kind)
    h = torch.zeros(BATCH, HIDDEN)
    wrong = h if kind.has_memory else (h, h)
    with pytest.raises(ValueError, match=f"a {name} state is"):
        step(kind, torch.zeros(BATCH, INPUTS), wrong, layer_weights(module, 0, 0))


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "backward"])
def test_the_backward_walk_equals_autograd_through_the_step(name, reverse):
    # In double precision, any mistake in a derivative shows far above 1e-10.
    kind = CELLS[name]
    module = sharp_module(kind, dtype=torch.float64)
    weights = layer_weights(module, 0, 0)
    x = torch.randn(1, STEPS, INPUTS, dtype=torch.float64)
    above = torch.randn(STEPS, HIDDEN, dtype=torch.float64)  # ∂f/∂h_t from the layer above
    # Autograd: f = Σ_t above_t · h_t; its gradient with respect to the input projections.
    projections = weights.input_projection(x).detach().requires_grad_()  # [1, T, G*H]
    hidden = torch.zeros(1, HIDDEN, dtype=torch.float64)
    cell = torch.zeros_like(hidden) if kind.has_memory else None
    states = [hidden] * STEPS
    for t in (reversed(range(STEPS)) if reverse else range(STEPS)):
        activations = kind.activations(projections[:, t], weights.recurrent_projection(hidden))
        hidden, cell = kind.next_state(activations, hidden, cell)
        states[t] = hidden
    (expected,) = torch.autograd.grad((torch.cat(states) * above).sum(), projections)  # [1, T, G*H]

    walk = kind.backward(_replayed(kind, weights, x[0], reverse), weights.recurrent.detach().T, above,
                         range(STEPS) if reverse else range(STEPS - 1, -1, -1))
    torch.testing.assert_close(_finished(walk), expected[0], rtol=0, atol=1e-10)


def _finished(walk):
    """A backward walk run to its end: its return value."""
    steps = 0
    while True:
        try:
            next(walk)
            steps += 1
        except StopIteration as done:
            assert steps == STEPS  # one pause per step, where a caller may end a slice
            return done.value


def _replayed(kind: CellKind, weights, x, reverse: bool) -> ReplayedSteps:
    """Every step of one direction over x [T, I] from the zero state, teacher forced from the scan."""
    with torch.no_grad():
        hidden, _ = scan(kind, x.unsqueeze(0), weights, reverse=reverse)
        hidden = hidden[0]  # [T, H]
        zero = torch.zeros_like(hidden[:1])
        before = torch.cat([hidden[1:], zero]) if reverse else torch.cat([zero, hidden[:-1]])  # h' in reading order
        recurrent = weights.recurrent_projection(before)  # [T, G*H]
        activations = kind.activations(weights.input_projection(x), recurrent)
        cell = cell_before = None
        if kind.memory is not None:
            keep, write = kind.memory(activations)
            cells, c = [write[0]] * len(write), torch.zeros_like(write[0])
            for t in (reversed(range(len(write))) if reverse else range(len(write))):
                c = keep[t] * c + write[t]
                cells[t] = c
            cell = torch.stack(cells)
            cell_before = torch.cat([cell[1:], zero]) if reverse else torch.cat([zero, cell[:-1]])
    return ReplayedSteps(hidden=hidden, before=before, recurrent_projection=recurrent, cell=cell,
                         cell_before=cell_before,
                         activations=StepActivations(gates=dict(activations.gates), candidate=activations.candidate))


def test_a_table_entry_must_name_its_candidate_and_the_same_gates_for_onnx():
    gru = CELLS["gru"]
    with pytest.raises(ValueError, match="onnx_gates"):
        CellKind(**{**_fields(gru), "onnx_gates": ("update", "reset", "new")})
    with pytest.raises(ValueError, match="reported gates"):
        CellKind(**{**_fields(gru), "reported": ("update", CANDIDATE)})


def _fields(kind: CellKind) -> dict:
    return {f.name: getattr(kind, f.name) for f in dataclasses.fields(kind)}
