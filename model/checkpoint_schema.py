"""What a checkpoint's files may hold: config.json and vocab.json checked as data, with bounds.

A checkpoint may come from anywhere a model directory is filled from, so nothing in it is
trusted: every field is checked for its type and range here, before a tensor is allocated or
a module built, and a refusal names the field (`model.labels[0] must be a string, got 0`).
The bounds are far above any model this service ships (a GRU of 256 with 15k words and 10k
n-gram buckets) and far below what would exhaust a server's memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .config import CELLS, POOLINGS, ModelConfig, TrainingRecord

__all__ = [
    "MAX_CONFIG_BYTES", "MAX_VOCABULARY_BYTES", "MAX_WEIGHTS_BYTES", "MAX_WEIGHTS_HEADER_BYTES",
    "MAX_EMBEDDING_DIM", "MAX_HIDDEN_SIZE", "MAX_NUM_LAYERS", "MAX_TOKENS_BOUND", "MAX_SUBWORD_BUCKETS",
    "MAX_LABELS", "MAX_LABEL_CHARS", "MAX_VOCABULARY_TOKENS", "MAX_NAME_CHARS", "MAX_PARAMETERS",
    "FORMAT_VERSION", "CheckpointDocument", "InvalidField", "parse_config_document",
    "check_vocabulary_tokens",
]

# File sizes, checked with stat before a byte is read.
MAX_CONFIG_BYTES = 64 * 1024
MAX_VOCABULARY_BYTES = 32 * 1024 * 1024
MAX_WEIGHTS_BYTES = 256 * 1024 * 1024  # MAX_PARAMETERS float32 weights fit
MAX_WEIGHTS_HEADER_BYTES = 1024 * 1024  # a SentimentRNN's header is a few KB (one entry per tensor)

# Architecture bounds. Each also keeps one forward's activations small: max_tokens sets the
# longest sequence a request runs, embedding_dim × hidden_size the largest matrix.
MAX_EMBEDDING_DIM = 4096
MAX_HIDDEN_SIZE = 4096
MAX_NUM_LAYERS = 8
MAX_TOKENS_BOUND = 4096
MAX_SUBWORD_BUCKETS = 1_000_000
MAX_LABELS = 64
MAX_LABEL_CHARS = 64
MAX_VOCABULARY_TOKENS = 1_000_000
MAX_NAME_CHARS = 128  # name and version: they appear in logs, metric labels and every response
MAX_TRAINING_TEXT_CHARS = 256  # trained_at and data
# All weights together (64M float32 = 256 MB), checked from the config and vocabulary size alone.
MAX_PARAMETERS = 64_000_000

FORMAT_VERSION = 1
_DOCUMENT_KEYS = ("format_version", "name", "version", "model", "training")
_INTEGER_BOUNDS = {  # field -> (least, most)
    "embedding_dim": (1, MAX_EMBEDDING_DIM),
    "hidden_size": (1, MAX_HIDDEN_SIZE),
    "num_layers": (1, MAX_NUM_LAYERS),
    "max_tokens": (1, MAX_TOKENS_BOUND),
    "subword_buckets": (0, MAX_SUBWORD_BUCKETS),
}
_MODEL_DEFAULTS = ModelConfig().to_dict()  # JSON-shaped: labels as a list


class InvalidField(ValueError):
    """One field of a checkpoint file is missing, of the wrong type or out of range."""


@dataclass(frozen=True)
class CheckpointDocument:
    """config.json, checked: who the model is, its architecture and how it was trained."""

    name: str
    version: str
    config: ModelConfig
    training: TrainingRecord | None


def parse_config_document(document: object) -> CheckpointDocument:
    """Check a parsed config.json field by field; raise InvalidField naming the first bad one."""
    if not isinstance(document, dict):
        raise InvalidField(f"the document must be an object, got {_kind(document)}")
    _refuse_unknown_keys(document, _DOCUMENT_KEYS, "the document")
    format_version = _integer(_required(document, "format_version", "format_version"), "format_version")
    if format_version != FORMAT_VERSION:
        raise InvalidField(f"format_version must be {FORMAT_VERSION}, got {format_version}")
    name = _text(_required(document, "name", "name"), "name", MAX_NAME_CHARS)
    version = _text(_required(document, "version", "version"), "version", MAX_NAME_CHARS)
    config = _model_config(_required(document, "model", "model"))
    training = document.get("training")
    return CheckpointDocument(name=name, version=version, config=config,
                              training=None if training is None else _training_record(training))


def check_vocabulary_tokens(tokens: object) -> list[str]:
    """A parsed vocab.json: a list of at most MAX_VOCABULARY_TOKENS strings."""
    if not isinstance(tokens, list):
        raise InvalidField(f"the document must be a list of strings, got {_kind(tokens)}")
    if len(tokens) > MAX_VOCABULARY_TOKENS:
        raise InvalidField(f"the vocabulary holds {len(tokens):,} tokens; it may hold at most {MAX_VOCABULARY_TOKENS}")
    for index, token in enumerate(tokens):
        if not isinstance(token, str):
            raise InvalidField(f"token {index} must be a string, got {_shown(token)}")
    return tokens


def _model_config(data: object) -> ModelConfig:
    if not isinstance(data, dict):
        raise InvalidField(f"model must be an object, got {_kind(data)}")
    known = tuple(ModelConfig.__dataclass_fields__)
    _refuse_unknown_keys(data, known, "model")
    # A field left out takes its default: older checkpoints predate subword_buckets.
    value = {key: data.get(key, _MODEL_DEFAULTS[key]) for key in known}
    for key, options in (("cell", CELLS), ("pooling", POOLINGS)):
        if _string(value[key], f"model.{key}") not in options:
            raise InvalidField(f"model.{key} must be one of {list(options)}, got {value[key]!r}")
    for key, (least, most) in _INTEGER_BOUNDS.items():
        _bounded(_integer(value[key], f"model.{key}"), f"model.{key}", least, most)
    if type(value["bidirectional"]) is not bool:
        raise InvalidField(f"model.bidirectional must be true or false, got {_shown(value['bidirectional'])}")
    dropout = _number(value["dropout"], "model.dropout")
    if not 0.0 <= dropout < 1.0:
        raise InvalidField(f"model.dropout must be in [0, 1), got {dropout}")
    temperature = _number(value["temperature"], "model.temperature")
    if not temperature > 0.0:
        raise InvalidField(f"model.temperature must be > 0, got {temperature}")
    labels = _labels(value["labels"])
    return ModelConfig(**{**value, "dropout": dropout, "temperature": temperature, "labels": labels}).validate()


def _labels(data: object) -> tuple[str, ...]:
    if not isinstance(data, list):
        raise InvalidField(f"model.labels must be a list of strings, got {_kind(data)}")
    if not 2 <= len(data) <= MAX_LABELS:
        raise InvalidField(f"model.labels must hold at least 2 and at most {MAX_LABELS} names, got {len(data)}")
    seen: set[str] = set()
    for index, label in enumerate(data):
        _text(label, f"model.labels[{index}]", MAX_LABEL_CHARS)
        if label in seen:
            raise InvalidField(f"model.labels[{index}] repeats {label!r}; labels must be unique")
        seen.add(label)
    return tuple(data)


def _training_record(data: object) -> TrainingRecord:
    if not isinstance(data, dict):
        raise InvalidField(f"training must be an object or null, got {_kind(data)}")
    fields = tuple(TrainingRecord.__dataclass_fields__)
    _refuse_unknown_keys(data, fields, "training")
    for key in fields:
        _required(data, key, f"training.{key}")
    fractions = {key: _bounded_number(data[key], f"training.{key}", 0.0, 1.0)
                 for key in ("dev_accuracy", "dev_macro_f1")}
    amounts = {key: _bounded_number(data[key], f"training.{key}", 0.0, math.inf)
               for key in ("epochs_run", "best_epoch", "train_seconds")}
    return TrainingRecord(
        **fractions, **amounts,
        seed=_integer(data["seed"], "training.seed"),
        train_examples=_bounded(_integer(data["train_examples"], "training.train_examples"),
                                "training.train_examples", 0, None),
        trained_at=_text(data["trained_at"], "training.trained_at", MAX_TRAINING_TEXT_CHARS, empty_ok=True),
        data=_text(data["data"], "training.data", MAX_TRAINING_TEXT_CHARS, empty_ok=True),
    )


def _refuse_unknown_keys(data: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(key) for key in data if key not in known)
    if unknown:
        raise InvalidField(f"{where} has unknown keys {unknown[:8]}; known keys are {sorted(known)}")


def _required(data: dict[str, Any], key: str, field: str) -> Any:
    if key not in data:
        raise InvalidField(f"{field} is missing")
    return data[key]


def _integer(value: object, field: str) -> int:
    # bool is a subclass of int in Python, but `true` is not a size.
    if type(value) is not int:
        raise InvalidField(f"{field} must be an integer, got {_shown(value)}")
    return value


def _bounded(value: int, field: str, least: int, most: int | None) -> int:
    if value < least:
        raise InvalidField(f"{field} must be at least {least}, got {value}")
    if most is not None and value > most:
        raise InvalidField(f"{field} must be at most {most}, got {value}")
    return value


def _number(value: object, field: str) -> float:
    if type(value) not in (int, float):
        raise InvalidField(f"{field} must be a number, got {_shown(value)}")
    # Python's json reads NaN and Infinity, which no field of a model may hold.
    if not math.isfinite(value):
        raise InvalidField(f"{field} must be finite, got {value}")
    return float(value)


def _bounded_number(value: object, field: str, least: float, most: float) -> float:
    number = _number(value, field)
    if not least <= number <= most:
        upper = "inf)" if math.isinf(most) else f"{most:g}]"
        raise InvalidField(f"{field} must be in [{least:g}, {upper}, got {number}")
    return number


def _string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidField(f"{field} must be a string, got {_shown(value)}")
    return value


def _text(value: object, field: str, most: int, empty_ok: bool = False) -> str:
    """A string that may appear in logs and responses: bounded, printable (no newlines or escapes)."""
    text = _string(value, field)
    if not text and not empty_ok:
        raise InvalidField(f"{field} must not be empty")
    if len(text) > most:
        raise InvalidField(f"{field} must be at most {most} characters, got {len(text)}")
    if not text.isprintable():
        raise InvalidField(f"{field} must be printable (no control characters), got {text[:40]!r}")
    return text


def _shown(value: object) -> str:
    """A value for an error message, cut short: the message may reach a log."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")
