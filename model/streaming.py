"""The model side of a stream: text that arrives in chunks, answered after each chunk in O(new tokens).

A unidirectional network's state after token t is all it needs to go on (model/network.py's
`encode(..., initial_state=...)`), and each pooling has a running form (model/pooling.py), so a
session keeps only its recurrent state, its pooling carry and its counts (`StreamState`). A
`StreamStepper` advances MANY sessions in one batched call of the executor Predict uses (ONNX
Runtime on CPU where it serves, torch otherwise), so the cost grows with the tokens that arrive,
not with the sessions that are open. After the last chunk the answer is Predict's on the whole
text (to 1e-5, tests/unit/model/test_streaming.py).

    stepper = make_stream_stepper(loaded, "auto", threads=1)
    state = stepper.start()
    (state, result), = stepper.advance([state], [["a", "fine"]], [False])
    (state, result), = stepper.advance([state], [["film", "."]], [True])
    result.prediction.label, [step.positive_probability for step in result.steps]

Bidirectional networks cannot stream: a backward state depends on the words not yet sent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, TypeVar, Union

import numpy as np
import torch
from torch import Tensor

from . import pooling
from .checkpoint import LoadedModel
from .config import ModelConfig
from .inference import EncodedText, PredictionResult, positive_index
from .pooling import PoolCarry
from .step_measures import hidden_and_change_norms
from .subwords import subword_array
from .vocabulary import PAD_ID, UNK_ID

if TYPE_CHECKING:
    from .backends import OnnxForward, OnnxRecurrence

__all__ = ["BIDIRECTIONAL_REASON", "StreamChunk", "StateLayout", "StreamState", "StreamTokenStep", "StreamStepResult",
           "StreamStepper", "RecurrenceResult", "can_stream", "stream_refusal", "make_stream_stepper",
           "torch_recurrence"]

_Frozen = TypeVar("_Frozen")

BIDIRECTIONAL_REASON = "a backward state depends on the words not yet sent"

# A chunk of one session's text, already tokenized: an EncodedText (its tokens, ids and n-grams
# are taken as they are; its own truncation is not applied again), token strings (encoded with the
# model's vocabulary, sub-words included), or token ids (no n-grams: an id cannot give them).
StreamChunk = Union[EncodedText, Sequence[str], Sequence[int]]


def stream_refusal(config: ModelConfig) -> str | None:
    """Why a model with `config` cannot stream, or None when it can."""
    if config.bidirectional:
        return BIDIRECTIONAL_REASON
    return None


def can_stream(config: ModelConfig) -> bool:
    """True for every unidirectional network (any cell, layers, pooling); see stream_refusal."""
    return stream_refusal(config) is None


@dataclass(frozen=True, eq=False)  # one per stepper: identity is equality
class StateLayout:
    """Where a session's numbers sit in its one float32 row: every layer's hidden state, the LSTM's
    cell states, then the pooling carry's fields (its count is the session's tokens_read).

    One row per session, not one array per field: a batch gathers its sessions with one
    concatenate and scatters them back with one copy per row, where per-field arrays and a carry
    of tensors per session cost a dozen Python-level objects per session per update.
    """

    pooling: str
    layers: int
    size: int  # H
    hidden: slice  # L * H columns, layer-major
    cell: slice | None  # L * H columns; None for RNN and GRU
    carry: tuple[tuple[str, slice, tuple[int, ...]], ...]  # (PoolCarry field, columns, per-row shape)
    width: int  # columns in all
    empty_row: np.ndarray  # [width] a session that has read nothing (max's -inf, zeros elsewhere)

    @classmethod
    def of(cls, config: ModelConfig) -> StateLayout:
        layers, size = config.num_layers, config.hidden_size
        at = 0
        hidden = slice(at, at + layers * size)
        at = hidden.stop
        cell = None
        if config.cell == "lstm":
            cell = slice(at, at + layers * size)
            at = cell.stop
        empty = pooling.empty_carry(config.pooling, 1, size)
        fields = []
        starts = [np.zeros(at, dtype=np.float32)]
        for name, value in empty.tensors().items():
            if name == "count":
                continue
            shape = tuple(value.shape[1:])  # (H,) or () per row
            columns = int(np.prod(shape, dtype=np.int64))
            fields.append((name, slice(at, at + columns), shape))
            starts.append(value.numpy().reshape(-1).astype(np.float32))
            at += columns
        return cls(pooling=config.pooling, layers=layers, size=size, hidden=hidden, cell=cell, carry=tuple(fields),
                   width=at, empty_row=np.concatenate(starts))

    def states(self, rows: np.ndarray, part: slice) -> np.ndarray:
        """rows [B, width] -> the layers' states [L, B, H] of `part` (self.hidden or self.cell), a view."""
        return rows[:, part].reshape(len(rows), self.layers, self.size).transpose(1, 0, 2)

    def pool_carry(self, rows: np.ndarray, count: np.ndarray) -> PoolCarry:
        """rows [B, width] and tokens read [B] -> the batch's PoolCarry, its tensors views of rows."""
        batch = len(rows)
        return PoolCarry(pooling=self.pooling, count=torch.from_numpy(count),
                         **{name: torch.from_numpy(rows[:, columns]).reshape(batch, *shape)
                            for name, columns, shape in self.carry})


