"""Each pooling written once: how a network turns its per-step outputs into one vector to classify.

A pooling is a running summary of the outputs read so far, kept in a `PoolCarry`:

    last       the latest output
    mean       a running sum and a count
    max        a running element-wise maximum
    attention  a running softmax (Milakov & Gimelshein 2018, arXiv:1805.02867): the largest score
               m so far, Σ exp(s − m) and Σ exp(s − m)·h; a larger score rescales both by exp(m_old − m)

Every form the code needs comes from that one definition:

    advance(empty_carry(...), outputs, lengths)   the batch form (Predict: `pool`)
    advance(..., steps=True)                       every prefix's pooled vector (Trace: `pool_prefixes`)
    advance(carry, chunk, ...) then read(carry)    a stream that receives its text in chunks
    advance_arrays(...)                            the same running form on numpy arrays (a stream's
                                                   small batches, where torch's cost per op dominates)

and each pooling's ONNX nodes sit beside its torch form in the same table (`POOLINGS_BY_NAME`), so a
new pooling is one class here.

Reading a carry that has seen nothing gives zeros: the classifier's "no evidence yet" answer,
which is also what a trace reports as its baseline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

__all__ = ["ScoresFn", "PoolCarry", "Pooling", "POOLINGS_BY_NAME", "OnnxPoolingInputs",
           "empty_carry", "advance", "advance_arrays", "read", "pool", "pool_prefixes", "stack_carries"]

# Attention's raw score per step: outputs [B, T, H] -> scores [B, T] (calling the network's AdditiveAttention).
ScoresFn = Callable[[Tensor], Tensor]

_NEG_INF = float("-inf")

Array = Any  # a torch Tensor or a numpy ndarray: the running form is written once over both


class _Ops:
    """The few array operations the running form uses, under one spelling for torch and numpy: each
    pooling's chunk update and read are written once over these, so the numpy form a stream's small
    batches run on (advance_arrays: no torch per-op cost) is the same definition as torch's."""

    def __init__(self, xp: Any) -> None:
        self.xp = xp
        self.where, self.maximum, self.exp, self.isneginf = xp.where, xp.maximum, xp.exp, xp.isneginf

    def sum(self, values: Array, axis: int) -> Array:
        return self.xp.sum(values, axis=axis)

    def amax(self, values: Array, axis: int) -> Array:
        return self.xp.amax(values, axis=axis)

    def arange(self, count: int, like: Array) -> Array:
        return torch.arange(count, device=like.device) if self.xp is torch else np.arange(count)

    def cast(self, values: Array, like: Array) -> Array:
        """values in like's dtype."""
        return values.to(like.dtype) if self.xp is torch else values.astype(like.dtype)


_TORCH = _Ops(torch)
_NUMPY = _Ops(np)


@dataclass(frozen=True)
class PoolCarry:
    """What a pooling remembers of the outputs it has read, per row. Fields a pooling does not use are None."""

    pooling: str  # a key of POOLINGS_BY_NAME
    count: Tensor  # [B] int64 outputs read so far
    last: Tensor | None = None  # [B, H] "last": the latest output (zeros before any)
    total: Tensor | None = None  # [B, H] "mean": Σ h
    maximum: Tensor | None = None  # [B, H] "max": running max (-inf before any)
    score_max: Tensor | None = None  # [B] "attention": m, the largest score so far (-inf before any)
    score_sum: Tensor | None = None  # [B] "attention": Σ exp(s − m)
    weighted: Tensor | None = None  # [B, H] "attention": Σ exp(s − m)·h

    def tensors(self) -> dict[str, Tensor]:
        """The fields this pooling uses, by name (count included)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "pooling" and getattr(self, f.name) is not None}

    def rows(self, index: Tensor | slice | int) -> PoolCarry:
        """The carry of some rows: index as for tensor[index] (an int keeps a row axis of one)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return dataclasses.replace(self, **{name: value[index] for name, value in self.tensors().items()})

    def nbytes(self) -> int:
        """Bytes held by the tensors of this carry."""
        return sum(value.element_size() * value.nelement() for value in self.tensors().values())


