"""Per-token attributions of one prediction, signed toward a target label, and the memory profile.

Gradient methods differentiate the same forward Predict runs (SentimentRNN.forward_embedded)
with respect to the word vectors. The target function is the target label's log-odds,
log p / (1 − p) = z_c − logsumexp(z_others): the binary logit, invariant to shifting all logits.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .network import SentimentRNN

__all__ = [
    "IntegratedGradients", "MemorySummary", "target_log_odds", "gradient_x_input",
    "integrated_gradients", "occlusion", "memory_profile", "summarise_memory",
]

# Rows per backward pass of the memory profile: bounds memory at rows × T × E floats.
_MEMORY_CHUNK_ROWS = 512


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
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    nodes, weights = np.polynomial.legendre.leggauss(steps)  # on [-1, 1]
    x = _word_vectors(network, token_ids, subword_ids)  # [1, T, E]
    alphas = torch.tensor((nodes + 1) / 2, dtype=x.dtype, device=x.device)  # [S] in (0, 1)
    quadrature = torch.tensor(weights / 2, dtype=x.dtype, device=x.device)  # [S] summing to 1
    with gradients_enabled():
        path = (alphas.view(-1, 1, 1) * x).requires_grad_()  # [S, T, E] baseline + α (x − baseline)
        f = target_log_odds(network.forward_embedded(path, _lengths(steps, x.shape[1])).logits, target)  # [S]
        (grad,) = torch.autograd.grad((f * quadrature).sum(), path)  # [S, T, E] already weighted
    scores = (grad.sum(0) * x[0]).sum(-1)  # [T]
    with torch.no_grad():
        ends = torch.cat([x, torch.zeros_like(x)])  # [2, T, E] the text and the baseline
        f_ends = target_log_odds(network.forward_embedded(ends, _lengths(2, x.shape[1])).logits, target)  # [2]
    difference = float(f_ends[0] - f_ends[1])
    return IntegratedGradients(scores=scores, logit_difference=difference,
                               completeness_gap=abs(float(scores.sum()) - difference))


def occlusion(network: SentimentRNN, token_ids: Tensor, target: int,
              subword_ids: Tensor | None = None) -> Tensor:
    """f(text) − f(text without token t) per token [T]; all T shortened texts run as one batch.

    A one-token text without its token is the empty text: the classifier on the zero state.
    The texts are cut as input vectors, so each remaining token keeps its n-grams.
    """
    x = _word_vectors(network, token_ids, subword_ids)  # [1, T, E]
    count = x.shape[1]
    with torch.no_grad():
        full = target_log_odds(network.forward_embedded(x, _lengths(1, count)).logits, target)  # [1]
        if count == 1:
            zero = torch.zeros(1, network.output_size, device=x.device)  # [1, H*D]
            return full - target_log_odds(network.classify_pooled(zero), target)  # [1]
        keep = ~torch.eye(count, dtype=torch.bool, device=x.device)  # [T, T] row t drops t
        shortened = x.expand(count, -1, -1)[keep].view(count, count - 1, -1)  # [T, T-1, E]
        without = target_log_odds(network.forward_embedded(shortened, _lengths(count, count - 1)).logits, target)  # [T]
    return full - without  # [T]


def memory_profile(network: SentimentRNN, token_ids: Tensor,
                   layers: Sequence[int], subword_ids: Tensor | None = None) -> dict[tuple[int, int], Tensor]:
    """‖∂h_final / ∂x_t‖_F per token for each (layer, direction index) of `layers`.

    h_final is that layer and direction's state after its last step (the forward direction's
    after the last token, the backward one's after reading back to the first): the memory a
    layer hands on. Exact Frobenius norms: the text is repeated once per hidden unit, and one
    backward pass gives every unit's gradient row.
    """
    size = network.config.hidden_size
    directions = network.config.num_directions
    x = _word_vectors(network, token_ids, subword_ids)  # [1, T, E]
    steps = x.shape[1]
    # (layer, direction, unit) per row; chunked so huge states do not need one huge batch.
    rows = [(layer, direction, unit) for layer in layers for direction in range(directions) for unit in range(size)]
    squared = {(layer, direction): torch.zeros(steps, dtype=x.dtype, device=x.device)
               for layer in layers for direction in range(directions)}  # -> [T]
    for start in range(0, len(rows), _MEMORY_CHUNK_ROWS):
        chunk = rows[start:start + _MEMORY_CHUNK_ROWS]
        state_index = torch.tensor([layer * directions + direction for layer, direction, _ in chunk], device=x.device)
        unit_index = torch.tensor([unit for _, _, unit in chunk], device=x.device)
        with gradients_enabled():
            repeated = x.expand(len(chunk), -1, -1).clone().requires_grad_()  # [R, T, E]
            final = network.encode_embedded(repeated, _lengths(len(chunk), steps)).final_state
            h_final = final[0] if isinstance(final, tuple) else final  # [L*D, R, H]
            picked = h_final[state_index, torch.arange(len(chunk), device=x.device), unit_index]  # [R]
            (grad,) = torch.autograd.grad(picked.sum(), repeated)  # [R, T, E] row r: ∂ picked_r / ∂x
        per_row = grad.pow(2).sum(-1)  # [R, T]
        for row, (layer, direction, _) in enumerate(chunk):
            squared[(layer, direction)] += per_row[row]
    return {key: value.sqrt() for key, value in squared.items()}


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
