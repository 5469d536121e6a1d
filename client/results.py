"""Typed results of the SDK: plain dataclasses, no protobuf or grpc types leak to callers."""

from __future__ import annotations

from dataclasses import dataclass

from rnn_sentiment.v1 import sentiment_pb2 as pb


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

    @classmethod
    def from_message(cls, message: pb.Prediction) -> "Prediction":
        return cls(
            label=message.label,
            score=message.score,
            probabilities=tuple(message.probabilities),
            token_count=message.token_count,
            unknown_token_count=message.unknown_token_count,
            truncated=message.truncated,
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
class TraceStep:
    """What the network held after reading one token."""

    token: str
    in_vocabulary: bool
    hidden_state: tuple[float, ...]
    hidden_state_norm: float
    probabilities: tuple[float, ...]
    positive_delta: float

    @classmethod
    def from_message(cls, message: pb.TraceStep) -> "TraceStep":
        return cls(
            token=message.token,
            in_vocabulary=message.in_vocabulary,
            hidden_state=tuple(message.hidden_state),
            hidden_state_norm=message.hidden_state_norm,
            probabilities=tuple(message.probabilities),
            positive_delta=message.positive_delta,
        )


@dataclass(frozen=True)
class TraceResult:
    """A text's prediction and one step per token, with the label order of every probability."""

    prediction: Prediction
    steps: tuple[TraceStep, ...]
    labels: tuple[str, ...]
    model: str
    model_version: str

    @classmethod
    def from_message(cls, message: pb.TraceResponse) -> "TraceResult":
        return cls(
            prediction=Prediction.from_message(message.prediction),
            steps=tuple(TraceStep.from_message(s) for s in message.steps),
            labels=tuple(message.labels),
            model=message.model,
            model_version=message.model_version,
        )

    def positive_probability(self, step: TraceStep) -> float:
        """The probability of the "positive" label at `step` (the prefix sentiment)."""
        return step.probabilities[self.labels.index("positive")]


@dataclass(frozen=True)
class Architecture:
    cell_type: str
    num_layers: int
    embedding_dim: int
    hidden_size: int
    bidirectional: bool
    pooling: str
    parameter_count: int


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
            ),
            labels=tuple(message.labels),
            vocabulary_size=message.vocabulary_size,
            max_tokens=message.max_tokens,
            checkpoint_sha256=message.checkpoint_sha256,
            dev_accuracy=message.dev_accuracy,
            device=message.device,
            is_default=message.is_default,
        )
