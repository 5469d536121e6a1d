"""Model results -> contract messages. The only place that knows both sides' shapes."""

from __future__ import annotations

from rnn_sentiment.model.inference import PredictionResult
from rnn_sentiment.model.trace import TraceResult
from rnn_sentiment.v1 import sentiment_pb2 as pb

from .repository import ServedModel

_CELL_TYPES = {"rnn": pb.CELL_TYPE_RNN, "gru": pb.CELL_TYPE_GRU, "lstm": pb.CELL_TYPE_LSTM}
_POOLINGS = {
    "last": pb.POOLING_LAST,
    "mean": pb.POOLING_MEAN,
    "max": pb.POOLING_MAX,
    "attention": pb.POOLING_ATTENTION,
}


def prediction_message(result: PredictionResult) -> pb.Prediction:
    return pb.Prediction(
        label=result.label,
        score=result.score,
        probabilities=result.probabilities,
        token_count=result.token_count,
        unknown_token_count=result.unknown_count,
        truncated=result.truncated,
    )


def trace_message(
    served: ServedModel, result: TraceResult, include_hidden_states: bool
) -> pb.TraceResponse:
    steps = [
        pb.TraceStep(
            token=step.token,
            in_vocabulary=step.known,
            hidden_state=step.hidden if include_hidden_states else (),
            hidden_state_norm=step.hidden_norm,
            probabilities=step.probabilities,
            positive_delta=step.delta_positive,
        )
        for step in result.steps
    ]
    return pb.TraceResponse(
        prediction=prediction_message(result.prediction),
        steps=steps,
        model=served.loaded.name,
        model_version=served.loaded.version,
        labels=served.loaded.config.labels,
    )


def model_info_message(served: ServedModel, is_default: bool) -> pb.ModelInfo:
    loaded = served.loaded
    config = loaded.config
    training = loaded.training
    return pb.ModelInfo(
        name=loaded.name,
        version=loaded.version,
        architecture=pb.Architecture(
            cell_type=_CELL_TYPES[config.cell],
            num_layers=config.num_layers,
            embedding_dim=config.embedding_dim,
            hidden_size=config.hidden_size,
            bidirectional=config.bidirectional,
            pooling=_POOLINGS[config.pooling],
            parameter_count=sum(p.numel() for p in loaded.network.parameters()),
        ),
        labels=config.labels,
        vocabulary_size=len(loaded.vocab),
        max_tokens=config.max_tokens,
        checkpoint_sha256=loaded.sha256,
        dev_accuracy=training.dev_accuracy if training is not None else 0.0,
        device=served.device,
        is_default=is_default,
    )
