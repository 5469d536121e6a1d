"""Typed results of the SDK: plain dataclasses, no protobuf or grpc types leak to callers."""

from __future__ import annotations

import math
from dataclasses import dataclass

from rnn_sentiment.v1 import sentiment_pb2 as pb

from .requests import attribution_name


@dataclass(frozen=True)
class Prediction:
    """The model's verdict on one text.

    >>> p.label, round(p.score, 2)   # doctest: +SKIP
    ('positive', 0.97)
    """

    label: str
    score: float
    probabilities: tuple[float, ...]
    token_count: int
    unknown_token_count: int
    truncated: bool
    # Tokens of the whole text; above token_count when truncated (ModelInfo says which were read).
    text_token_count: int = 0

    @classmethod
    def from_message(cls, message: pb.Prediction) -> "Prediction":
        return cls(
            label=message.label,
            score=message.score,
            probabilities=tuple(message.probabilities),
            token_count=message.token_count,
            unknown_token_count=message.unknown_token_count,
            truncated=message.truncated,
            text_token_count=message.text_token_count,
        )


@dataclass(frozen=True)
class PredictResult:
    """Predictions in request order, and the model that made them."""

    predictions: tuple[Prediction, ...]
    model: str
    model_version: str

    @classmethod
    def from_message(cls, message: pb.PredictResponse) -> "PredictResult":
        return cls(
            predictions=tuple(Prediction.from_message(p) for p in message.predictions),
            model=message.model,
            model_version=message.model_version,
        )


@dataclass(frozen=True)
class StreamUpdate:
    """The running sentiment of a streamed text after one chunk (SentimentStream.send and close).

    >>> update = stream.send("the plot is dull but ")   # doctest: +SKIP
    >>> update.prediction.label, update.prediction.token_count
    ('negative', 5)
    """

    prediction: Prediction | None  # None until the stream's first token is read
    steps: tuple["TraceStep", ...]  # one per token this chunk completed; only with include_steps
    model: str
    model_version: str  # fixed for the stream's lifetime
    final: bool  # True for close()'s answer: the whole text's prediction, held word included

    @classmethod
    def from_message(cls, message: pb.StreamSentimentResponse) -> "StreamUpdate":
        return cls(
            prediction=Prediction.from_message(message.prediction) if message.HasField("prediction") else None,
            steps=tuple(TraceStep.from_message(s) for s in message.steps),
            model=message.model,
            model_version=message.model_version,
            final=message.final,
        )


@dataclass(frozen=True)
class CellStep:
    """One recurrent layer and direction at one token: its state, its change, and its gates.

    Gate fields are means over the layer's units, set only for the cell that has them (GRU:
    update, reset; LSTM: input, forget, output, cell_state_norm); others are None.
    """

    layer: int
    direction: str  # "forward" or "backward"
    hidden_state_norm: float
    hidden_change_norm: float
    update_gate: float | None = None
    reset_gate: float | None = None
    input_gate: float | None = None
    forget_gate: float | None = None
    output_gate: float | None = None
    cell_state_norm: float | None = None
    memory: float | None = None

    @classmethod
    def from_message(cls, message: pb.CellStep) -> "CellStep":
        return cls(
            layer=message.layer,
            direction=pb.Direction.Name(message.direction).removeprefix("DIRECTION_").lower(),
            hidden_state_norm=message.hidden_state_norm,
            hidden_change_norm=message.hidden_change_norm,
            **{name: _optional(message, name) for name in _OPTIONAL_CELL_FIELDS},
        )


_OPTIONAL_CELL_FIELDS = ("update_gate", "reset_gate", "input_gate", "forget_gate", "output_gate",
                         "cell_state_norm", "memory")


def _optional(message, name: str) -> float | None:  # type: ignore[no-untyped-def]
    return getattr(message, name) if message.HasField(name) else None


@dataclass(frozen=True)
class TraceStep:
    """What the network held after reading one token."""

    token: str
    in_vocabulary: bool
    hidden_state: tuple[float, ...]
    hidden_state_norm: float
    probabilities: tuple[float, ...]
    positive_delta: float
    hidden_change_norm: float = 0.0
    attention_weight: float | None = None  # attention-pooling models only
    memory: float | None = None  # ‖∂h_T/∂x_t‖ when the memory profile was asked for
    cells: tuple[CellStep, ...] = ()  # top layer's directions, or every layer's

    @classmethod
    def from_message(cls, message: pb.TraceStep) -> "TraceStep":
        return cls(
            token=message.token,
            in_vocabulary=message.in_vocabulary,
            hidden_state=tuple(message.hidden_state),
            hidden_state_norm=message.hidden_state_norm,
            probabilities=tuple(message.probabilities),
            positive_delta=message.positive_delta,
            hidden_change_norm=message.hidden_change_norm,
            attention_weight=_optional(message, "attention_weight"),
            memory=_optional(message, "memory"),
            cells=tuple(CellStep.from_message(c) for c in message.cells),
        )


