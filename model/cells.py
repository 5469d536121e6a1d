"""The recurrent cells (Elman RNN, GRU, LSTM), each defined once: its torch module, its gate
layout, its step equations and the derivative of its steps.

Everything that runs or inspects a recurrence derives from the CELLS table: SentimentRNN builds
`CellKind.module`, the ONNX graph re-stacks the weights by `onnx_gates` (named, not indexed), the
trace replay computes its gates with `activations` and rebuilds states with `next_state`, the
hand-written gradient walks `backward`, and `step`/`scan` run the same equations as a plain torch
recurrence (for a caller carrying state across chunks). A new cell is one entry here plus its
tests (tests/unit/model/test_cells.py holds every entry to its torch module).

The equations are PyTorch's documented ones for nn.RNN / nn.GRU / nn.LSTM, on projections that
already include their biases:
  x = W_ih x_t + b_ih, h = W_hh h' + b_hh   (h', c' the state before the step)
  Elman  h_t = tanh(x + h)
  GRU    r = σ(x_r + h_r), z = σ(x_z + h_z), n = tanh(x_n + r h_n), h_t = (1 − z) n + z h'
  LSTM   i, f, o = σ(x + h), g = tanh(x_g + h_g), c_t = f c' + i g, h_t = o tanh(c_t)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Union

import torch
from torch import Tensor, nn

__all__ = ["CANDIDATE", "CellKind", "CellWeights", "StepActivations", "ReplayedSteps", "CellState", "CELLS",
           "cell_kind", "layer_weights", "step", "scan"]

# The block of every cell's stacked weights that is squashed by tanh rather than gated by σ:
# Elman's whole step, GRU's n, LSTM's g.
CANDIDATE = "candidate"

# h [B, H] for RNN/GRU, (h, c) for LSTM: one layer and direction, as torch's modules carry it.
CellState = Union[Tensor, tuple[Tensor, Tensor]]
# A backward walk: yields after each step (so that a caller may cut it into slices), returns
# ∂f/∂(W_ih x_t + b_ih) [T, G*H], the gate blocks in the cell's stacked order.
BackwardWalk = Generator[None, None, Tensor]


@dataclass(frozen=True)
class StepActivations:
    """What a cell's gates did at one or more steps: every σ gate by name and the candidate [..., H]."""

    gates: Mapping[str, Tensor]
    candidate: Tensor


@dataclass(frozen=True)
class CellWeights:
    """One layer and direction's parameters, in PyTorch's stacked layout (G gate blocks of H rows)."""

    input: Tensor  # W_ih [G*H, I]
    recurrent: Tensor  # W_hh [G*H, H]
    input_bias: Tensor | None  # b_ih [G*H]
    recurrent_bias: Tensor | None  # b_hh [G*H]

    def input_projection(self, x: Tensor) -> Tensor:
        """W_ih x + b_ih: [..., I] -> [..., G*H]."""
        projected = x @ self.input.T  # [..., G*H]
        return projected + self.input_bias if self.input_bias is not None else projected

    def recurrent_projection(self, h: Tensor) -> Tensor:
        """W_hh h + b_hh: [..., H] -> [..., G*H]."""
        projected = h @ self.recurrent.T  # [..., G*H]
        return projected + self.recurrent_bias if self.recurrent_bias is not None else projected


@dataclass(frozen=True)
class ReplayedSteps:
    """Every step of one layer and direction with its inputs known (teacher forced), in token
    order: what a cell's backward walk reads. All [T, H] unless noted."""

    hidden: Tensor  # h_t
    before: Tensor  # h' in this direction's reading order (zeros before the first)
    activations: StepActivations
    recurrent_projection: Tensor  # [T, G*H] W_hh h' + b_hh
    cell: Tensor | None = None  # LSTM c_t
    cell_before: Tensor | None = None  # LSTM c'


