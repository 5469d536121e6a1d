"""Gradient × input by a hand-written backward pass through the replayed recurrence.

Why: on CPU, autograd's backward through nn.GRU / nn.LSTM / nn.RNN re-records the recurrence
step by step and pays PyTorch's per-op overhead many times per step; for one 20-word text that
was most of a trace's cost (about 3.5 ms of 5.4 ms for the 256-unit GRU). A trace has already
replayed every gate of every step (cell_replay.replay_cells), and with the gates known the
backward pass is one vector-matrix product per step plus elementwise work done for all steps at
once (0.8 ms). The recurrence is differentiated by PyTorch's documented cell equations:

  Elman  h = tanh(a),  a = W_ih x + b_ih + W_hh h' + b_hh
  GRU    r, z = σ(...), n = tanh(W_in x + b_in + r (W_hn h' + b_hn)), h = (1 − z) n + z h'
  LSTM   i, f, o = σ(...), g = tanh(...), c = f c' + i g, h = o tanh(c)

(h', c' the state before the step in the direction's reading order). Pooling "last", "mean",
"max" and the linear classifier are differentiated by hand too; attention pooling goes through
the network's own module under autograd. The result equals attribution.gradient_x_input (a test
holds every cell, depth, direction and pooling to it).

The loop stays in torch: numpy's matrix-vector product is no faster on one thread, and its
OpenBLAS starts its own threads, which ignore torch.set_num_threads and, on a shared two-core
machine, made a trace several times slower by fighting the server's torch thread.

Falls back to autograd explicitly for what the hand-written pass does not cover: a network in
training mode (dropout would be active) and any device other than the CPU (there the fused
kernels' backward is fast and the per-step loop would launch a kernel per op).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
from torch import Tensor

from .attribution import Slices, gradient_x_input, gradients_enabled, run_slices, target_log_odds
from .cell_replay import DIRECTIONS, CellReplay, replay_cells
from .network import EncodedSequence, SentimentRNN

__all__ = ["replayed_gradient_x_input", "replayed_gradient_x_input_slices"]

# Per recurrent module: weight name -> ((version, address) of the weight, its transpose made
# contiguous). A matrix-vector product reads a contiguous [H, G*H] about a fifth faster than the
# transposed view (4 µs of 19 per step, GRU 256), but copying it per trace would cost more than
# that saves; kept while the weight is unchanged, dropped with the module.
_TRANSPOSED: "weakref.WeakKeyDictionary[torch.nn.RNNBase, dict[str, tuple[tuple[int, int], Tensor]]]" = \
    weakref.WeakKeyDictionary()


def replayed_gradient_x_input(network: SentimentRNN, token_ids: Tensor, target: int,
                              replays: Sequence[CellReplay] | None = None,
                              subword_ids: Tensor | None = None) -> Tensor:
    """∇_{x_t} f · x_t per token [T] for one text token_ids [T], as attribution.gradient_x_input.

    replays: replay_cells(network, token_ids, subword_ids=subword_ids) for every layer, when the
    caller has them (a trace does); otherwise they are computed here.
    """
    return run_slices(replayed_gradient_x_input_slices(network, token_ids, target, replays, subword_ids))


def replayed_gradient_x_input_slices(network: SentimentRNN, token_ids: Tensor, target: int,
                                     replays: Sequence[CellReplay] | None = None,
                                     subword_ids: Tensor | None = None,
                                     steps_per_slice: int | None = None) -> Slices[Tensor]:
    """replayed_gradient_x_input, its backward walk cut every `steps_per_slice` steps of each
    layer and direction (None: never). The tensors it reads are plain (detached), so no graph
    is recorded whether or not gradients are enabled between slices."""
    if network.training or token_ids.device.type != "cpu":
        return gradient_x_input(network, token_ids, target, subword_ids)
    if replays is None:
        replays = replay_cells(network, token_ids, subword_ids=subword_ids)
    config = network.config
    by_layer = [[r for r in replays if r.layer == layer] for layer in range(config.num_layers)]
    if any(len(layer) != config.num_directions for layer in by_layer):
        raise ValueError("replays must cover every layer and direction of the network")
    gradient = _output_gradient(network, by_layer[-1], target)  # [T, H*D] ∂f/∂(top outputs)
    size = config.hidden_size
    for layer in range(config.num_layers - 1, -1, -1):
        suffixes = [f"_l{layer}" + ("_reverse" if index else "") for index in range(config.num_directions)]
        d_gates = []  # [T, G*H] per direction
        for index, (suffix, replay) in enumerate(zip(suffixes, by_layer[layer])):
            d_gates.append((yield from _gate_gradient(network.rnn, config.cell, suffix, replay,
                                                      gradient[:, index * size:(index + 1) * size], steps_per_slice)))
        if layer == 0:
            # ∇_x f · x = Σ_k ∂f/∂a_k (W_ih x)_k, and the replay already holds W_ih x: no
            # product with W_ih needed for the word vectors.
            return sum((d * _projection(replay)).sum(-1) for d, replay in zip(d_gates, by_layer[0]))  # [T]
        # ∂f/∂(this layer's inputs), summed over directions: the layer below's outputs.
        gradient = sum(d @ _plain(getattr(network.rnn, "weight_ih" + suffix))
                       for d, suffix in zip(d_gates, suffixes))  # [T, H*D]
    raise AssertionError("unreachable: layer 0 returns")


def _output_gradient(network: SentimentRNN, top: Sequence[CellReplay], target: int) -> Tensor:
    """∂ target log-odds / ∂ top-layer outputs [T, H*D].

    Pooling "last", "mean" and "max" hand the pooled vector's gradient to known steps and the
    classifier is linear, so those are written out: for one vector, autograd's bookkeeping cost
    ten times this maths. Attention goes through the network's own module under autograd.
    """
    outputs = torch.cat([r.hidden for r in top], dim=-1)  # [T, H*D]
    pooling = network.config.pooling
    if pooling == "attention":
        return _autograd_output_gradient(network, outputs, target)
    size = network.config.hidden_size
    with torch.no_grad():
        if pooling == "last":
            # One unpadded text: the forward direction ends at the last token, the backward one
            # (if any) at the first.
            pooled = torch.cat([outputs[-1, :size], outputs[0, size:]])  # [H*D]
        elif pooling == "mean":
            pooled = outputs.mean(dim=0)  # [H*D]
        else:
            best = outputs.unsqueeze(0).max(dim=1)  # the network's own reduction, so ties pick the same step
            pooled = best.values[0]  # [H*D]
        logits = network.classify_pooled(pooled.unsqueeze(0))[0]  # [C]
        # f = z_c − logsumexp(z_others): ∂f/∂z_c = 1, ∂f/∂z_j = −softmax(z_others)_j.
        others = logits.clone()
        others[target] = float("-inf")
        d_logits = -torch.softmax(others, dim=0)  # [C] 0 at the target
        d_logits[target] = 1.0
        d_pooled = d_logits @ network.classifier.weight / network.config.temperature  # [H*D]
        gradient = torch.zeros_like(outputs)  # [T, H*D]
        if pooling == "last":
            gradient[-1, :size] = d_pooled[:size]
            gradient[0, size:] = d_pooled[size:]
        elif pooling == "mean":
            gradient += d_pooled / len(outputs)
        else:
            gradient.scatter_(0, best.indices, d_pooled.unsqueeze(0))  # each unit's gradient to its max step
    return gradient


def _autograd_output_gradient(network: SentimentRNN, outputs: Tensor, target: int) -> Tensor:
    """_output_gradient through the network's pooling and classifier under autograd: any pooling."""
    with gradients_enabled():
        # clone(): a plain tensor even when the replay was made under inference mode.
        leaf = outputs.unsqueeze(0).clone().requires_grad_()  # [1, T, H*D]
        size = network.config.hidden_size
        # Pooling "last" reads the final state [D, 1, H]: the last token's forward state and the
        # first token's backward one.
        ends = [leaf[0, -1, :size]] + ([leaf[0, 0, size:]] if network.config.bidirectional else [])
        final = torch.stack(ends).unsqueeze(1)  # [D, 1, H]
        lengths = torch.tensor([leaf.shape[1]])
        logits = network.classify_encoded(EncodedSequence(outputs=leaf, final_state=final), lengths)  # [1, C]
        (grad,) = torch.autograd.grad(target_log_odds(logits, target).sum(), leaf)  # [1, T, H*D]
    return grad[0]


