"""Re-run a SentimentRNN's cells with the module's own weights to recover what the fused kernel
hides: the gate activations, and the LSTM cell state, at every step.

Each step of a recurrent cell is a function of (x_t, h_before_t). The module gives every
layer's states, so every step's inputs are known and all steps are re-run at once ("teacher
forced"): the gates are exactly those the module computed, up to float rounding. The
equations are PyTorch's documented ones for nn.RNN / nn.GRU / nn.LSTM (stacked weights in
gate order r,z,n and i,f,g,o). CellReplay.reconstructed() re-derives h_t from the gates; a test
checks it against the module's own states, which pins both the equations and the gate order.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .network import SentimentRNN

__all__ = ["DIRECTIONS", "GATES", "CellReplay", "replay_cells"]

DIRECTIONS = ("forward", "backward")
# The gates each cell reports, by name, in the order the trace lists them.
GATES = {"rnn": (), "gru": ("update", "reset"), "lstm": ("input", "forget", "output")}
_CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
# One single-layer module per layer of each network, sharing its weights (no copy); rebuilt for
# a new network object (e.g. after a hot reload) or when a weight tensor of it was replaced
# rather than changed in place (e.g. load_state_dict(assign=True)), dropped with the network.
_LAYER_MODULES: "weakref.WeakKeyDictionary[SentimentRNN, list[nn.RNNBase]]" = weakref.WeakKeyDictionary()


@dataclass
class CellReplay:
    """One layer and direction of one text, in token order (index t = the step that read token t)."""

    layer: int  # 0 = the bottom layer, which reads the word vectors
    direction: str  # "forward" or "backward"
    hidden: Tensor  # [T, H] the module's state after reading token t
    gates: dict[str, Tensor] = field(default_factory=dict)  # name -> [T, H] activations at token t
    cell: Tensor | None = None  # [T, H] LSTM cell state after token t
    candidate: Tensor | None = None  # [T, H] GRU n_t / LSTM g_t (kept for reconstructed())
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

    def reconstructed(self) -> Tensor:
        """h_t rebuilt from the replayed gates [T, H]: equal to `hidden` when the replay is right."""
        if "update" in self.gates:  # GRU: h_t = (1 − z) n + z h_{t−1}
            z = self.gates["update"]
            return (1 - z) * self.candidate + z * self.previous(self.hidden)
        if "output" in self.gates:  # LSTM: h_t = o tanh(c_t)
            assert self.cell is not None
            return self.gates["output"] * torch.tanh(self.cell)
        assert self.candidate is not None  # Elman: h_t = tanh(W x + U h_{t−1} + b), kept as candidate
        return self.candidate


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
    cell = network.config.cell
    size = network.config.hidden_size
    with torch.no_grad():
        layer_input = network.embed(token_ids, subword_ids).unsqueeze(0)  # [1, T, E] (dropout is off in eval)
        replays: list[CellReplay] = []
        for layer, module in enumerate(_layer_modules(network)):
            with warnings.catch_warnings():
                # On CUDA the shared weights are views into the parent's flat buffer; cuDNN warns
                # that it compacts them per call. Correct, and only a trace pays for it.
                warnings.filterwarnings("ignore", message=".*contiguous chunk of memory.*")
                if layer_outputs is not None:
                    outputs = layer_outputs[layer]  # [1, T, H*D]
                elif top_outputs is not None and layer == len(_layer_modules(network)) - 1:
                    outputs = top_outputs  # [1, T, H*D]
                else:
                    outputs, _ = module(layer_input)  # [1, T, H*D] one sequence, no padding: no packing needed
            for index, direction in enumerate(DIRECTIONS[: network.config.num_directions]):
                replay = CellReplay(layer=layer, direction=direction,
                                    hidden=outputs[0, :, index * size:(index + 1) * size])  # [T, H]
                suffix = f"_l{layer}" + ("_reverse" if index else "")
                _replay_gates(network.rnn, cell, suffix, layer_input[0], replay)
                replays.append(replay)
            layer_input = outputs  # what the next layer reads
    return replays


def _layer_modules(network: SentimentRNN) -> list[nn.RNNBase]:
    """Single-layer copies of the network's recurrent layers that share its parameters."""
    modules = _LAYER_MODULES.get(network)
    if modules is None or not _shares_weights(modules, network.rnn):
        rnn = network.rnn
        modules = []
        for layer in range(rnn.num_layers):
            kwargs = {"nonlinearity": rnn.nonlinearity} if isinstance(rnn, nn.RNN) else {}
            module = _CELLS[network.config.cell](
                input_size=rnn.input_size if layer == 0 else rnn.hidden_size * network.config.num_directions,
                hidden_size=rnn.hidden_size, num_layers=1, bias=rnn.bias, batch_first=True,
                bidirectional=rnn.bidirectional, device="meta", **kwargs)
            for name in module._flat_weights_names:  # e.g. weight_ih_l0_reverse <- weight_ih_l{layer}_reverse
                setattr(module, name, getattr(rnn, name.replace("_l0", f"_l{layer}")))
            modules.append(module.eval())
        _LAYER_MODULES[network] = modules
    return modules


def _shares_weights(modules: list[nn.RNNBase], rnn: nn.RNNBase) -> bool:
    """Whether the cached single-layer modules still hold the network's current weight tensors."""
    return all(getattr(module, name) is getattr(rnn, name.replace("_l0", f"_l{layer}"))
               for layer, module in enumerate(modules) for name in module._flat_weights_names)


def _replay_gates(rnn: nn.RNNBase, cell: str, suffix: str, inputs: Tensor, replay: CellReplay) -> None:
    """Fill replay.gates (and cell, candidate) from x_t and the module's own h_before_t, all t at once."""
    size = rnn.hidden_size
    w_ih = getattr(rnn, "weight_ih" + suffix)  # [G*H, I]
    w_hh = getattr(rnn, "weight_hh" + suffix)  # [G*H, H]
    replay.input_projection = x = inputs @ w_ih.T  # [T, G*H]
    h = replay.previous(replay.hidden) @ w_hh.T  # [T, G*H]
    if rnn.bias:
        x = x + getattr(rnn, "bias_ih" + suffix)
        h = h + getattr(rnn, "bias_hh" + suffix)
    replay.recurrent_projection = h
    if cell == "rnn":
        replay.candidate = torch.tanh(x + h)  # [T, H]
    elif cell == "gru":
        x_r, x_z, x_n = x.split(size, dim=-1)  # [T, H] each
        h_r, h_z, h_n = h.split(size, dim=-1)
        reset = torch.sigmoid(x_r + h_r)
        replay.gates = {"update": torch.sigmoid(x_z + h_z), "reset": reset}
        replay.candidate = torch.tanh(x_n + reset * h_n)  # the reset gate scales the recurrent part only
    else:
        i, f, g, o = (x + h).split(size, dim=-1)  # [T, H] each
        replay.gates = {"input": torch.sigmoid(i), "forget": torch.sigmoid(f), "output": torch.sigmoid(o)}
        replay.candidate = torch.tanh(g)
        # c_t = f_t c_{t−1} + i_t g_t: the one part that must run in reading order.
        written = replay.gates["input"] * replay.candidate  # [T, H]
        forget = replay.gates["forget"]
        cells = torch.empty_like(written)
        c = torch.zeros_like(written[0])  # [H]
        order = range(len(written)) if replay.direction == "forward" else range(len(written) - 1, -1, -1)
        for t in order:
            c = forget[t] * c + written[t]
            cells[t] = c
        replay.cell = cells