@dataclass(frozen=True)
class CellKind:
    """One recurrent cell: how to build it, how its weights are laid out, how it steps."""

    name: str
    module: Callable[..., nn.RNNBase]  # the torch module, given nn.RNNBase's keyword arguments
    gates: tuple[str, ...]  # the blocks of W_ih / W_hh / biases, in PyTorch's stacked order
    reported: tuple[str, ...]  # the σ gates a trace reports, in the order it lists them
    onnx_op: str  # the ONNX operator that runs this cell (opset 17)
    onnx_gates: tuple[str, ...]  # the same blocks in the order that operator stacks them
    onnx_attributes: Mapping[str, object]  # attributes the operator needs to match PyTorch
    onnx_activations: tuple[str, ...]  # the operator's activations per direction; () = its defaults
    # (x, h) projections [..., G*H], biases included -> the step's gates and candidate
    activations: Callable[[Tensor, Tensor], StepActivations]
    # (activations, h', c' or None) -> (h_t, c_t or None)
    next_state: Callable[[StepActivations, Tensor, Tensor | None], tuple[Tensor, Tensor | None]]
    # (steps, W_hh.T [H, G*H], ∂f/∂h_t from above [T, H], steps in reverse reading order) -> walk
    backward: Callable[[ReplayedSteps, Tensor, Tensor, Iterable[int]], BackwardWalk]
    # (activations) -> (keep, write) of a cell state that evolves as c_t = keep c' + write; None
    # for cells whose whole state is h
    memory: Callable[[StepActivations], tuple[Tensor, Tensor]] | None = None

    def __post_init__(self) -> None:
        if CANDIDATE not in self.gates or sorted(self.gates) != sorted(self.onnx_gates):
            raise ValueError(f"{self.name}: gates {self.gates} need {CANDIDATE!r} and the same names in "
                             f"onnx_gates {self.onnx_gates}")
        if not set(self.reported) <= set(self.gates) - {CANDIDATE}:
            raise ValueError(f"{self.name}: reported gates {self.reported} must be σ gates of {self.gates}")

    @property
    def has_memory(self) -> bool:
        """Whether the state carries a cell state c beside h (LSTM)."""
        return self.memory is not None

    def blocks(self, stacked: Tensor, dim: int = -1) -> dict[str, Tensor]:
        """A stacked projection or weight split into its named gate blocks, PyTorch's order."""
        return dict(zip(self.gates, stacked.chunk(len(self.gates), dim=dim)))

    def onnx_stacked(self, stacked: Tensor) -> Tensor:
        """A weight or bias [G*H, ...] re-stacked from PyTorch's gate order into ONNX's."""
        blocks = self.blocks(stacked, dim=0)
        return torch.cat([blocks[name] for name in self.onnx_gates], dim=0)


# --- Elman: h_t = tanh(x + h) ---------------------------------------------------------------

def _elman_activations(x: Tensor, h: Tensor) -> StepActivations:
    return StepActivations(gates={}, candidate=torch.tanh(x + h))  # [..., H]


def _elman_next_state(a: StepActivations, before: Tensor, cell_before: Tensor | None) -> tuple[Tensor, None]:
    return a.candidate, None


def _elman_backward(steps: ReplayedSteps, recurrent_t: Tensor, d_hidden: Tensor, order: Iterable[int]) -> BackwardWalk:
    """∂f/∂a_t [T, H] for h_t = tanh(a_t); recurrent_t is W_hh.T [H, H]."""
    hidden = steps.hidden
    slope = (1.0 - hidden * hidden).unbind(0)  # T × [H] tanh'
    above = d_hidden.unbind(0)  # T × [H]; unbound once, since indexing a tensor per step costs an op
    rows: list[Tensor] = [hidden[0]] * len(slope)  # placeholders, each row written once below
    carry = torch.zeros_like(hidden[0])  # ∂f/∂h_t through the next step in reading order
    for t in order:
        rows[t] = (above[t] + carry) * slope[t]
        carry = torch.mv(recurrent_t, rows[t])  # [H]
        yield
    return torch.stack(rows)


# --- GRU: r, z = σ(...), n = tanh(x_n + r h_n), h_t = (1 − z) n + z h' -------------------------

def _gru_activations(x: Tensor, h: Tensor) -> StepActivations:
    xs, hs = GRU.blocks(x), GRU.blocks(h)  # name -> [..., H]
    reset = torch.sigmoid(xs["reset"] + hs["reset"])
    update = torch.sigmoid(xs["update"] + hs["update"])
    # The reset gate scales the recurrent part only: PyTorch's r * (W_hn h + b_hn).
    return StepActivations(gates={"reset": reset, "update": update},
                           candidate=torch.tanh(xs[CANDIDATE] + reset * hs[CANDIDATE]))


def _gru_next_state(a: StepActivations, before: Tensor, cell_before: Tensor | None) -> tuple[Tensor, None]:
    update = a.gates["update"]
    return (1 - update) * a.candidate + update * before, None


