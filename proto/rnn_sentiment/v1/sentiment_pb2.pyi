from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AttributionMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTRIBUTION_METHOD_UNSPECIFIED: _ClassVar[AttributionMethod]
    ATTRIBUTION_METHOD_PREFIX: _ClassVar[AttributionMethod]
    ATTRIBUTION_METHOD_GRADIENT_X_INPUT: _ClassVar[AttributionMethod]
    ATTRIBUTION_METHOD_INTEGRATED_GRADIENTS: _ClassVar[AttributionMethod]
    ATTRIBUTION_METHOD_OCCLUSION: _ClassVar[AttributionMethod]

class Direction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIRECTION_UNSPECIFIED: _ClassVar[Direction]
    DIRECTION_FORWARD: _ClassVar[Direction]
    DIRECTION_BACKWARD: _ClassVar[Direction]

class Truncation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRUNCATION_UNSPECIFIED: _ClassVar[Truncation]
    TRUNCATION_HEAD: _ClassVar[Truncation]
    TRUNCATION_HEAD_TAIL: _ClassVar[Truncation]

class CellType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CELL_TYPE_UNSPECIFIED: _ClassVar[CellType]
    CELL_TYPE_RNN: _ClassVar[CellType]
    CELL_TYPE_GRU: _ClassVar[CellType]
    CELL_TYPE_LSTM: _ClassVar[CellType]

class Pooling(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POOLING_UNSPECIFIED: _ClassVar[Pooling]
    POOLING_LAST: _ClassVar[Pooling]
    POOLING_MEAN: _ClassVar[Pooling]
    POOLING_MAX: _ClassVar[Pooling]
    POOLING_ATTENTION: _ClassVar[Pooling]
ATTRIBUTION_METHOD_UNSPECIFIED: AttributionMethod
ATTRIBUTION_METHOD_PREFIX: AttributionMethod
ATTRIBUTION_METHOD_GRADIENT_X_INPUT: AttributionMethod
ATTRIBUTION_METHOD_INTEGRATED_GRADIENTS: AttributionMethod
ATTRIBUTION_METHOD_OCCLUSION: AttributionMethod
DIRECTION_UNSPECIFIED: Direction
DIRECTION_FORWARD: Direction
DIRECTION_BACKWARD: Direction
TRUNCATION_UNSPECIFIED: Truncation
TRUNCATION_HEAD: Truncation
TRUNCATION_HEAD_TAIL: Truncation
CELL_TYPE_UNSPECIFIED: CellType
CELL_TYPE_RNN: CellType
CELL_TYPE_GRU: CellType
CELL_TYPE_LSTM: CellType
POOLING_UNSPECIFIED: Pooling
POOLING_LAST: Pooling
POOLING_MEAN: Pooling
POOLING_MAX: Pooling
POOLING_ATTENTION: Pooling

class PredictRequest(_message.Message):
    __slots__ = ("texts", "model")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    model: str
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("predictions", "model", "model_version")
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    model: str
    model_version: str
    def __init__(self, predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("label", "score", "probabilities", "token_count", "unknown_token_count", "truncated", "text_token_count")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TEXT_TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    token_count: int
    unknown_token_count: int
    truncated: bool
    text_token_count: int
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ..., probabilities: _Optional[_Iterable[float]] = ..., token_count: _Optional[int] = ..., unknown_token_count: _Optional[int] = ..., truncated: bool = ..., text_token_count: _Optional[int] = ...) -> None: ...

class TraceRequest(_message.Message):
    __slots__ = ("text", "model", "include_hidden_states", "attributions", "integrated_gradients_steps", "all_layers", "top_k_units", "include_memory_profile")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HIDDEN_STATES_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    INTEGRATED_GRADIENTS_STEPS_FIELD_NUMBER: _ClassVar[int]
    ALL_LAYERS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_UNITS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_MEMORY_PROFILE_FIELD_NUMBER: _ClassVar[int]
    text: str
    model: str
    include_hidden_states: bool
    attributions: _containers.RepeatedScalarFieldContainer[AttributionMethod]
    integrated_gradients_steps: int
    all_layers: bool
    top_k_units: int
    include_memory_profile: bool
    def __init__(self, text: _Optional[str] = ..., model: _Optional[str] = ..., include_hidden_states: bool = ..., attributions: _Optional[_Iterable[_Union[AttributionMethod, str]]] = ..., integrated_gradients_steps: _Optional[int] = ..., all_layers: bool = ..., top_k_units: _Optional[int] = ..., include_memory_profile: bool = ...) -> None: ...

class TraceResponse(_message.Message):
    __slots__ = ("prediction", "steps", "model", "model_version", "labels", "attributions", "memory_profile", "hidden_units", "baseline_probabilities")
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PROFILE_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_UNITS_FIELD_NUMBER: _ClassVar[int]
    BASELINE_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    prediction: Prediction
    steps: _containers.RepeatedCompositeFieldContainer[TraceStep]
    model: str
    model_version: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    attributions: _containers.RepeatedCompositeFieldContainer[Attribution]
    memory_profile: MemoryProfile
    hidden_units: _containers.RepeatedScalarFieldContainer[int]
    baseline_probabilities: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, prediction: _Optional[_Union[Prediction, _Mapping]] = ..., steps: _Optional[_Iterable[_Union[TraceStep, _Mapping]]] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., attributions: _Optional[_Iterable[_Union[Attribution, _Mapping]]] = ..., memory_profile: _Optional[_Union[MemoryProfile, _Mapping]] = ..., hidden_units: _Optional[_Iterable[int]] = ..., baseline_probabilities: _Optional[_Iterable[float]] = ...) -> None: ...