def _plain(tensor: Tensor) -> Tensor:
    return tensor.detach()


def _projection(replay: CellReplay) -> Tensor:
    assert replay.input_projection is not None, "replay_cells fills input_projection"
    return _plain(replay.input_projection)  # [T, G*H]


def _gate_gradient(rnn: torch.nn.RNNBase, cell: str, suffix: str, replay: CellReplay, d_hidden: Tensor,
                   steps_per_slice: int | None) -> Slices[Tensor]:
    """∂f/∂(W_ih x_t + b_ih) [T, G*H] of one layer and direction, the gates in PyTorch's order,
    given ∂f/∂h_t from above [T, H] (not through h_{t+1}); a slice ends every `steps_per_slice` steps."""
    w_hh = _recurrent_transposed(rnn, "weight_hh" + suffix)  # [H, G*H]
    hidden = _plain(replay.hidden)  # [T, H]
    steps = hidden.shape[0]
    # The backward pass walks the reading order in reverse: a forward direction from the last
    # token down, a backward direction from the first token up.
    order = range(steps - 1, -1, -1) if replay.direction == DIRECTIONS[0] else range(steps)
    cut = _SliceEnds(steps_per_slice)
    if cell == "rnn":
        return (yield from _elman_backward(hidden, w_hh, d_hidden, order, cut))  # [T, H]
    elif cell == "gru":
        before = _plain(replay.previous(replay.hidden))  # [T, H] h' in reading order
        return (yield from _gru_backward(replay, hidden, before, w_hh, d_hidden, order, cut))  # [T, 3H]
    return (yield from _lstm_backward(replay, w_hh, d_hidden, order, cut))  # [T, 4H]