def _gru_backward(steps: ReplayedSteps, recurrent_t: Tensor, d_hidden: Tensor, order: Iterable[int]) -> BackwardWalk:
    """∂f/∂(W_ih x_t + b_ih) [T, 3H] in gate order r, z, n; recurrent_t is W_hh.T [H, 3H]."""
    hidden, before = steps.hidden, steps.before
    length, size = hidden.shape
    reset = steps.activations.gates["reset"]  # [T, H]
    update = steps.activations.gates["update"]
    candidate = steps.activations.candidate  # [T, H] n_t
    recurrent_n = GRU.blocks(steps.recurrent_projection)[CANDIDATE]  # [T, H] W_hn h' + b_hn, which r scales
    # Every gate's gradient is dh_t times a factor known before the walk starts.
    d_n = (1.0 - update) * (1.0 - candidate * candidate)  # [T, H] ∂h/∂a_n
    d_z = (before - candidate) * update * (1.0 - update)  # ∂h/∂a_z
    d_r = d_n * recurrent_n * reset * (1.0 - reset)  # ∂h/∂a_r
    input_factor = torch.stack([d_r, d_z, d_n], dim=1)  # [T, 3, H]
    recurrent_factor = torch.stack([d_r, d_z, d_n * reset], dim=1).unbind(0)  # T × [3, H] r scales W_hn h'
    keep = update.unbind(0)  # T × [H] ∂h/∂h' directly, through z h'
    above = d_hidden.unbind(0)
    rows: list[Tensor] = [hidden[0]] * length  # ∂f/∂h_t in full, each row written once below
    walk = list(order)
    d_h = above[walk[0]]  # the step read last: nothing after it
    rows[walk[0]] = d_h
    yield
    for later, t in zip(walk, walk[1:]):  # t: the step read just before `later`
        # From above, plus through `later`'s z h' and W_hh h'. addcmul folds two ops into one:
        # at batch 1 each op's overhead is a sizeable part of a step's cost.
        d_h = torch.addmv(torch.addcmul(above[t], d_h, keep[later]), recurrent_t,
                          (recurrent_factor[later] * d_h).view(-1))  # [H]
        rows[t] = d_h
        yield
    return (input_factor * torch.stack(rows).unsqueeze(1)).view(length, 3 * size)


# --- LSTM: i, f, o = σ(...), g = tanh(...), c_t = f c' + i g, h_t = o tanh(c_t) --------------

def _lstm_activations(x: Tensor, h: Tensor) -> StepActivations:
    blocks = LSTM.blocks(x + h)  # name -> [..., H]
    gates = {name: torch.sigmoid(blocks[name]) for name in ("input", "forget", "output")}
    return StepActivations(gates=gates, candidate=torch.tanh(blocks[CANDIDATE]))


def _lstm_memory(a: StepActivations) -> tuple[Tensor, Tensor]:
    return a.gates["forget"], a.gates["input"] * a.candidate  # c_t = f c' + i g


def _lstm_next_state(a: StepActivations, before: Tensor, cell_before: Tensor | None) -> tuple[Tensor, Tensor]:
    if cell_before is None:
        raise ValueError("an LSTM step needs the cell state before it")
    keep, write = _lstm_memory(a)
    cell = keep * cell_before + write
    return a.gates["output"] * torch.tanh(cell), cell


def _lstm_backward(steps: ReplayedSteps, recurrent_t: Tensor, d_hidden: Tensor, order: Iterable[int]) -> BackwardWalk:
    """∂f/∂(gate pre-activations) [T, 4H] in gate order i, f, g, o; recurrent_t is W_hh.T [H, 4H]."""
    gates = steps.activations.gates
    gate_in, forget, out = gates["input"], gates["forget"], gates["output"]  # [T, H]
    candidate = steps.activations.candidate  # g_t
    assert steps.cell is not None and steps.cell_before is not None, "an LSTM replay holds its cell states"
    cell, cell_before = steps.cell, steps.cell_before  # c_t, c'
    squashed = torch.tanh(cell)
    length, size = cell.shape
    to_cell = (out * (1.0 - squashed * squashed)).unbind(0)  # T × [H] ∂h/∂c
    # Pre-activation gradients: i, f, g are dc_t times these, o is dh_t times its own.
    factor = torch.stack([candidate * gate_in * (1.0 - gate_in), cell_before * forget * (1.0 - forget),
                          gate_in * (1.0 - candidate * candidate), squashed * out * (1.0 - out)],
                         dim=1).unbind(0)  # T × [4, H]
    keep = forget.unbind(0)  # ∂c/∂c'
    above = d_hidden.unbind(0)
    rows: list[Tensor] = [factor[0]] * length  # each row written once below
    carry_h = torch.zeros_like(cell[0])
    carry_c = torch.zeros_like(cell[0])
    for t in order:
        d_h = above[t] + carry_h
        d_c = carry_c + d_h * to_cell[t]
        rows[t] = factor[t] * torch.stack((d_c, d_c, d_c, d_h))  # [4, H]
        carry_h = torch.mv(recurrent_t, rows[t].view(-1))  # [H]
        carry_c = d_c * keep[t]
        yield
    return torch.stack(rows).view(length, 4 * size)