class Attribution(_message.Message):
    __slots__ = ("method", "scores", "target_label", "steps", "logit_difference", "completeness_gap")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    TARGET_LABEL_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LOGIT_DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    COMPLETENESS_GAP_FIELD_NUMBER: _ClassVar[int]
    method: AttributionMethod
    scores: _containers.RepeatedScalarFieldContainer[float]
    target_label: str
    steps: int
    logit_difference: float
    completeness_gap: float
    def __init__(self, method: _Optional[_Union[AttributionMethod, str]] = ..., scores: _Optional[_Iterable[float]] = ..., target_label: _Optional[str] = ..., steps: _Optional[int] = ..., logit_difference: _Optional[float] = ..., completeness_gap: _Optional[float] = ...) -> None: ...

class MemoryProfile(_message.Message):
    __slots__ = ("recency", "decay_per_token", "last_tokens")
    RECENCY_FIELD_NUMBER: _ClassVar[int]
    DECAY_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LAST_TOKENS_FIELD_NUMBER: _ClassVar[int]
    recency: float
    decay_per_token: float
    last_tokens: int
    def __init__(self, recency: _Optional[float] = ..., decay_per_token: _Optional[float] = ..., last_tokens: _Optional[int] = ...) -> None: ...

class TraceStep(_message.Message):
    __slots__ = ("token", "in_vocabulary", "hidden_state", "hidden_state_norm", "probabilities", "positive_delta", "hidden_change_norm", "attention_weight", "memory", "cells")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    IN_VOCABULARY_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_STATE_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_STATE_NORM_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_DELTA_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_CHANGE_NORM_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    token: str
    in_vocabulary: bool
    hidden_state: _containers.RepeatedScalarFieldContainer[float]
    hidden_state_norm: float
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    positive_delta: float
    hidden_change_norm: float
    attention_weight: float
    memory: float
    cells: _containers.RepeatedCompositeFieldContainer[CellStep]
    def __init__(self, token: _Optional[str] = ..., in_vocabulary: bool = ..., hidden_state: _Optional[_Iterable[float]] = ..., hidden_state_norm: _Optional[float] = ..., probabilities: _Optional[_Iterable[float]] = ..., positive_delta: _Optional[float] = ..., hidden_change_norm: _Optional[float] = ..., attention_weight: _Optional[float] = ..., memory: _Optional[float] = ..., cells: _Optional[_Iterable[_Union[CellStep, _Mapping]]] = ...) -> None: ...

