"""Model results -> contract messages. The only place that knows both sides' shapes."""

from __future__ import annotations

from rnn_sentiment.model.inference import PredictionResult
from rnn_sentiment.model.trace import Attribution, CellStep, TraceResult
from rnn_sentiment.v1 import sentiment_pb2 as pb

from .repository import ServedModel
from .trace_options import ATTRIBUTION_ENUMS

_CELL_TYPES = {"rnn": pb.CELL_TYPE_RNN, "gru": pb.CELL_TYPE_GRU, "lstm": pb.CELL_TYPE_LSTM}
_DIRECTIONS = {"forward": pb.DIRECTION_FORWARD, "backward": pb.DIRECTION_BACKWARD}
_GATE_FIELDS = {"update": "update_gate", "reset": "reset_gate", "input": "input_gate", "forget": "forget_gate",
                "output": "output_gate"}
_TRUNCATIONS = {"head": pb.TRUNCATION_HEAD, "head_tail": pb.TRUNCATION_HEAD_TAIL}
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
        text_token_count=result.text_token_count,
    )


def trace_message(
    served: ServedModel, result: TraceResult, include_hidden_states: bool, top_k_units: int = 0
) -> pb.TraceResponse:
    units = _top_units(result, top_k_units) if include_hidden_states else None
    memory = result.memory
    response = pb.TraceResponse(
        prediction=prediction_message(result.prediction),
        model=served.loaded.name,
        model_version=served.loaded.version,
        labels=served.loaded.config.labels,
        attributions=[_attribution_message(a) for a in result.attributions],
        memory_profile=pb.MemoryProfile(recency=memory.recency, decay_per_token=memory.decay_per_token,
                                        last_tokens=memory.last_tokens) if memory is not None else None,
        hidden_units=units or (),
        baseline_probabilities=result.baseline,
    )
    # Steps and cells are built in place: a message made first would be copied into the
    # repeated field (a trace has T steps of one or more cells each).
    add_step = response.steps.add
    for step in result.steps:
        message = add_step(
            token=step.token,
            in_vocabulary=step.known,
            hidden_state=_hidden(step.hidden, units) if include_hidden_states else (),
            hidden_state_norm=step.hidden_norm,
            probabilities=step.probabilities,
            positive_delta=step.delta_positive,
            hidden_change_norm=step.change_norm,
            attention_weight=step.attention,
            memory=step.memory,
        )
        add_cell = message.cells.add
        for cell in step.cells:
            add_cell(**_cell_fields(cell))
    return response


def _top_units(result: TraceResult, k: int) -> list[int] | None:
    """The k units with the largest mean |activation| over the text, in index order; None = all."""
    size = len(result.steps[0].hidden)
    if k <= 0 or k >= size:
        return None
    activity = [sum(abs(step.hidden[u]) for step in result.steps) for u in range(size)]
    return sorted(sorted(range(size), key=lambda u: -activity[u])[:k])


def _hidden(hidden: list[float], units: list[int] | None) -> list[float]:
    return hidden if units is None else [hidden[u] for u in units]


def _cell_fields(cell: CellStep) -> dict:
    """pb.CellStep's fields for one cell step; gates the cell lacks stay unset."""
    fields = dict(
        layer=cell.layer,
        direction=_DIRECTIONS[cell.direction],
        hidden_state_norm=cell.hidden_norm,
        hidden_change_norm=cell.change_norm,
        cell_state_norm=cell.cell_norm,
        memory=cell.memory,
    )
    for name, value in cell.gates.items():
        fields[_GATE_FIELDS[name]] = value
    return fields


def _attribution_message(attribution: Attribution) -> pb.Attribution:
    return pb.Attribution(
        method=ATTRIBUTION_ENUMS[attribution.method],
        scores=attribution.scores,
        target_label=attribution.target_label,
        steps=attribution.steps,
        logit_difference=attribution.logit_difference,
        completeness_gap=attribution.completeness_gap,
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
            subword_buckets=config.subword_buckets,
        ),
        labels=config.labels,
        vocabulary_size=len(loaded.vocab),
        max_tokens=served.max_tokens,  # the served limit, not the checkpoint's training one
        truncation=_TRUNCATIONS[served.truncation],
        truncation_head_tokens=served.token_limit.head_tokens,
        checkpoint_sha256=loaded.sha256,
        dev_accuracy=training.dev_accuracy if training is not None else 0.0,
        device=served.device,
        is_default=is_default,
    )