class _SliceEnds:
    """Counts the steps of a backward walk; `due()` says when a slice should end (every `steps`)."""

    def __init__(self, steps: int | None) -> None:
        self._steps = steps
        self._count = 0

    def due(self) -> bool:
        self._count += 1
        return self._steps is not None and self._count % self._steps == 0


def _recurrent_transposed(rnn: torch.nn.RNNBase, name: str) -> Tensor:
    """W_hh.T [H, G*H], contiguous, from the cache while the weight is unchanged."""
    weight = getattr(rnn, name)  # [G*H, H]
    key = (weight._version, weight.data_ptr())  # an in-place update or a new tensor changes one of them
    cached = _TRANSPOSED.setdefault(rnn, {}).get(name)
    if cached is None or cached[0] != key:
        cached = (key, _plain(weight).T.contiguous())
        _TRANSPOSED[rnn][name] = cached
    return cached[1]


def _elman_backward(hidden: Tensor, w_hh: Tensor, d_hidden: Tensor, order: range, cut: _SliceEnds) -> Slices[Tensor]:
    """∂f/∂a_t [T, H] for h_t = tanh(a_t); w_hh is W_hh.T [H, H]."""
    slope = (1.0 - hidden * hidden).unbind(0)  # T × [H] tanh'
    above = d_hidden.unbind(0)  # T × [H]; unbound once, since indexing a tensor per step costs an op
    recurrent = w_hh  # [H, H]
    rows: list[Tensor] = [hidden[0]] * len(slope)  # placeholders, each row written once below
    carry = torch.zeros_like(hidden[0])  # ∂f/∂h_t through the next step in reading order
    for t in order:
        rows[t] = (above[t] + carry) * slope[t]
        carry = torch.mv(recurrent, rows[t])  # [H]
        if cut.due():
            yield
    return torch.stack(rows)


