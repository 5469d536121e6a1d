"""Per-token attributions of one prediction, signed toward a target label, and the memory profile.

Gradient methods differentiate the same forward Predict runs (SentimentRNN.forward_embedded)
with respect to the word vectors. The target function is the target label's log-odds,
log p / (1 − p) = z_c − logsumexp(z_others): the binary logit, invariant to shifting all logits.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from .cells import cell_kind
from .network import EncodedSequence, RecurrentState, SentimentRNN

__all__ = [
    "IntegratedGradients", "MemorySummary", "Slices", "SliceShape", "UNSLICED", "target_log_odds",
    "gradient_x_input", "gauss_legendre", "integrated_gradients", "integrated_gradients_slices", "occlusion",
    "occlusion_slices", "memory_profile", "memory_profile_slices", "summarise_memory", "recurrent_macs_per_token",
    "slice_shape", "walk_steps_per_slice", "run_slices",
]

Result = TypeVar("Result")
# A computation cut into slices: each `yield` is a point where its caller may run other work
# (the server runs Predict batches there) or stop; the generator's return value is the result.
# No torch grad-mode context stays open across a yield: the thread runs other work between slices.
Slices = Generator[None, None, Result]

# A slice budget so large that nothing is cut: the one-pass maths.
UNSLICED = 1 << 62
# Rows a recurrent step takes at about the cost of one: at small batches a step's time goes to
# reading the weights (a 256-unit GRU's are 1.5 MB), not to the rows. Slices are billed at least this.
_ROWS_AT_THE_COST_OF_ONE = 16
# Forward and backward through a recurrence cost about three forwards (the backward about two).
_BACKWARD_COST = 3
# Rows per group of the memory profile at most: bounds memory at rows × T × E floats.
_MEMORY_CHUNK_ROWS = 512


def run_slices(slices: Slices[Result]) -> Result:
    """Run every slice at once and return the result: the unsliced call."""
    while True:
        try:
            next(slices)
        except StopIteration as done:
            return done.value


def recurrent_macs_per_token(network: SentimentRNN) -> int:
    """Multiply-accumulates of one row's recurrence per token, every layer and direction:
    what a trace's slices are budgeted in (the recurrence dominates every attribution)."""
    config = network.config
    gates = len(cell_kind(config.cell).gates)
    size = config.hidden_size
    directions = config.num_directions
    inputs = [config.embedding_dim] + [size * directions] * (config.num_layers - 1)
    return sum(directions * gates * size * (width + size) for width in inputs)


@dataclass(frozen=True)
class SliceShape:
    """How one batched pass over a text is cut: `rows` batch rows for `tokens` time steps per slice."""

    rows: int
    tokens: int


