"""Gradient × input by a hand-written backward pass through the replayed recurrence.

Why: on CPU, autograd's backward through nn.GRU / nn.LSTM / nn.RNN re-records the recurrence
step by step and pays PyTorch's per-op overhead many times per step. A trace has already
replayed every gate of every step (cell_replay.replay_cells), and with the gates known the
backward pass is one vector-matrix product per step plus elementwise work done for all steps at
once: several times faster than autograd on the shipped GRU (bench/trace_backward.py,
docs/performance.md#trace-hand-written-backward). Each cell's derivative is written once, beside
its step equations, as `CellKind.backward` (model/cells.py); this module chains the layers and
directions, the pooling and the classifier. Pooling "last", "mean", "max" and the linear
classifier are differentiated by hand; attention pooling goes through the network's own module
under autograd. The result equals attribution.gradient_x_input (a test holds every cell, depth,
direction and pooling to it).

The loop stays in torch: numpy's matrix-vector product is no faster on one thread, and its
OpenBLAS starts its own threads, which ignore torch.set_num_threads and, on a shared two-core
machine, made a trace several times slower by fighting the server's torch thread.

Falls back to autograd explicitly for what the hand-written pass does not cover: a network in
training mode (dropout would be active) and any device other than the CPU (there the fused
kernels' backward is fast and the per-step loop would launch a kernel per op).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .attribution import Slices, gradient_x_input, gradients_enabled, run_slices, target_log_odds
from .cell_replay import DIRECTIONS, CellReplay, replay_cells
from .cells import CellWeights, layer_weights
from .network import EncodedSequence, SentimentRNN

__all__ = ["replayed_gradient_x_input", "replayed_gradient_x_input_slices"]

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
        weights = [layer_weights(network.rnn, layer, index) for index in range(config.num_directions)]
        d_gates = []  # [T, G*H] per direction
        for index, replay in enumerate(by_layer[layer]):
            d_gates.append((yield from _gate_gradient(weights[index], replay,
                                                      gradient[:, index * size:(index + 1) * size], steps_per_slice)))
        if layer == 0:
            # ∇_x f · x = Σ_k ∂f/∂a_k (W_ih x)_k, and the replay already holds W_ih x: no
            # product with W_ih needed for the word vectors.
            return sum((d * _projection(replay)).sum(-1) for d, replay in zip(d_gates, by_layer[0]))  # [T]
        # ∂f/∂(this layer's inputs), summed over directions: the layer below's outputs.
        gradient = sum(d @ _plain(w.input) for d, w in zip(d_gates, weights))  # [T, H*D]
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


def _gate_gradient(weights: CellWeights, replay: CellReplay, d_hidden: Tensor,
                   steps_per_slice: int | None) -> Slices[Tensor]:
    """∂f/∂(W_ih x_t + b_ih) [T, G*H] of one layer and direction, the gates in PyTorch's order,
    given ∂f/∂h_t from above [T, H] (not through h_{t+1}); a slice ends every `steps_per_slice` steps."""
    steps = replay.hidden.shape[0]
    # The backward pass walks the reading order in reverse: a forward direction from the last
    # token down, a backward direction from the first token up.
    order = range(steps - 1, -1, -1) if replay.direction == DIRECTIONS[0] else range(steps)
    # W_hh.T as a view: a contiguous copy kept between calls was no faster beyond the spread
    # (docs/performance.md#trace-hand-written-backward), and a cache is state to keep in step.
    walk = replay.kind.backward(replay.steps(), _plain(weights.recurrent).T, d_hidden, order)
    walked = 0
    while True:
        try:
            next(walk)
        except StopIteration as done:
            return done.value
        walked += 1
        if steps_per_slice is not None and walked % steps_per_slice == 0:
            yield