def stack_carries(carries: list[PoolCarry]) -> PoolCarry:
    """One carry of all rows of `carries` (same pooling and width), in order."""
    first = carries[0]
    if any(c.pooling != first.pooling for c in carries):
        raise ValueError(f"cannot stack carries of poolings {sorted({c.pooling for c in carries})}")
    names = first.tensors().keys()
    return dataclasses.replace(first, **{name: torch.cat([getattr(c, name) for c in carries]) for name in names})


@dataclass(frozen=True)
class OnnxPoolingInputs:
    """The graph values a pooling's ONNX nodes read (names in the graph being built)."""

    by_row: str  # [B, T, D*H] top-layer outputs, batch-major
    mask: str  # [B, T] bool, True at real tokens
    lengths: str  # [B, 1] float, tokens per row
    ends: str  # [B, D*H] top layer's final state per direction (Y_h flattened): "last"'s answer
    attention: Any = None  # the network's AdditiveAttention (weights read as arrays), pooling "attention"


class OnnxGraph(Protocol):
    """What a pooling's ONNX builder needs of model/onnx_export.py's graph under construction."""

    def constant(self, hint: str, value: np.ndarray) -> str: ...

    def one(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs: Any) -> str: ...


class Pooling:
    """One pooling: its carry's fields, how a chunk of outputs advances them, how to read them, its ONNX nodes."""

    name: str

    def start(self, batch: int, size: int, dtype: torch.dtype, device: torch.device) -> dict[str, Tensor]:
        raise NotImplementedError

    def advance(self, carry: PoolCarry, outputs: Tensor, mask: Tensor, lengths: Tensor,
                scores_fn: ScoresFn | None, steps: bool) -> tuple[dict[str, Tensor], Tensor | None]:
        """New carry fields (count excluded) after outputs [B, T, H] (mask [B, T]), and with `steps`
        the pooled vector after every step [B, T, H] (past a row's length: its last)."""
        raise NotImplementedError

    def read(self, carry: PoolCarry) -> Tensor:
        """The pooled vector [B, H]; zeros for a row that has read nothing."""
        return self.pooled(_TORCH, carry.tensors(), carry.count)

    def chunk(self, ops: _Ops, fields: dict[str, Array], outputs: Array, mask: Array, lengths: Array,
              scores: Array | None) -> dict[str, Array]:
        """The running form, once for torch and numpy: new carry fields (count excluded) after outputs
        [B, T, H] (mask [B, T], lengths [B]); scores [B, T]: attention's raw scores, else None."""
        raise NotImplementedError

    def pooled(self, ops: _Ops, fields: dict[str, Array], count: Array) -> Array:
        """The pooled vector [B, H] of carry fields after `count` [B] outputs; zeros where count is 0."""
        raise NotImplementedError

    def onnx_nodes(self, graph: OnnxGraph, inputs: OnnxPoolingInputs) -> str:
        """This pooling as ONNX nodes over a whole padded batch: the pooled vector [B, D*H]."""
        raise NotImplementedError


class _Last(Pooling):
    """The classifier reads the latest state: the RNN story (what the memory holds at the end)."""

    name = "last"

    def start(self, batch, size, dtype, device):
        return {"last": torch.zeros(batch, size, dtype=dtype, device=device)}

    def chunk(self, ops, fields, outputs, mask, lengths, scores):
        end = ops.where(lengths > 0, lengths - 1, 0)  # [B] index of each row's last real step
        latest = outputs[ops.arange(len(end), outputs), end]  # [B, H]
        return {"last": ops.where((lengths > 0)[:, None], latest, fields["last"])}  # [B, H]

    def pooled(self, ops, fields, count):
        return fields["last"]

    def advance(self, carry, outputs, mask, lengths, scores_fn, steps):
        assert carry.last is not None
        length = mask.shape[1]
        end = (lengths.to(outputs.device) - 1).clamp(min=0)  # [B] index of each row's last real step
        fields = self.chunk(_TORCH, carry.tensors(), outputs, mask, lengths.to(outputs.device), None)
        per_step = None
        if steps:
            positions = torch.arange(length, device=outputs.device).unsqueeze(0)  # [1, T]
            held = torch.minimum(positions, end.unsqueeze(-1))  # [B, T] past a row's end: its end
            per_step = outputs.gather(1, held.unsqueeze(-1).expand(-1, -1, outputs.shape[-1]))  # [B, T, H]
            per_step = torch.where((lengths.to(outputs.device) > 0).view(-1, 1, 1), per_step, carry.last.unsqueeze(1))
        return fields, per_step

    def onnx_nodes(self, graph, inputs):
        return inputs.ends


