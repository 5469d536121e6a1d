"""Re-run a SentimentRNN's cells with the module's own weights to recover what the fused kernel
hides: the gate activations, and the LSTM cell state, at every step.

Each step of a recurrent cell is a function of (x_t, h_before_t). The module gives every
layer's states, so every step's inputs are known and all steps are re-run at once ("teacher
forced"): the gates are exactly those the module computed, up to float rounding. The equations
and gate layouts are the cells' own (model/cells.py). CellReplay.reconstructed() re-derives h_t
from the gates with the cell's step; a test checks it against the module's own states, which
pins both the equations and the gate order.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
from torch import Tensor

from .cells import CELLS, CellKind, CellWeights, ReplayedSteps, StepActivations, cell_kind, layer_weights
from .network import SentimentRNN

__all__ = ["DIRECTIONS", "GATES", "CellReplay", "replay_cells"]

DIRECTIONS = ("forward", "backward")
# The gates each cell reports, by name, in the order the trace lists them.
GATES: Mapping[str, tuple[str, ...]] = MappingProxyType({name: kind.reported for name, kind in CELLS.items()})


@dataclass
class CellReplay:
    """One layer and direction of one text, in token order (index t = the step that read token t)."""

    layer: int  # 0 = the bottom layer, which reads the word vectors
    direction: str  # "forward" or "backward"
    hidden: Tensor  # [T, H] the module's state after reading token t
    kind: CellKind  # the cell whose equations replayed it
    gates: dict[str, Tensor] = field(default_factory=dict)  # name -> [T, H] σ gate activations at token t
    cell: Tensor | None = None  # [T, H] LSTM cell state after token t
    candidate: Tensor | None = None  # [T, H] Elman h_t / GRU n_t / LSTM g_t
    # Kept for the hand-written backward pass (replay_backward), which would otherwise redo them:
    input_projection: Tensor | None = None  # [T, G*H] W_ih x_t, without bias
    recurrent_projection: Tensor | None = None  # [T, G*H] W_hh h_before_t + b_hh

    def previous(self, values: Tensor) -> Tensor:
        """The value before each token in this direction's reading order (zeros before the first)."""
        zero = torch.zeros_like(values[:1])  # [1, H]
        if self.direction == "forward":
            return torch.cat([zero, values[:-1]])  # [T, H]
        return torch.cat([values[1:], zero])  # [T, H] the backward direction reads t+1 before t

    def change_norms(self) -> Tensor:
        """‖h_t − h_before_t‖ per token: [T]."""
        return torch.linalg.vector_norm(self.hidden - self.previous(self.hidden), dim=-1)

    def activations(self) -> StepActivations:
        assert self.candidate is not None, "replay_cells fills candidate"
        return StepActivations(gates=self.gates, candidate=self.candidate)

    def reconstructed(self) -> Tensor:
        """h_t rebuilt from the replayed gates by the cell's step [T, H]: equal to `hidden` when
        the replay is right."""
        cell_before = self.previous(self.cell) if self.cell is not None else None
        hidden, _ = self.kind.next_state(self.activations(), self.previous(self.hidden), cell_before)
        return hidden

    def steps(self) -> ReplayedSteps:
        """Every replayed step, detached: what the cell's backward walk reads."""
        assert self.recurrent_projection is not None, "replay_cells fills recurrent_projection"
        activations = self.activations()
        return ReplayedSteps(
            hidden=self.hidden.detach(),
            before=self.previous(self.hidden).detach(),
            activations=StepActivations(gates={k: v.detach() for k, v in activations.gates.items()},
                                        candidate=activations.candidate.detach()),
            recurrent_projection=self.recurrent_projection.detach(),
            cell=self.cell.detach() if self.cell is not None else None,
            cell_before=self.previous(self.cell).detach() if self.cell is not None else None,
        )