@dataclass(frozen=True)
class StreamState:
    """One session after the tokens it has read: all a stream needs to go on. Immutable; advance
    returns a new one, so a caller may keep or drop old ones freely."""

    # One numpy row, not tensors: a batch gathers and scatters every session's row per update,
    # which costs a fraction of a microsecond for a row and many for a tensor or a dataclass each.
    packed: np.ndarray  # [layout.width] float32: states after the last token read (zeros before any), pooling carry
    layout: StateLayout  # the stepper's, shared by all its sessions
    tokens_read: int = 0  # tokens the network has read (at most the limit); also the pooling's count
    tokens_seen: int = 0  # tokens sent, including those past the limit
    unknown_count: int = 0  # of the tokens read, those the vocabulary does not know
    truncated: bool = False  # tokens arrived past the limit and were not read
    prediction: PredictionResult | None = None  # after the tokens read; None before the first

    @property
    def hidden(self) -> np.ndarray:
        """[L, H] float32: every layer's state after the last token read (a view of packed)."""
        return self.packed[self.layout.hidden].reshape(self.layout.layers, self.layout.size)

    @property
    def cell(self) -> np.ndarray | None:
        """[L, H] float32: the LSTM's cell states (a view of packed); None for RNN and GRU."""
        cell = self.layout.cell
        return self.packed[cell].reshape(self.layout.layers, self.layout.size) if cell is not None else None

    @property
    def carry(self) -> PoolCarry:
        """One row: the pooling's running summary of the top layer's outputs (tensors viewing packed)."""
        return self.layout.pool_carry(self.packed[None], np.array([self.tokens_read], dtype=np.int64))

    def nbytes(self) -> int:
        """Bytes of numbers this session holds: states, pooling carry and its count (an int64)."""
        return self.packed.nbytes + 8


@dataclass(frozen=True)
class StreamTokenStep:
    """One new token, with the same quantities and definitions as Trace's TraceStep."""

    token: str
    known: bool  # False: the model saw <unk> here
    probabilities: tuple[float, ...]  # label probabilities had the text ended at this token
    positive_probability: float  # of them, the positive label's (inference.positive_index)
    delta_positive: float  # positive probability here minus at the previous token (or the baseline)
    hidden_norm: float  # ‖h_t‖ of the top layer
    change_norm: float  # ‖h_t − h_(t−1)‖ (the first token of the stream: against zeros)


@dataclass(frozen=True)
class StreamStepResult:
    """What one session's chunk gave."""

    prediction: PredictionResult | None  # after every token read so far; None before the first token
    steps: tuple[StreamTokenStep, ...] = ()  # per token read from this chunk, when asked for
    tokens_read: int = 0  # tokens of this chunk the network read
    tokens_dropped: int = 0  # tokens of this chunk past the limit (not read)