@dataclass(frozen=True)
class Attribution:
    """One method's per-token scores, signed toward `target_label` (the predicted label).

    `method` is "prefix", "gradient_x_input", "integrated_gradients" or "occlusion". For
    integrated gradients, `completeness_gap` / |`logit_difference`| is the relative error.
    """

    method: str
    scores: tuple[float, ...]
    target_label: str
    steps: int = 0
    logit_difference: float | None = None
    completeness_gap: float | None = None

    @classmethod
    def from_message(cls, message: pb.Attribution) -> "Attribution":
        return cls(
            method=attribution_name(message.method),
            scores=tuple(message.scores),
            target_label=message.target_label,
            steps=message.steps,
            logit_difference=_optional(message, "logit_difference"),
            completeness_gap=_optional(message, "completeness_gap"),
        )


@dataclass(frozen=True)
class MemoryProfile:
    """How much of each token survives to the end, summarised: recency share and decay per token."""

    recency: float
    decay_per_token: float
    last_tokens: int

    @property
    def half_life_tokens(self) -> float:
        """Tokens of distance after which a word's influence halves (inf when it does not decay)."""
        if not 0.0 < self.decay_per_token < 1.0:
            return math.inf
        return math.log(0.5) / math.log(self.decay_per_token)

    @classmethod
    def from_message(cls, message: pb.MemoryProfile) -> "MemoryProfile":
        return cls(recency=message.recency, decay_per_token=message.decay_per_token,
                   last_tokens=message.last_tokens)


@dataclass(frozen=True)
class TraceResult:
    """A text's prediction and one step per token, with the label order of every probability.

    `hidden_units` names the units kept in every step's hidden_state when the trace asked for
    the top-k units (empty: every unit, in order).
    """

    prediction: Prediction
    steps: tuple[TraceStep, ...]
    labels: tuple[str, ...]
    model: str
    model_version: str
    attributions: tuple[Attribution, ...] = ()
    memory_profile: MemoryProfile | None = None
    hidden_units: tuple[int, ...] = ()
    baseline_probabilities: tuple[float, ...] = ()

    @classmethod
    def from_message(cls, message: pb.TraceResponse) -> "TraceResult":
        return cls(
            prediction=Prediction.from_message(message.prediction),
            steps=tuple(TraceStep.from_message(s) for s in message.steps),
            labels=tuple(message.labels),
            model=message.model,
            model_version=message.model_version,
            attributions=tuple(Attribution.from_message(a) for a in message.attributions),
            memory_profile=(MemoryProfile.from_message(message.memory_profile)
                            if message.HasField("memory_profile") else None),
            hidden_units=tuple(message.hidden_units),
            baseline_probabilities=tuple(message.baseline_probabilities),
        )

    def positive_probability(self, step: TraceStep) -> float:
        """The probability of the "positive" label at `step` (the prefix sentiment)."""
        return step.probabilities[self.labels.index("positive")]

    def attribution(self, method: str) -> Attribution | None:
        """The scores of one method ("integrated_gradients", ...), or None if not asked for."""
        return next((a for a in self.attributions if a.method == method), None)


@dataclass(frozen=True)
class Architecture:
    cell_type: str
    num_layers: int
    embedding_dim: int
    hidden_size: int
    bidirectional: bool
    pooling: str
    parameter_count: int
    subword_buckets: int = 0  # hashed character n-gram rows; 0 = whole words only


@dataclass(frozen=True)
class ModelInfo:
    """Everything the server says about one model."""

    name: str
    version: str
    architecture: Architecture
    labels: tuple[str, ...]
    vocabulary_size: int
    max_tokens: int
    checkpoint_sha256: str
    dev_accuracy: float
    device: str
    is_default: bool
    truncation: str = "head"  # which tokens of a longer text are read: "head" or "head_tail"
    truncation_head_tokens: int = 0  # of max_tokens, how many come from a truncated text's start
    max_texts_per_request: int = 0  # the server's limit on texts per Predict; 0: an older server, unknown
    max_text_chars: int = 0  # the server's limit on one text's characters; 0: unknown

    @classmethod
    def from_message(cls, message: pb.ModelInfo) -> "ModelInfo":
        arch = message.architecture
        return cls(
            name=message.name,
            version=message.version,
            architecture=Architecture(
                # CELL_TYPE_GRU -> "gru", POOLING_LAST -> "last"
                cell_type=pb.CellType.Name(arch.cell_type).removeprefix("CELL_TYPE_").lower(),
                num_layers=arch.num_layers,
                embedding_dim=arch.embedding_dim,
                hidden_size=arch.hidden_size,
                bidirectional=arch.bidirectional,
                pooling=pb.Pooling.Name(arch.pooling).removeprefix("POOLING_").lower(),
                parameter_count=arch.parameter_count,
                subword_buckets=arch.subword_buckets,
            ),
            labels=tuple(message.labels),
            vocabulary_size=message.vocabulary_size,
            max_tokens=message.max_tokens,
            checkpoint_sha256=message.checkpoint_sha256,
            dev_accuracy=message.dev_accuracy,
            device=message.device,
            is_default=message.is_default,
            # TRUNCATION_HEAD_TAIL -> "head_tail"; an older server sends none: it kept the head.
            truncation=("head" if message.truncation == pb.TRUNCATION_UNSPECIFIED
                        else pb.Truncation.Name(message.truncation).removeprefix("TRUNCATION_").lower()),
            truncation_head_tokens=(message.max_tokens if message.truncation == pb.TRUNCATION_UNSPECIFIED
                                    else message.truncation_head_tokens),
            max_texts_per_request=message.max_texts_per_request,
            max_text_chars=message.max_text_chars,
        )