class _Mean(Pooling):
    """The mean of all states: every word counts the same, whatever its position."""

    name = "mean"

    def start(self, batch, size, dtype, device):
        return {"total": torch.zeros(batch, size, dtype=dtype, device=device)}

    def chunk(self, ops, fields, outputs, mask, lengths, scores):
        masked = ops.where(mask[:, :, None], outputs, 0.0)  # [B, T, H] padding adds nothing
        return {"total": fields["total"] + ops.sum(masked, axis=1)}  # [B, H]

    def pooled(self, ops, fields, count):
        total = fields["total"]
        return total / ops.cast(ops.where(count > 0, count, 1), total)[:, None]  # [B, H] empty: 0 / 1

    def advance(self, carry, outputs, mask, lengths, scores_fn, steps):
        assert carry.total is not None
        fields = self.chunk(_TORCH, carry.tensors(), outputs, mask, lengths, None)
        per_step = None
        if steps:
            masked = outputs.masked_fill(~mask.unsqueeze(-1), 0.0)  # [B, T, H]
            running = carry.total.unsqueeze(1) + masked.cumsum(dim=1)  # [B, T, H]
            counts = carry.count.unsqueeze(-1) + mask.cumsum(dim=1)  # [B, T]
            per_step = running / counts.clamp(min=1).to(outputs.dtype).unsqueeze(-1)  # [B, T, H]
        return fields, per_step

    def onnx_nodes(self, graph, inputs):
        # Padded steps must count as zero whatever the runtime leaves in Y there.
        mask3 = graph.one("Unsqueeze", [inputs.mask, graph.constant("axis_last", np.array([-1], dtype=np.int64))])
        masked = graph.one("Where", [mask3, inputs.by_row, graph.constant("zero_f", np.array(0.0, dtype=np.float32))])
        total = graph.one("ReduceSum", [masked, graph.constant("axis1", np.array([1], dtype=np.int64))], keepdims=0)
        return graph.one("Div", [total, inputs.lengths])  # [B, D*H]


class _Max(Pooling):
    """The element-wise maximum over states: each unit reports its strongest moment."""

    name = "max"

    def start(self, batch, size, dtype, device):
        return {"maximum": torch.full((batch, size), _NEG_INF, dtype=dtype, device=device)}

    def chunk(self, ops, fields, outputs, mask, lengths, scores):
        if not outputs.shape[1]:
            return {"maximum": fields["maximum"]}
        masked = ops.where(mask[:, :, None], outputs, _NEG_INF)  # [B, T, H] padding never wins
        return {"maximum": ops.maximum(fields["maximum"], ops.amax(masked, axis=1))}  # [B, H]

    def pooled(self, ops, fields, count):
        return ops.where((count > 0)[:, None], fields["maximum"], 0.0)  # [B, H] empty: zeros, not -inf

    def advance(self, carry, outputs, mask, lengths, scores_fn, steps):
        assert carry.maximum is not None
        fields = self.chunk(_TORCH, carry.tensors(), outputs, mask, lengths, None)
        per_step = None
        if steps:
            masked = outputs.masked_fill(~mask.unsqueeze(-1), _NEG_INF)  # [B, T, H]
            per_step = torch.maximum(carry.maximum.unsqueeze(1), masked.cummax(dim=1).values)  # [B, T, H]
        return fields, per_step

    def onnx_nodes(self, graph, inputs):
        mask3 = graph.one("Unsqueeze", [inputs.mask, graph.constant("axis_last", np.array([-1], dtype=np.int64))])
        masked = graph.one("Where", [mask3, inputs.by_row, graph.constant("neg_inf", np.array(-np.inf, dtype=np.float32))])
        return graph.one("ReduceMax", [masked], axes=[1], keepdims=0)  # [B, D*H]