_JUST_STR = {str}
_SEQUENCES = {list, tuple}


class _Chunk(NamedTuple):
    tokens: Sequence[str]
    ids: Sequence[int]
    subword_ids: Sequence[Sequence[int]]  # () when none


@dataclass(frozen=True)
class _Tokens:
    """The tokens of a batch's chunks end to end, one flat list each: a thousand one-word chunks are
    encoded in one pass over one list, not a thousand calls building a thousand objects."""

    lengths: list[int]  # tokens per chunk
    tokens: list[str]  # every chunk's tokens, in order
    ids: list[int]
    subword_ids: list[Sequence[int]] | None  # per token its n-gram ids; None when no token has any

    @classmethod
    def joined(cls, chunks: Sequence[_Chunk]) -> _Tokens:
        subwords = None
        if any(chunk.subword_ids for chunk in chunks):
            subwords = list(itertools.chain.from_iterable(chunk.subword_ids or [()] * len(chunk.ids)
                                                          for chunk in chunks))
        return cls(lengths=[len(chunk.ids) for chunk in chunks],
                   tokens=list(itertools.chain.from_iterable(chunk.tokens for chunk in chunks)),
                   ids=list(itertools.chain.from_iterable(chunk.ids for chunk in chunks)), subword_ids=subwords)

    def heads(self, keep: Sequence[int]) -> _Tokens:
        """The first keep[i] tokens of each chunk i (keep[i] <= lengths[i]); chunks keeping none left out."""
        chunks = []
        start = 0
        for length, kept in zip(self.lengths, keep, strict=True):
            if kept:
                chunks.append(_Chunk(self.tokens[start:start + kept], self.ids[start:start + kept],
                                     self.subword_ids[start:start + kept] if self.subword_ids is not None else ()))
            start += length
        return _Tokens.joined(chunks)

    def starts(self) -> list[int]:
        """Where each chunk's tokens begin in the flat lists."""
        return list(itertools.accumulate(self.lengths, initial=0))[:-1]


@dataclass(frozen=True)
class RecurrenceResult:
    """A batch of chunks run through the recurrence from given states."""

    outputs: Tensor  # [B, T, H] top layer's output per step, any value past a row's length
    hidden: Tensor  # [L, B, H] state after each row's last token
    cell: Tensor | None  # [L, B, H] LSTM cell states