def slice_shape(network: SentimentRNN, total_rows: int, steps: int, slice_macs: int, backward: bool) -> SliceShape:
    """The largest slice within `slice_macs`: as many rows as fit one token's step (a batch's step
    costs little more than one row's), then as many tokens as fit those rows, the state carried
    from one stretch of tokens to the next. A bidirectional network's backward direction starts
    at the end of the text, so its texts are never cut in time."""
    cost = recurrent_macs_per_token(network) * (_BACKWARD_COST if backward else 1)  # one row, one token
    if network.config.bidirectional:
        return SliceShape(rows=max(1, min(total_rows, slice_macs // (cost * steps))), tokens=steps)
    rows = max(1, min(total_rows, slice_macs // cost))
    tokens = slice_macs // (cost * max(rows, _ROWS_AT_THE_COST_OF_ONE))
    return SliceShape(rows=rows, tokens=max(1, min(steps, tokens)))


def target_log_odds(logits: Tensor, target: int) -> Tensor:
    """log p_target / (1 − p_target) for each row of logits [B, C] -> [B]."""
    others = torch.cat([logits[:, :target], logits[:, target + 1:]], dim=1)  # [B, C-1]
    return logits[:, target] - torch.logsumexp(others, dim=1)  # [B]


@contextlib.contextmanager
def gradients_enabled() -> Iterator[None]:
    """Autograd on even inside inference mode; cuDNN's RNN refuses backward in eval mode, so it is off."""
    with torch.inference_mode(False), torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
        yield


def _word_vectors(network: SentimentRNN, token_ids: Tensor, subword_ids: Tensor | None) -> Tensor:
    """The text's input vectors (SentimentRNN.embed) as a plain tensor autograd may use, even if
    called in inference mode."""
    with torch.inference_mode(False), torch.no_grad():
        subwords = subword_ids.clone() if subword_ids is not None else None
        return network.embed(token_ids.clone(), subwords).unsqueeze(0)  # [1, T, E]


def _lengths(rows: int, steps: int) -> Tensor:
    return torch.full((rows,), steps, dtype=torch.int64)  # [B]


def walk_steps_per_slice(network: SentimentRNN, slice_macs: int) -> int | None:
    """Steps per slice of a hand-written step-by-step walk of one text (replay_backward): one row,
    billed like the small batches above. None when `slice_macs` cuts nothing."""
    if slice_macs >= UNSLICED:
        return None
    return max(1, slice_macs // (recurrent_macs_per_token(network) * _ROWS_AT_THE_COST_OF_ONE))


def gradient_x_input(network: SentimentRNN, token_ids: Tensor, target: int,
                     subword_ids: Tensor | None = None) -> Tensor:
    """∇_{x_t} f · x_t per token [T] for one text token_ids [T] (Shrikumar et al. 2016).

    subword_ids [T, K]: the unknown tokens' n-grams (SentimentRNN.embed), here and below; x_t is
    the token's whole input vector, n-grams included.
    """
    with gradients_enabled():
        x = _word_vectors(network, token_ids, subword_ids).clone().requires_grad_()  # [1, T, E]
        f = target_log_odds(network.forward_embedded(x, _lengths(1, x.shape[1])).logits, target)  # [1]
        (grad,) = torch.autograd.grad(f.sum(), x)  # [1, T, E]
    return (grad * x.detach()).sum(-1)[0]  # [T]


@dataclass(frozen=True)
class IntegratedGradients:
    scores: Tensor  # [T]
    logit_difference: float  # f(text) − f(baseline): what the scores should add up to
    completeness_gap: float  # |sum(scores) − logit_difference|


def integrated_gradients(network: SentimentRNN, token_ids: Tensor, target: int, steps: int = 32,
                         subword_ids: Tensor | None = None) -> IntegratedGradients:
    """Integrated gradients from the all-zero word-vector baseline (Sundararajan et al. 2017).

    The path integral uses `steps`-point Gauss-Legendre quadrature (as Captum does by default),
    exact for polynomials of degree 2·steps − 1, so on a smooth path the completeness gap closes
    much faster than with a Riemann sum. All steps run as one batch and one backward pass.
    A plain RNN's path can cross near-jumps (its state flipping between attractors) that no
    fixed set of nodes resolves; the returned gap says so, and more steps help where they can.
    """
    return run_slices(integrated_gradients_slices(network, token_ids, target, steps, subword_ids))


def integrated_gradients_slices(network: SentimentRNN, token_ids: Tensor, target: int, steps: int = 32,
                                subword_ids: Tensor | None = None,
                                slice_macs: int = UNSLICED) -> Slices[IntegratedGradients]:
    """integrated_gradients in slices of at most `slice_macs`: the quadrature nodes in groups, each
    group's text in stretches of tokens. The weighted gradients add up node group by node group
    to what the one batch gives (every node's gradient is independent of the others)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    nodes, weights = gauss_legendre(steps)  # on [-1, 1]
    yield  # a slice of its own: tens of ms the first time a count is asked for
    x = _word_vectors(network, token_ids, subword_ids)  # [1, T, E]
    alphas = torch.tensor((nodes + 1) / 2, dtype=x.dtype, device=x.device)  # [S] in (0, 1)
    quadrature = torch.tensor(weights / 2, dtype=x.dtype, device=x.device)  # [S] summing to 1
    shape = slice_shape(network, steps, x.shape[1], slice_macs, backward=True)
    weighted = torch.zeros_like(x[0])  # [T, E] Σ_s w_s ∇f(α_s x)
    for start in range(0, steps, shape.rows):
        group = slice(start, start + shape.rows)
        path = alphas[group].view(-1, 1, 1) * x  # [R, T, E] baseline + α (x − baseline)

        def weighted_answer(encoded: EncodedSequence, lengths: Tensor, group: slice = group) -> Tensor:
            f = target_log_odds(network.classify_encoded(encoded, lengths), target)  # [R]
            return (f * quadrature[group]).sum()

        grad = yield from _input_gradient_slices(network, path, weighted_answer, shape.tokens)  # [R, T, E]
        weighted += grad.sum(0)
    scores = (weighted * x[0]).sum(-1)  # [T]
    ends = torch.cat([x, torch.zeros_like(x)])  # [2, T, E] the text and the baseline
    encoded = yield from _encode_slices(network, ends, slice_shape(network, 2, x.shape[1], slice_macs, False).tokens)
    with torch.no_grad():
        f_ends = target_log_odds(network.classify_encoded(encoded, _lengths(2, x.shape[1])), target)  # [2]
    difference = float(f_ends[0] - f_ends[1])
    return IntegratedGradients(scores=scores, logit_difference=difference,
                               completeness_gap=abs(float(scores.sum()) - difference))


@functools.lru_cache(maxsize=64)
def gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [-1, 1], kept: numpy's eigenvalue solve costs more
    than a slice of the trace it is for (tens of ms at 256 nodes), so it is paid once per count."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    nodes.setflags(write=False)
    weights.setflags(write=False)
    return nodes, weights


def occlusion(network: SentimentRNN, token_ids: Tensor, target: int,
              subword_ids: Tensor | None = None) -> Tensor:
    """f(text) − f(text without token t) per token [T]; all T shortened texts run as one batch.

    A one-token text without its token is the empty text: the classifier on the zero state.
    The texts are cut as input vectors, so each remaining token keeps its n-grams.
    """
    return run_slices(occlusion_slices(network, token_ids, target, subword_ids))


def occlusion_slices(network: SentimentRNN, token_ids: Tensor, target: int, subword_ids: Tensor | None = None,
                     slice_macs: int = UNSLICED) -> Slices[Tensor]:
    """occlusion in slices of at most `slice_macs`: the shortened texts in groups of rows, each
    group in stretches of tokens."""
    x = _word_vectors(network, token_ids, subword_ids)  # [1, T, E]
    count = x.shape[1]
    encoded = yield from _encode_slices(network, x, slice_shape(network, 1, count, slice_macs, backward=False).tokens)
    with torch.no_grad():
        full = target_log_odds(network.classify_encoded(encoded, _lengths(1, count)), target)  # [1]
        if count == 1:
            zero = torch.zeros(1, network.output_size, device=x.device)  # [1, H*D]
            return full - target_log_odds(network.classify_pooled(zero), target)  # [1]
    keep = ~torch.eye(count, dtype=torch.bool, device=x.device)  # [T, T] row t drops t
    shape = slice_shape(network, count, count - 1, slice_macs, backward=False)
    without: list[Tensor] = []
    for start in range(0, count, shape.rows):
        rows = keep[start:start + shape.rows]  # [R, T]
        shortened = x.expand(len(rows), -1, -1)[rows].view(len(rows), count - 1, -1)  # [R, T-1, E]
        encoded = yield from _encode_slices(network, shortened, shape.tokens)
        with torch.no_grad():
            without.append(target_log_odds(network.classify_encoded(encoded, _lengths(len(rows), count - 1)),
                                           target))  # [R]
    return full - torch.cat(without)  # [T]


def memory_profile(network: SentimentRNN, token_ids: Tensor,
                   layers: Sequence[int], subword_ids: Tensor | None = None) -> dict[tuple[int, int], Tensor]:
    """‖∂h_final / ∂x_t‖_F per token for each (layer, direction index) of `layers`.

    h_final is that layer and direction's state after its last step (the forward direction's
    after the last token, the backward one's after reading back to the first): the memory a
    layer hands on. Exact Frobenius norms: the text is repeated once per hidden unit, and one
    backward pass gives every unit's gradient row.
    """
    return run_slices(memory_profile_slices(network, token_ids, layers, subword_ids))


def memory_profile_slices(network: SentimentRNN, token_ids: Tensor, layers: Sequence[int],
                          subword_ids: Tensor | None = None,
                          slice_macs: int = UNSLICED) -> Slices[dict[tuple[int, int], Tensor]]:
    """memory_profile in slices of at most `slice_macs`: the units' rows in groups, each group's
    text in stretches of tokens."""
    size = network.config.hidden_size
    directions = network.config.num_directions
    x = _word_vectors(network, token_ids, subword_ids)  # [1, T, E]
    steps = x.shape[1]
    # (layer, direction, unit) per row.
    rows = [(layer, direction, unit) for layer in layers for direction in range(directions) for unit in range(size)]
    squared = {(layer, direction): torch.zeros(steps, dtype=x.dtype, device=x.device)
               for layer in layers for direction in range(directions)}  # -> [T]
    # Rows per group also bound memory: a group holds rows × T × E floats and its graph.
    shape = slice_shape(network, min(len(rows), _MEMORY_CHUNK_ROWS), steps, slice_macs, backward=True)
    for start in range(0, len(rows), shape.rows):
        chunk = rows[start:start + shape.rows]
        state_index = torch.tensor([layer * directions + direction for layer, direction, _ in chunk], device=x.device)
        unit_index = torch.tensor([unit for _, _, unit in chunk], device=x.device)
        row_index = torch.arange(len(chunk), device=x.device)

        def picked_units(encoded: EncodedSequence, lengths: Tensor, state_index: Tensor = state_index,
                         unit_index: Tensor = unit_index, row_index: Tensor = row_index) -> Tensor:
            final = encoded.final_state
            h_final = final[0] if isinstance(final, tuple) else final  # [L*D, R, H]
            return h_final[state_index, row_index, unit_index].sum()  # Σ_r picked_r: row r's gradient is its own

        grad = yield from _input_gradient_slices(network, x.expand(len(chunk), -1, -1), picked_units,
                                                 shape.tokens)  # [R, T, E] row r: ∂ picked_r / ∂x
        per_row = grad.pow(2).sum(-1)  # [R, T]
        for row, (layer, direction, _) in enumerate(chunk):
            squared[(layer, direction)] += per_row[row]
    return {key: value.sqrt() for key, value in squared.items()}


def _stretches(steps: int, tokens: int) -> list[tuple[int, int]]:
    return [(start, min(start + tokens, steps)) for start in range(0, steps, tokens)]


def _state_parts(state: RecurrentState) -> tuple[Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def _encode_slices(network: SentimentRNN, inputs: Tensor, tokens: int) -> Slices[EncodedSequence]:
    """network.encode_embedded(inputs [B, T, E]) without gradients, `tokens` steps per slice, the
    state carried from one stretch to the next (a unidirectional recurrence: the same steps)."""
    rows, steps = inputs.shape[:2]
    outputs: list[Tensor] = []
    state: RecurrentState | None = None
    for start, end in _stretches(steps, tokens):
        with torch.no_grad():
            encoded = network.encode_embedded(inputs[:, start:end], _lengths(rows, end - start), state)
        outputs.append(encoded.outputs)  # [B, t, H*D]
        state = encoded.final_state
        yield
    assert state is not None
    return EncodedSequence(outputs=torch.cat(outputs, dim=1), final_state=state)


def _input_gradient_slices(network: SentimentRNN, inputs: Tensor,
                           answer: Callable[[EncodedSequence, Tensor], Tensor], tokens: int) -> Slices[Tensor]:
    """∂ answer(encode_embedded(inputs)) / ∂inputs [B, T, E], forward and backward `tokens` steps
    per slice (backpropagation through time, cut exactly: each stretch's backward pass takes the
    gradient of the state it handed on, and gives the gradient of the state it started from).

    answer(encoded, lengths) -> a scalar: what is differentiated (its rows independent)."""
    rows, steps = inputs.shape[:2]
    stretches = _stretches(steps, tokens)
    leaves: list[tuple[Tensor, tuple[Tensor, ...]]] = []  # per stretch: its inputs and its starting state
    encoded_stretches: list[EncodedSequence] = []
    state: RecurrentState | None = None
    for start, end in stretches:
        with gradients_enabled():
            piece = inputs[:, start:end].detach().clone().requires_grad_()  # [B, t, E]
            start_state = None if state is None else _leaf_state(state)
            encoded = network.encode_embedded(piece, _lengths(rows, end - start), start_state)
        leaves.append((piece, () if start_state is None else _state_parts(start_state)))
        encoded_stretches.append(encoded)
        state = encoded.final_state
        yield
    assert state is not None
    # The answer from leaves standing for all the recurrence's outputs and its final state.
    with gradients_enabled():
        outputs = torch.cat([e.outputs.detach() for e in encoded_stretches], dim=1).requires_grad_()  # [B, T, H*D]
        final = _leaf_state(state)
        parts = (outputs, *_state_parts(final))
        grads = torch.autograd.grad(answer(EncodedSequence(outputs=outputs, final_state=final), _lengths(rows, steps)),
                                    parts, allow_unused=True)
    d_outputs, *d_state = [torch.zeros_like(p) if g is None else g for p, g in zip(parts, grads)]
    pieces: list[Tensor] = []  # ∂answer/∂inputs per stretch, last stretch first
    for start, end in reversed(stretches):
        # Popped, so that each stretch's graph is freed as soon as its backward pass has run.
        piece, start_parts = leaves.pop()
        encoded = encoded_stretches.pop()
        with gradients_enabled():
            grads = torch.autograd.grad((encoded.outputs, *_state_parts(encoded.final_state)),
                                        (piece, *start_parts), (d_outputs[:, start:end], *d_state),
                                        allow_unused=True)
        pieces.append(grads[0])  # [B, t, E]
        d_state = [torch.zeros_like(p) if g is None else g for p, g in zip(start_parts, grads[1:])]
        yield
    return torch.cat(pieces[::-1], dim=1)


def _leaf_state(state: RecurrentState) -> RecurrentState:
    """A copy of a recurrent state that gradients stop at and are asked of."""
    if isinstance(state, tuple):
        return tuple(part.detach().requires_grad_() for part in state)  # type: ignore[return-value]
    return state.detach().requires_grad_()


@dataclass(frozen=True)
class MemorySummary:
    recency: float  # share of the total influence carried by the last `last_tokens` tokens
    decay_per_token: float  # geometric fit of influence against distance from the end
    last_tokens: int  # ceil(T / 3)


def summarise_memory(memory: Sequence[float]) -> MemorySummary:
    """Recency share of the last third and a geometric decay fit, for one memory curve."""
    count = len(memory)
    last = math.ceil(count / 3)
    values = np.asarray(memory, dtype=np.float64)
    total = values.sum()
    recency = float(values[count - last:].sum() / total) if total > 0 else 0.0
    if count < 2:
        return MemorySummary(recency=recency, decay_per_token=1.0, last_tokens=last)
    distance = np.arange(count - 1, -1, -1, dtype=np.float64)  # tokens from the end
    # log m = a + b·distance; m shrinks by e^b per token of distance. The floor keeps log finite.
    slope = np.polyfit(distance, np.log(np.maximum(values, 1e-30)), 1)[0]
    return MemorySummary(recency=recency, decay_per_token=float(np.exp(slope)), last_tokens=last)