class _Attention(Pooling):
    """Additive attention over all states (Bahdanau et al. 2015, arXiv:1409.0473): softmax(scores)·h,
    kept as a running softmax so that it can go on with the next chunk."""

    name = "attention"

    def start(self, batch, size, dtype, device):
        return {"score_max": torch.full((batch,), _NEG_INF, dtype=dtype, device=device),
                "score_sum": torch.zeros(batch, dtype=dtype, device=device),
                "weighted": torch.zeros(batch, size, dtype=dtype, device=device)}

    def chunk(self, ops, fields, outputs, mask, lengths, scores):
        assert scores is not None
        old_max = fields["score_max"]  # [B]
        scores = ops.where(mask, scores, _NEG_INF)  # [B, T] padding never gets weight
        score_max = ops.maximum(old_max, ops.amax(scores, axis=1)) if outputs.shape[1] else old_max  # [B]
        rescale = _rescale(ops, old_max, score_max)  # [B] exp(m_old − m), 0 before any score
        weights = _exp_below(ops, scores, score_max[:, None])  # [B, T] exp(s − m), 0 at padding
        return {"score_max": score_max,
                "score_sum": fields["score_sum"] * rescale + ops.sum(weights, axis=1),  # [B]
                "weighted": fields["weighted"] * rescale[:, None] + (weights[:, None, :] @ outputs)[:, 0]}  # [B, H]

    def pooled(self, ops, fields, count):
        return _safe_divide(ops, fields["weighted"], fields["score_sum"][:, None])  # [B, H]

    def advance(self, carry, outputs, mask, lengths, scores_fn, steps):
        assert carry.score_max is not None and carry.score_sum is not None and carry.weighted is not None
        if scores_fn is None:
            raise ValueError("attention pooling needs the network's scores_fn (its AdditiveAttention)")
        raw = scores_fn(outputs)  # [B, T]
        fields = self.chunk(_TORCH, carry.tensors(), outputs, mask, lengths, raw)
        per_step = None
        if steps:
            scores = raw.masked_fill(~mask, _NEG_INF)  # [B, T]
            # Prefix t's softmax runs over the carry plus steps 0..t with its own maximum m_t.
            step_max = torch.maximum(carry.score_max.unsqueeze(-1), scores.cummax(dim=1).values)  # [B, T]
            length = scores.shape[1]
            upto = torch.ones(length, length, dtype=torch.bool, device=scores.device).tril()  # [T, T] j <= t
            prefix_scores = scores.unsqueeze(1).masked_fill(~upto, _NEG_INF)  # [B, T, T] row t: steps j <= t
            prefix_weights = _exp_below(_TORCH, prefix_scores, step_max.unsqueeze(-1))  # [B, T, T]
            step_rescale = _rescale(_TORCH, carry.score_max.unsqueeze(-1), step_max)  # [B, T]
            sums = carry.score_sum.unsqueeze(-1) * step_rescale + prefix_weights.sum(dim=-1)  # [B, T]
            sums_h = carry.weighted.unsqueeze(1) * step_rescale.unsqueeze(-1) + torch.bmm(prefix_weights, outputs)
            per_step = _safe_divide(_TORCH, sums_h, sums.unsqueeze(-1))  # [B, T, H]
        return fields, per_step

    def onnx_nodes(self, graph, inputs):
        attention = inputs.attention
        assert attention is not None

        def array(tensor: Tensor) -> np.ndarray:
            return tensor.detach().to("cpu", torch.float32).numpy()

        project = graph.constant("Wp", array(attention.project.weight).T)
        projected = graph.one("Add", [graph.one("MatMul", [inputs.by_row, project]),
                                      graph.constant("bp", array(attention.project.bias))])  # [B, T, D*H]
        scores = graph.one("MatMul", [graph.one("Tanh", [projected]),
                                      graph.constant("v", array(attention.score.weight).T)])  # [B, T, 1]
        scores = graph.one("Squeeze", [scores, graph.constant("axis_last", np.array([-1], dtype=np.int64))])  # [B, T]
        scores = graph.one("Where", [inputs.mask, scores, graph.constant("neg_inf", np.array(-np.inf, dtype=np.float32))])
        weights = graph.one("Softmax", [scores], axis=-1)  # [B, T]
        weights = graph.one("Unsqueeze", [weights, graph.constant("axis1", np.array([1], dtype=np.int64))])  # [B, 1, T]
        return graph.one("Squeeze", [graph.one("MatMul", [weights, inputs.by_row]),
                                     graph.constant("axis1", np.array([1], dtype=np.int64))])  # [B, D*H]