def _builder(cls: type[_Frozen]) -> Callable[..., _Frozen]:
    """cls(**fields) for a frozen dataclass, every field given, without its generated __init__: that
    sets each field through object.__setattr__, and a batch builds three such objects per session.
    Refused for a class whose __init__ does more than set fields (__post_init__, init=False fields)."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if hasattr(cls, "__post_init__") or any(not f.init for f in fields):
        raise TypeError(f"{cls.__name__}'s __init__ does more than set its fields")
    count = len(fields)
    new = object.__new__

    def build(**values: object) -> _Frozen:
        if len(values) != count:
            raise TypeError(f"{cls.__name__} takes all {count} fields, got {sorted(values)}")
        built = new(cls)
        built.__dict__.update(values)
        return built

    return build


_new_prediction = _builder(PredictionResult)
_new_state = _builder(StreamState)
_new_result = _builder(StreamStepResult)


class StreamStepper:
    """Advances sessions of one served model, many in one batched call. Build with make_stream_stepper."""

    def __init__(self, loaded: LoadedModel, max_tokens: int, recurrence: OnnxRecurrence | None = None) -> None:
        refusal = stream_refusal(loaded.config)
        if refusal is not None:
            raise ValueError(f"model {loaded.name} cannot stream: {refusal}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.loaded = loaded
        self.device = loaded.device  # a property that walks the parameters: read once
        self.max_tokens = max_tokens
        self.recurrence = recurrence  # ONNX Runtime's recurrence, or None: torch's
        self.layout = StateLayout.of(loaded.config)

        config = loaded.config
        self._labels = config.labels
        self._positive = positive_index(config.labels)
        self._start = StreamState(packed=self.layout.empty_row, layout=self.layout)
        with torch.inference_mode():
            zero = torch.zeros(1, loaded.network.output_size, device=self.device)
            self._baseline = torch.softmax(loaded.network.classify_pooled(zero).float(), dim=-1)[0].tolist()

    @property
    def description(self) -> str:
        return "torch" if self.recurrence is None else "onnxruntime"

    def start(self) -> StreamState:
        """A session that has read nothing (one shared, immutable state: nothing is allocated per session)."""
        return self._start

    def advance(self, states: Sequence[StreamState], chunks: Sequence[StreamChunk],
                want_steps: Sequence[bool]) -> list[tuple[StreamState, StreamStepResult]]:
        """Read each session's chunk (states[i] takes chunks[i]); one (new state, result) per session, in order.

        Sessions whose chunk brings no token to read (empty, or past the limit) keep their state and
        prediction and do not join the batch. The others run as one batch: the recurrence from their
        states, the pooling's running form, the classifier. want_steps[i]: also the per-token steps.
        """
        if not len(states) == len(chunks) == len(want_steps):
            raise ValueError(f"expected one chunk and one want_steps per state, got {len(states)} states, "
                             f"{len(chunks)} chunks, {len(want_steps)} want_steps")
        sent = self._encode_all(chunks)
        answers: list[tuple[StreamState, StreamStepResult] | None] = [None] * len(states)
        active: list[int] = []
        kept: list[int] = []  # per chunk, the tokens read
        dropped: list[int] = []  # per active session, the tokens past its limit
        limit = self.max_tokens
        for index, (state, length) in enumerate(zip(states, sent.lengths)):
            room = limit - state.tokens_read
            if length <= room and length:  # the common case: every token read
                active.append(index)
                kept.append(length)
                dropped.append(0)
                continue
            reading = max(0, min(length, room))
            kept.append(reading)
            if reading:
                active.append(index)
                dropped.append(length - reading)
            else:
                answers[index] = self._unchanged(state, length)
        if active:
            taken = sent if len(active) == len(states) and not any(dropped) else sent.heads(kept)
            batch_states = [states[i] for i in active]
            steps_wanted = [bool(want_steps[i]) for i in active]
            for index, answer in zip(active, self._advance_batch(batch_states, taken, dropped, steps_wanted),
                                     strict=True):
                answers[index] = answer
        return answers  # type: ignore[return-value]  # every slot filled above

    def _encode_all(self, chunks: Sequence[StreamChunk]) -> _Tokens:
        """Every chunk encoded, as flat lists. Token-string chunks (what the server sends) take one
        pass over all their tokens; any other kind goes chunk by chunk."""
        if set(map(type, chunks)) <= _SEQUENCES:
            flat = list(itertools.chain.from_iterable(chunks))  # type: ignore[arg-type]  # lists and tuples
            if set(map(type, flat)) <= _JUST_STR:
                vocab = self.loaded.vocab
                ids = vocab.encode(flat)
                return _Tokens(lengths=list(map(len, chunks)), tokens=flat, ids=ids,
                               subword_ids=list(vocab.unknown_subwords(flat, ids)) or None)
        return _Tokens.joined([self._encode(chunk) for chunk in chunks])

    def _encode(self, chunk: StreamChunk) -> _Chunk:
        if isinstance(chunk, EncodedText):
            return _Chunk(chunk.tokens, chunk.ids, chunk.subword_ids)
        items = chunk if isinstance(chunk, (list, tuple)) else list(chunk)
        vocab = self.loaded.vocab
        if not items:
            return _Chunk((), (), ())
        if all(isinstance(item, str) for item in items):
            ids = vocab.encode(items)
            return _Chunk(items, ids, vocab.unknown_subwords(items, ids))
        if all(isinstance(item, (int, np.integer)) and not isinstance(item, bool) for item in items):
            ids = [int(i) for i in items]
            if any(not 0 <= i < len(vocab) for i in ids):
                raise ValueError(f"token ids must be in [0, {len(vocab)}), got {tuple(ids)}")
            return _Chunk(tuple(vocab.token(i) for i in ids), ids, ())
        raise TypeError("a chunk is an EncodedText, token strings, or token ids")

    def _unchanged(self, state: StreamState, lost: int) -> tuple[StreamState, StreamStepResult]:
        if lost:
            prediction = (dataclasses.replace(state.prediction, truncated=True,
                                              text_token_count=state.tokens_seen + lost)
                          if state.prediction is not None else None)
            state = dataclasses.replace(state, truncated=True, tokens_seen=state.tokens_seen + lost,
                                        prediction=prediction)
        return state, StreamStepResult(prediction=state.prediction, tokens_dropped=lost)

    def _token_arrays(self, tokens: _Tokens) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The batch's padded ids [B, T], its unknown tokens per row [B] and any n-gram ids [B, T, K]."""
        batch = len(tokens.lengths)
        ids = np.array(tokens.ids, dtype=np.int64)  # [N] every row's tokens end to end
        # Not known == encoded as <unk> or <pad> (Vocabulary.is_known), as Predict counts them.
        unknown = (ids == UNK_ID) | (ids == PAD_ID)  # [N]
        starts = None
        if len(ids) == batch:  # one token per row, the usual stream update: no padding to build
            token_ids = ids.reshape(batch, 1)
            unknown_per_row = unknown.astype(np.int64)
        else:
            lengths = np.array(tokens.lengths, dtype=np.int64)  # [B] each >= 1
            mask = np.arange(int(lengths.max())) < lengths[:, None]  # [B, T] True at real tokens
            token_ids = np.full(mask.shape, PAD_ID, dtype=np.int64)
            token_ids[mask] = ids  # row-major: each row's ids in order
            starts = tokens.starts()
            unknown_per_row = np.add.reduceat(unknown.astype(np.int64), starts)  # [B] (no row is empty)
        subword_ids = None
        buckets = self.loaded.config.subword_buckets
        if buckets and tokens.subword_ids is not None:
            starts = tokens.starts() if starts is None else starts
            per_row = [tokens.subword_ids[start:start + length] for start, length in zip(starts, tokens.lengths)]
            subword_ids = subword_array(per_row, token_ids.shape[1], buckets)  # [B, T, K]
        return token_ids, unknown_per_row, subword_ids

    def _advance_batch(self, states: list[StreamState], tokens: _Tokens, dropped: list[int],
                       want_steps: list[bool]) -> list[tuple[StreamState, StreamStepResult]]:
        network, device, layout = self.loaded.network, self.device, self.layout
        batch = len(states)
        token_ids, unknown, subword_ids = self._token_arrays(tokens)  # [B, T], [B], [B, T, K] | None
        lengths = np.array(tokens.lengths, dtype=np.int64)  # [B]
        rows = np.concatenate([s.packed for s in states]).reshape(batch, layout.width)  # [B, S]
        read_before = np.fromiter((s.tokens_read for s in states), dtype=np.int64, count=batch)  # [B]
        hidden = layout.states(rows, layout.hidden)  # [L, B, H]
        cell = layout.states(rows, layout.cell) if layout.cell is not None else None  # [L, B, H]
        lengths_tensor = torch.from_numpy(lengths)
        any_steps = any(want_steps)
        step_probabilities = None  # [B, T, C] with any_steps
        # ONNX Runtime and numpy need no autograd guard: entering one costs as much as a torch op.
        numpy_only = self.recurrence is not None and not any_steps and device.type == "cpu"
        with contextlib.nullcontext() if numpy_only else torch.inference_mode():
            if self.recurrence is not None:
                ran = self.recurrence.run(token_ids, lengths, subword_ids, hidden, cell)
            else:
                ran = torch_recurrence(self.loaded, token_ids, lengths_tensor, subword_ids,
                                       torch.from_numpy(np.ascontiguousarray(hidden)),
                                       torch.from_numpy(np.ascontiguousarray(cell)) if cell is not None else None)
            after = np.empty_like(rows)  # [B, S] every session's new row
            if device.type == "cpu" and not any_steps:
                # The usual update: numpy, the same running form (pooling.advance_arrays), since torch's
                # fixed cost per op, about twenty ops per call, outweighs a stream batch's arithmetic.
                probabilities = self._pool_and_classify(rows, read_before, ran.outputs.float().numpy(), lengths, after)
            else:
                outputs = ran.outputs.to(device)  # [B, T, H]
                carry = layout.pool_carry(rows, read_before)
                if device.type != "cpu":
                    carry = dataclasses.replace(carry, **{k: v.to(device) for k, v in carry.tensors().items()})
                carry, per_step = pooling.advance(carry, outputs, lengths_tensor, network.attention, steps=any_steps)
                pooled = pooling.read(carry)  # [B, H]
                probabilities = torch.softmax(network.classify_pooled(pooled).float(), dim=-1).cpu().numpy()  # [B, C]
                step_probabilities = (torch.softmax(network.classify_pooled(per_step).float(), dim=-1).cpu()
                                      if per_step is not None else None)  # [B, T, C]
                for name, columns, _ in layout.carry:
                    after[:, columns] = getattr(carry, name).cpu().numpy().reshape(batch, -1)
        after[:, layout.hidden] = ran.hidden.float().cpu().numpy().transpose(1, 0, 2).reshape(batch, -1)
        if layout.cell is not None:
            assert ran.cell is not None
            after[:, layout.cell] = ran.cell.float().cpu().numpy().transpose(1, 0, 2).reshape(batch, -1)
        answers = self._answers(states, tokens.lengths, unknown.tolist(), dropped, after, probabilities)
        if any_steps:
            assert step_probabilities is not None
            starts = tokens.starts()
            for row, steps_wanted in enumerate(want_steps):
                if steps_wanted:
                    new_state, result = answers[row]
                    chunk = tokens.tokens[starts[row]:starts[row] + tokens.lengths[row]]
                    steps = self._token_steps(states[row], chunk, ran.outputs[row], step_probabilities[row])
                    answers[row] = (new_state, dataclasses.replace(result, steps=steps))
        return answers

    def _pool_and_classify(self, rows: np.ndarray, read_before: np.ndarray, outputs: np.ndarray,
                           lengths: np.ndarray, after: np.ndarray) -> np.ndarray:
        """The pooling's running form and the classifier on numpy: rows [B, S] before, outputs [B, T, H];
        writes the new carry into after [B, S] and returns the label probabilities [B, C]."""
        layout, batch = self.layout, len(rows)
        fields = {name: rows[:, columns].reshape(batch, *shape) for name, columns, shape in layout.carry}
        scores = None
        if layout.pooling == "attention":  # the network's own AdditiveAttention, on the chunk's outputs
            with torch.inference_mode():
                scores = self.loaded.network.attention(torch.from_numpy(outputs)).numpy()  # [B, T]
        fields, pooled = pooling.advance_arrays(layout.pooling, fields, read_before, outputs, lengths, scores)
        for name, columns, _ in layout.carry:
            after[:, columns] = fields[name].reshape(batch, -1)
        logits = self.loaded.network.classify_pooled_array(pooled)  # [B, C]
        logits -= logits.max(axis=1, keepdims=True)  # softmax, shifted as torch's is
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def _answers(self, states: list[StreamState], lengths: list[int], unknown: list[int], dropped: list[int],
                 after: np.ndarray, probabilities: np.ndarray) -> list[tuple[StreamState, StreamStepResult]]:
        """Every session's new state and result, in one pass over plain Python values (at a thousand
        sessions the per-session cost is this loop: no numpy or torch call inside it but a row copy)."""
        labels, layout = self._labels, self.layout
        best = probabilities.argmax(axis=1).tolist()  # [B] the first of equal maxima, as to_prediction picks
        answers = []
        for state, read_now, unknown_now, lost, row, values, top in zip(
                states, lengths, unknown, dropped, after, probabilities.tolist(), best, strict=True):
            tokens_read = state.tokens_read + read_now
            tokens_seen = state.tokens_seen + read_now + lost
            unknown_count = state.unknown_count + unknown_now
            truncated = state.truncated or lost > 0
            values = tuple(values)
            prediction = _new_prediction(label=labels[top], score=values[top], probabilities=values,
                                         token_count=tokens_read, unknown_count=unknown_count, truncated=truncated,
                                         text_token_count=tokens_seen)
            new_state = _new_state(
                packed=row.copy(),  # a copy: a view would keep the whole batch alive
                layout=layout, tokens_read=tokens_read, tokens_seen=tokens_seen, unknown_count=unknown_count,
                truncated=truncated, prediction=prediction)
            answers.append((new_state, _new_result(prediction=prediction, steps=(), tokens_read=read_now,
                                                   tokens_dropped=lost)))
        return answers

    def _token_steps(self, state: StreamState, tokens: Sequence[str], outputs: Tensor,
                     step_probabilities: Tensor) -> tuple[StreamTokenStep, ...]:
        """Trace's per-token quantities for one session's chunk: outputs [T, H], step_probabilities [T, C]."""
        vocab = self.loaded.vocab
        read_now = len(tokens)
        top = outputs[:read_now].float().cpu()  # [t, H]
        hidden_norms, change_norms = hidden_and_change_norms(top, torch.from_numpy(state.hidden[-1]))
        previous = (state.prediction.probabilities if state.prediction is not None else self._baseline)[self._positive]
        token_steps = []
        for t, (token, values) in enumerate(zip(tokens, step_probabilities[:read_now].tolist())):
            token_steps.append(StreamTokenStep(
                token=token, known=vocab.is_known(token), probabilities=tuple(values),
                positive_probability=values[self._positive], delta_positive=values[self._positive] - previous,
                hidden_norm=hidden_norms[t], change_norm=change_norms[t]))
            previous = values[self._positive]
        return tuple(token_steps)