def _gru_backward(replay: CellReplay, hidden: Tensor, before: Tensor, w_hh: Tensor,
                  d_hidden: Tensor, order: range, cut: _SliceEnds) -> Slices[Tensor]:
    """∂f/∂(W_ih x_t + b_ih) [T, 3H] in gate order r, z, n; w_hh is W_hh.T [H, 3H]."""
    steps, size = hidden.shape
    reset = _plain(replay.gates["reset"])  # [T, H]
    update = _plain(replay.gates["update"])
    assert replay.candidate is not None
    candidate = _plain(replay.candidate)  # [T, H] n_t
    assert replay.recurrent_projection is not None, "replay_cells fills recurrent_projection"
    recurrent_n = _plain(replay.recurrent_projection[:, 2 * size:])  # [T, H] W_hn h' + b_hn, which r scales
    # Every gate's gradient is dh_t times a factor known before the loop starts.
    d_n = (1.0 - update) * (1.0 - candidate * candidate)  # [T, H] ∂h/∂a_n
    d_z = (before - candidate) * update * (1.0 - update)  # ∂h/∂a_z
    d_r = d_n * recurrent_n * reset * (1.0 - reset)  # ∂h/∂a_r
    input_factor = torch.stack([d_r, d_z, d_n], dim=1)  # [T, 3, H]
    recurrent_factor = torch.stack([d_r, d_z, d_n * reset], dim=1).unbind(0)  # T × [3, H] r scales W_hn h'
    keep = update.unbind(0)  # T × [H] ∂h/∂h' directly, through z h'
    above = d_hidden.unbind(0)
    rows: list[Tensor] = [hidden[0]] * steps  # ∂f/∂h_t in full, each row written once below
    walk = list(order)
    d_h = above[walk[0]]  # the step read last: nothing after it
    rows[walk[0]] = d_h
    for later, t in zip(walk, walk[1:]):  # t: the step read just before `later`
        # From above, plus through `later`'s z h' and W_hh h'. addcmul folds two ops into one:
        # at batch 1 each op's overhead is a sizeable part of a step's cost.
        d_h = torch.addmv(torch.addcmul(above[t], d_h, keep[later]), w_hh,
                          (recurrent_factor[later] * d_h).view(-1))  # [H]
        rows[t] = d_h
        if cut.due():
            yield
    return (input_factor * torch.stack(rows).unsqueeze(1)).view(steps, 3 * size)


def _lstm_backward(replay: CellReplay, w_hh: Tensor, d_hidden: Tensor, order: range, cut: _SliceEnds) -> Slices[Tensor]:
    """∂f/∂(gate pre-activations) [T, 4H] in gate order i, f, g, o; w_hh is W_hh.T [H, 4H]."""
    gate_in = _plain(replay.gates["input"])  # [T, H]
    forget = _plain(replay.gates["forget"])
    out = _plain(replay.gates["output"])
    assert replay.candidate is not None and replay.cell is not None
    candidate = _plain(replay.candidate)  # g_t
    cell = _plain(replay.cell)  # c_t
    cell_before = _plain(replay.previous(replay.cell))  # c'
    squashed = torch.tanh(cell)
    steps, size = cell.shape
    to_cell = (out * (1.0 - squashed * squashed)).unbind(0)  # T × [H] ∂h/∂c
    # Pre-activation gradients: i, f, g are dc_t times these, o is dh_t times its own.
    factor = torch.stack([candidate * gate_in * (1.0 - gate_in), cell_before * forget * (1.0 - forget),
                          gate_in * (1.0 - candidate * candidate), squashed * out * (1.0 - out)],
                         dim=1).unbind(0)  # T × [4, H]
    keep = forget.unbind(0)  # ∂c/∂c'
    above = d_hidden.unbind(0)
    recurrent = w_hh  # [H, 4H]
    rows: list[Tensor] = [factor[0]] * steps  # each row written once below
    carry_h = torch.zeros_like(cell[0])
    carry_c = torch.zeros_like(cell[0])
    for t in order:
        d_h = above[t] + carry_h
        d_c = carry_c + d_h * to_cell[t]
        rows[t] = factor[t] * torch.stack((d_c, d_c, d_c, d_h))  # [4, H]
        carry_h = torch.mv(recurrent, rows[t].view(-1))  # [H]
        carry_c = d_c * keep[t]
        if cut.due():
            yield
    return torch.stack(rows).view(steps, 4 * size)