def _rescale(ops: _Ops, old_max: Array, new_max: Array) -> Array:
    """exp(old − new), and 0 while old is -inf (nothing read: also where new is -inf, where exp gives NaN)."""
    return ops.where(ops.isneginf(old_max), 0.0, ops.exp(old_max - new_max))


def _exp_below(ops: _Ops, scores: Array, maximum: Array) -> Array:
    """exp(scores − maximum) with -inf scores giving 0 even where maximum is -inf too."""
    return ops.where(ops.isneginf(scores), 0.0, ops.exp(scores - maximum))


def _safe_divide(ops: _Ops, numerator: Array, denominator: Array) -> Array:
    """numerator / denominator, 0 where the denominator is 0 (nothing read yet)."""
    empty = denominator == 0
    return ops.where(empty, 0.0, numerator / ops.where(empty, 1.0, denominator))


POOLINGS_BY_NAME: dict[str, Pooling] = {p.name: p for p in (_Last(), _Mean(), _Max(), _Attention())}


def _pooling(name: str) -> Pooling:
    try:
        return POOLINGS_BY_NAME[name]
    except KeyError:
        raise ValueError(f"invalid pooling {name!r}; options are {list(POOLINGS_BY_NAME)}") from None


def empty_carry(pooling: str, batch: int, size: int, dtype: torch.dtype = torch.float32,
                device: torch.device | str = "cpu") -> PoolCarry:
    """A carry of `batch` rows of width `size` that has read nothing (read() gives zeros)."""
    device = torch.device(device)
    return PoolCarry(pooling=pooling, count=torch.zeros(batch, dtype=torch.int64, device=device),
                     **_pooling(pooling).start(batch, size, dtype, device))


def advance(carry: PoolCarry, outputs: Tensor, lengths: Tensor, scores_fn: ScoresFn | None = None,
            steps: bool = True) -> tuple[PoolCarry, Tensor | None]:
    """Read outputs [B, T, H] (row b's first lengths[b] steps; lengths may be 0) into the carry.

    Returns the new carry and, with `steps`, the pooled vector after every step [B, T, H] (past a
    row's length the value stays at its last step's); None without. scores_fn: attention's scores.
    """
    lengths = lengths.to(outputs.device, torch.int64)  # [B]
    mask = torch.arange(outputs.shape[1], device=outputs.device).unsqueeze(0) < lengths.unsqueeze(-1)  # [B, T]
    fields, per_step = _pooling(carry.pooling).advance(carry, outputs, mask, lengths, scores_fn, steps)
    return dataclasses.replace(carry, count=carry.count + lengths, **fields), per_step


def read(carry: PoolCarry) -> Tensor:
    """The pooled vector [B, H] the classifier reads; zeros for rows that have read nothing."""
    return _pooling(carry.pooling).read(carry)