def torch_recurrence(loaded: LoadedModel, token_ids: np.ndarray, lengths: Tensor, subword_ids: np.ndarray | None,
                      hidden: Tensor, cell: Tensor | None) -> RecurrenceResult:
    """The batch on torch's recurrent module from the sessions' states (network.encode)."""
    device = loaded.device
    initial = (hidden.to(device), cell.to(device)) if cell is not None else hidden.to(device)
    encoded = loaded.network.encode(torch.from_numpy(token_ids).to(device), lengths, initial_state=initial,
                                    subword_ids=torch.from_numpy(subword_ids).to(device)
                                    if subword_ids is not None else None)
    final = encoded.final_state
    if isinstance(final, tuple):
        return RecurrenceResult(outputs=encoded.outputs, hidden=final[0], cell=final[1])
    return RecurrenceResult(outputs=encoded.outputs, hidden=final, cell=None)


def make_stream_stepper(loaded: LoadedModel, backend: str, threads: int, max_tokens: int | None = None,
                        onnx: OnnxForward | None = None) -> StreamStepper:
    """The StreamStepper for `backend` (one of backends.BACKENDS), chosen as make_predictor chooses:
    ONNX Runtime on CPU when it is installed and agrees with torch (checked on a probe of chunked
    texts), else torch; "onnxruntime" makes anything that keeps it from serving a ValueError.

    max_tokens: the most tokens a session reads (the head is kept, as Predict keeps it); the
    model's config.max_tokens when None. ValueError for a model that cannot stream (stream_refusal).
    onnx: Predict's ONNX Runtime session of this model (Predictor.onnx), shared by the streams' step.
    """
    from .backends import make_stream_recurrence  # backends imports this module's types

    limit = loaded.config.max_tokens if max_tokens is None else max_tokens
    refusal = stream_refusal(loaded.config)
    if refusal is not None:
        raise ValueError(f"model {loaded.name} cannot stream: {refusal}")
    recurrence = make_stream_recurrence(loaded, backend, threads, forward=onnx)
    return StreamStepper(loaded, limit, recurrence)