RNN = CellKind(
    name="rnn",
    module=functools.partial(nn.RNN, nonlinearity="tanh"),
    gates=(CANDIDATE,),
    reported=(),
    onnx_op="RNN",
    onnx_gates=(CANDIDATE,),
    onnx_attributes=MappingProxyType({}),
    onnx_activations=("Tanh",),
    activations=_elman_activations,
    next_state=_elman_next_state,
    backward=_elman_backward,
)
GRU = CellKind(
    name="gru",
    module=nn.GRU,
    gates=("reset", "update", CANDIDATE),
    reported=("update", "reset"),
    onnx_op="GRU",
    onnx_gates=("update", "reset", CANDIDATE),  # ONNX's z, r, h
    # PyTorch applies r to (W_hn h + b_hn); ONNX's default applies it to h before the product.
    onnx_attributes=MappingProxyType({"linear_before_reset": 1}),
    onnx_activations=(),  # σ, tanh: ONNX's defaults, PyTorch's gates
    activations=_gru_activations,
    next_state=_gru_next_state,
    backward=_gru_backward,
)
LSTM = CellKind(
    name="lstm",
    module=nn.LSTM,
    gates=("input", "forget", CANDIDATE, "output"),
    reported=("input", "forget", "output"),
    onnx_op="LSTM",
    onnx_gates=("input", "output", "forget", CANDIDATE),  # ONNX's i, o, f, c
    onnx_attributes=MappingProxyType({}),
    onnx_activations=(),  # σ, tanh, tanh: ONNX's defaults, PyTorch's gates
    activations=_lstm_activations,
    next_state=_lstm_next_state,
    backward=_lstm_backward,
    memory=_lstm_memory,
)
CELLS: Mapping[str, CellKind] = MappingProxyType({kind.name: kind for kind in (RNN, GRU, LSTM)})


def cell_kind(name: str) -> CellKind:
    """The CELLS entry for `name`; a ValueError lists the valid names."""
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"unknown cell {name!r}; options are {list(CELLS)}") from None


def layer_weights(rnn: nn.RNNBase, layer: int, direction: int) -> CellWeights:
    """Layer `layer`, direction `direction` (0 forward, 1 backward) of a torch recurrent module,
    by PyTorch's parameter names (weight_ih_l{k}{_reverse}, ...). The tensors are the module's own."""
    suffix = f"_l{layer}" + ("_reverse" if direction else "")
    return CellWeights(
        input=getattr(rnn, "weight_ih" + suffix),
        recurrent=getattr(rnn, "weight_hh" + suffix),
        input_bias=getattr(rnn, "bias_ih" + suffix) if rnn.bias else None,
        recurrent_bias=getattr(rnn, "bias_hh" + suffix) if rnn.bias else None,
    )


def step(kind: CellKind, x: Tensor, state: CellState | None, weights: CellWeights) -> CellState:
    """One step of one layer and direction: x [B, I] and the state before it (zeros if None) ->
    the state after it, h [B, H] or (h, c) for a cell with memory, as torch's module returns it."""
    hidden, cell = _unpacked(kind, state, x, weights)
    activations = kind.activations(weights.input_projection(x), weights.recurrent_projection(hidden))
    hidden, cell = kind.next_state(activations, hidden, cell)
    return (hidden, cell) if cell is not None else hidden


def scan(kind: CellKind, inputs: Tensor, weights: CellWeights, state: CellState | None = None,
         reverse: bool = False) -> tuple[Tensor, CellState]:
    """`step` over inputs [B, T, I] (in reverse for a backward direction): the states after each
    token [B, T, H], in token order, and the final state. The input projections of all steps run
    as one product; only the recurrent part runs step by step."""
    hidden, cell = _unpacked(kind, state, inputs[:, 0], weights)
    projected = weights.input_projection(inputs).unbind(1)  # T × [B, G*H]
    outputs: list[Tensor] = [hidden] * len(projected)  # placeholders, each written once below
    for t in (reversed(range(len(projected))) if reverse else range(len(projected))):
        activations = kind.activations(projected[t], weights.recurrent_projection(hidden))
        hidden, cell = kind.next_state(activations, hidden, cell)
        outputs[t] = hidden
    final: CellState = (hidden, cell) if cell is not None else hidden
    return torch.stack(outputs, dim=1), final  # [B, T, H]


def _unpacked(kind: CellKind, state: CellState | None, x: Tensor, weights: CellWeights) -> tuple[Tensor, Tensor | None]:
    if state is None:
        zeros = x.new_zeros(x.shape[0], weights.recurrent.shape[1])  # [B, H]
        return zeros, (zeros if kind.has_memory else None)
    if isinstance(state, tuple):
        if not kind.has_memory:
            raise ValueError(f"a {kind.name} state is one tensor h, not (h, c)")
        return state
    if kind.has_memory:
        raise ValueError(f"a {kind.name} state is (h, c), not one tensor")
    return state, None