class CellStep(_message.Message):
    __slots__ = ("layer", "direction", "hidden_state_norm", "hidden_change_norm", "update_gate", "reset_gate", "input_gate", "forget_gate", "output_gate", "cell_state_norm", "memory")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_STATE_NORM_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_CHANGE_NORM_FIELD_NUMBER: _ClassVar[int]
    UPDATE_GATE_FIELD_NUMBER: _ClassVar[int]
    RESET_GATE_FIELD_NUMBER: _ClassVar[int]
    INPUT_GATE_FIELD_NUMBER: _ClassVar[int]
    FORGET_GATE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_GATE_FIELD_NUMBER: _ClassVar[int]
    CELL_STATE_NORM_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    layer: int
    direction: Direction
    hidden_state_norm: float
    hidden_change_norm: float
    update_gate: float
    reset_gate: float
    input_gate: float
    forget_gate: float
    output_gate: float
    cell_state_norm: float
    memory: float
    def __init__(self, layer: _Optional[int] = ..., direction: _Optional[_Union[Direction, str]] = ..., hidden_state_norm: _Optional[float] = ..., hidden_change_norm: _Optional[float] = ..., update_gate: _Optional[float] = ..., reset_gate: _Optional[float] = ..., input_gate: _Optional[float] = ..., forget_gate: _Optional[float] = ..., output_gate: _Optional[float] = ..., cell_state_norm: _Optional[float] = ..., memory: _Optional[float] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "architecture", "labels", "vocabulary_size", "max_tokens", "checkpoint_sha256", "dev_accuracy", "device", "is_default", "truncation", "truncation_head_tokens", "max_texts_per_request", "max_text_chars")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    VOCABULARY_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_SHA256_FIELD_NUMBER: _ClassVar[int]
    DEV_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_HEAD_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXTS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    architecture: Architecture
    labels: _containers.RepeatedScalarFieldContainer[str]
    vocabulary_size: int
    max_tokens: int
    checkpoint_sha256: str
    dev_accuracy: float
    device: str
    is_default: bool
    truncation: Truncation
    truncation_head_tokens: int
    max_texts_per_request: int
    max_text_chars: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., architecture: _Optional[_Union[Architecture, _Mapping]] = ..., labels: _Optional[_Iterable[str]] = ..., vocabulary_size: _Optional[int] = ..., max_tokens: _Optional[int] = ..., checkpoint_sha256: _Optional[str] = ..., dev_accuracy: _Optional[float] = ..., device: _Optional[str] = ..., is_default: bool = ..., truncation: _Optional[_Union[Truncation, str]] = ..., truncation_head_tokens: _Optional[int] = ..., max_texts_per_request: _Optional[int] = ..., max_text_chars: _Optional[int] = ...) -> None: ...

class Architecture(_message.Message):
    __slots__ = ("cell_type", "num_layers", "embedding_dim", "hidden_size", "bidirectional", "pooling", "parameter_count", "subword_buckets")
    CELL_TYPE_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    BIDIRECTIONAL_FIELD_NUMBER: _ClassVar[int]
    POOLING_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_COUNT_FIELD_NUMBER: _ClassVar[int]
    SUBWORD_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    cell_type: CellType
    num_layers: int
    embedding_dim: int
    hidden_size: int
    bidirectional: bool
    pooling: Pooling
    parameter_count: int
    subword_buckets: int
    def __init__(self, cell_type: _Optional[_Union[CellType, str]] = ..., num_layers: _Optional[int] = ..., embedding_dim: _Optional[int] = ..., hidden_size: _Optional[int] = ..., bidirectional: bool = ..., pooling: _Optional[_Union[Pooling, str]] = ..., parameter_count: _Optional[int] = ..., subword_buckets: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class StreamSentimentRequest(_message.Message):
    __slots__ = ("text", "model", "include_steps")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_STEPS_FIELD_NUMBER: _ClassVar[int]
    text: str
    model: str
    include_steps: bool
    def __init__(self, text: _Optional[str] = ..., model: _Optional[str] = ..., include_steps: bool = ...) -> None: ...

class StreamSentimentResponse(_message.Message):
    __slots__ = ("prediction", "steps", "model", "model_version", "final")
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    prediction: Prediction
    steps: _containers.RepeatedCompositeFieldContainer[TraceStep]
    model: str
    model_version: str
    final: bool
    def __init__(self, prediction: _Optional[_Union[Prediction, _Mapping]] = ..., steps: _Optional[_Iterable[_Union[TraceStep, _Mapping]]] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., final: bool = ...) -> None: ...

class StreamPredictRequest(_message.Message):
    __slots__ = ("request", "id")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    request: PredictRequest
    id: str
    def __init__(self, request: _Optional[_Union[PredictRequest, _Mapping]] = ..., id: _Optional[str] = ...) -> None: ...

class StreamPredictResponse(_message.Message):
    __slots__ = ("id", "response", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    response: PredictResponse
    error: StreamError
    def __init__(self, id: _Optional[str] = ..., response: _Optional[_Union[PredictResponse, _Mapping]] = ..., error: _Optional[_Union[StreamError, _Mapping]] = ...) -> None: ...

class StreamError(_message.Message):
    __slots__ = ("code", "message", "field_violations")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    field_violations: _containers.RepeatedCompositeFieldContainer[FieldViolation]
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., field_violations: _Optional[_Iterable[_Union[FieldViolation, _Mapping]]] = ...) -> None: ...

class FieldViolation(_message.Message):
    __slots__ = ("field", "description")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    field: str
    description: str
    def __init__(self, field: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...