def advance_arrays(pooling: str, fields: dict[str, np.ndarray], count: np.ndarray, outputs: np.ndarray,
                   lengths: np.ndarray, scores: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """advance then read on numpy arrays, without per-step vectors: the same running form (each
    pooling's `chunk` and `pooled`), for a stream's small batches, where torch's fixed cost per op
    outweighs the arithmetic. fields: the carry's fields but count ([B, H] or [B] each), count [B]
    outputs read before, outputs [B, T, H] float32, lengths [B], scores [B, T] (attention's raw
    scores, else None). Returns the new fields and the pooled vectors [B, H]."""
    chosen = _pooling(pooling)
    mask = np.arange(outputs.shape[1]) < lengths[:, None]  # [B, T]
    with np.errstate(invalid="ignore"):  # exp(-inf − -inf) in a where's unused branch, as torch computes it
        fields = chosen.chunk(_NUMPY, fields, outputs, mask, lengths, scores)
        return fields, chosen.pooled(_NUMPY, fields, count + lengths)


def pool(pooling: str, outputs: Tensor, lengths: Tensor, scores_fn: ScoresFn | None = None,
         ends: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """The batch form: pooled [B, H] of padded outputs [B, T, H] with lengths [B] (each >= 1), and for
    attention the weights [B, T] it gave each step (else None).

    ends [B, H]: the top layer's final state per direction. "last" of a bidirectional network reads
    it (its backward direction ends at the first token, not at outputs[length − 1]); unidirectional,
    it equals the running form's latest output.
    """
    if pooling == "last" and ends is not None:
        return ends, None
    scores_fn = _scored_once(outputs, scores_fn) if pooling == "attention" else scores_fn
    carry = empty_carry(pooling, outputs.shape[0], outputs.shape[-1], outputs.dtype, outputs.device)
    carry, _ = advance(carry, outputs, lengths, scores_fn, steps=False)
    weights = None
    if pooling == "attention":
        assert scores_fn is not None and carry.score_max is not None and carry.score_sum is not None
        lengths = lengths.to(outputs.device)
        mask = torch.arange(outputs.shape[1], device=outputs.device).unsqueeze(0) < lengths.unsqueeze(-1)
        # The same exp(s − m) / Σ that the running softmax summed: what each step weighed.
        scores = scores_fn(outputs).masked_fill(~mask, _NEG_INF)  # [B, T]
        weights = _exp_below(_TORCH, scores, carry.score_max.unsqueeze(-1)) / carry.score_sum.unsqueeze(-1)  # [B, T]
    return read(carry), weights


def _scored_once(outputs: Tensor, scores_fn: ScoresFn | None) -> ScoresFn:
    """scores_fn for `outputs` alone, computed once however often it is asked (the running form and
    the weights both need them; the projection is attention's heaviest step)."""
    if scores_fn is None:
        raise ValueError("attention pooling needs the network's scores_fn (its AdditiveAttention)")
    scores = scores_fn(outputs)  # [B, T]

    def cached(values: Tensor) -> Tensor:
        assert values is outputs, "cached scores serve the outputs they were computed for"
        return scores

    return cached


def pool_prefixes(pooling: str, outputs: Tensor, scores_fn: ScoresFn | None = None) -> tuple[Tensor, Tensor | None]:
    """Every prefix of ONE text: pooled [T, H] (row t: the first t+1 steps of outputs [T, H]), and for
    attention the whole text's weights [1, T]. The running form from an empty carry."""
    steps = outputs.shape[0]
    batch = outputs.unsqueeze(0)  # [1, T, H]
    lengths = torch.tensor([steps], device=outputs.device)
    scores_fn = _scored_once(batch, scores_fn) if pooling == "attention" else scores_fn
    carry = empty_carry(pooling, 1, outputs.shape[-1], outputs.dtype, outputs.device)
    _, per_step = advance(carry, batch, lengths, scores_fn, steps=True)
    assert per_step is not None
    weights = pool(pooling, batch, lengths, scores_fn)[1] if pooling == "attention" else None  # [1, T]
    return per_step[0], weights