def replay_cells(network: SentimentRNN, token_ids: Tensor, top_outputs: Tensor | None = None,
                 layer_outputs: Sequence[Tensor] | None = None,
                 subword_ids: Tensor | None = None) -> list[CellReplay]:
    """Every layer and direction of one text's recurrence, ordered layer then direction.

    token_ids: [T] one unpadded text, subword_ids [T, K] its unknown tokens' n-grams or None
    (SentimentRNN.embed). Starts from the zero state, as predict does.
    top_outputs: the network's own top-layer states [1, T, H*D] for this text, when the caller
    has them already; a one-layer network then needs no extra recurrent pass.
    layer_outputs: every layer's states [1, T, H*D], bottom first, when the caller has them all
    (a trace fed by ONNX Runtime): then no recurrent pass runs here at all.
    """
    kind = cell_kind(network.config.cell)
    size = network.config.hidden_size
    layers = network.config.num_layers
    with torch.no_grad():
        layer_input = network.embed(token_ids, subword_ids).unsqueeze(0)  # [1, T, E] (dropout is off in eval)
        replays: list[CellReplay] = []
        for layer in range(layers):
            if layer_outputs is not None:
                outputs = layer_outputs[layer]  # [1, T, H*D]
            elif top_outputs is not None and layer == layers - 1:
                outputs = top_outputs  # [1, T, H*D]
            else:
                outputs = _run_layer(network, kind, layer, layer_input)  # [1, T, H*D]
            for index, direction in enumerate(DIRECTIONS[: network.config.num_directions]):
                replay = CellReplay(layer=layer, direction=direction, kind=kind,
                                    hidden=outputs[0, :, index * size:(index + 1) * size])  # [T, H]
                _replay_gates(layer_weights(network.rnn, layer, index), layer_input[0], replay)
                replays.append(replay)
            layer_input = outputs  # what the next layer reads
    return replays


def _run_layer(network: SentimentRNN, kind: CellKind, layer: int, layer_input: Tensor) -> Tensor:
    """Layer `layer`'s states [1, T, H*D] for its inputs [1, T, I], by a one-layer module of the
    network's own weights (torch's fused kernel). Built per call on the meta device and given the
    weight tensors themselves, so it can never hold stale ones (a fraction of a millisecond, paid
    only by networks of several layers traced without every layer's states at hand)."""
    rnn = network.rnn
    module = kind.module(input_size=layer_input.shape[-1], hidden_size=rnn.hidden_size, num_layers=1, bias=rnn.bias,
                         batch_first=True, bidirectional=rnn.bidirectional, device="meta")
    for name in module._flat_weights_names:  # e.g. weight_ih_l0_reverse <- weight_ih_l{layer}_reverse
        setattr(module, name, getattr(rnn, name.replace("_l0", f"_l{layer}")))
    with warnings.catch_warnings():
        # On CUDA the shared weights are views into the parent's flat buffer; cuDNN warns
        # that it compacts them per call. Correct, and only a trace pays for it.
        warnings.filterwarnings("ignore", message=".*contiguous chunk of memory.*")
        outputs, _ = module.eval()(layer_input)  # one sequence, no padding: no packing needed
    return outputs


def _replay_gates(weights: CellWeights, inputs: Tensor, replay: CellReplay) -> None:
    """Fill replay.gates (and cell, candidate) from x_t [T, I] and the module's own h_before_t,
    all t at once."""
    kind = replay.kind
    replay.input_projection = projected = inputs @ weights.input.T  # [T, G*H]
    if weights.input_bias is not None:
        projected = projected + weights.input_bias
    replay.recurrent_projection = weights.recurrent_projection(replay.previous(replay.hidden))  # [T, G*H]
    activations = kind.activations(projected, replay.recurrent_projection)
    replay.gates = dict(activations.gates)
    replay.candidate = activations.candidate  # [T, H]
    if kind.memory is not None:
        replay.cell = _memory_states(*kind.memory(activations), replay.direction)


def _memory_states(keep: Tensor, write: Tensor, direction: str) -> Tensor:
    """c_t = keep_t c' + write_t [T, H] in the direction's reading order: the one part of a
    replay that must run step by step."""
    keeps, writes = keep.unbind(0), write.unbind(0)  # T × [H]
    states: list[Tensor] = [writes[0]] * len(writes)  # placeholders, each written once below
    c = torch.zeros_like(writes[0])  # [H]
    order = range(len(writes)) if direction == DIRECTIONS[0] else range(len(writes) - 1, -1, -1)
    for t in order:
        c = torch.addcmul(writes[t], keeps[t], c)
        states[t] = c
    return torch.stack(states)
