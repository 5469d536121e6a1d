"""The values that describe a model (ModelConfig) and how it was trained (TrainingRecord)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["BACKENDS", "CELLS", "POOLINGS", "ModelConfig", "TrainingRecord"]

CELLS = ("rnn", "gru", "lstm")
POOLINGS = ("last", "mean", "max", "attention")
# Predict's executors (model/backends.py). Named here, away from torch and ONNX Runtime, so the
# server's configuration checks a choice without importing either.
BACKENDS = ("auto", "torch", "onnxruntime")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a SentimentRNN. Saved in the checkpoint's config.json, and read back
    through model/checkpoint_schema.py, which checks every field's type and bounds first."""

    cell: str = "gru"  # "rnn" (Elman, tanh) shows vanishing memory; gated cells cure it
    embedding_dim: int = 256
    hidden_size: int = 256
    num_layers: int = 1
    bidirectional: bool = False  # False keeps every step's state a readable "memory so far"
    pooling: str = "last"  # "last" = the classifier reads only the final memory, the RNN story
    dropout: float = 0.3
    labels: tuple[str, ...] = ("negative", "positive")  # index = class id in the data
    max_tokens: int = 128  # longer texts are truncated (SST sentences stay well under 64)
    temperature: float = 1.0  # logits are divided by this; fitted on dev after training
    # Rows of the hashed character n-gram table (model/subwords.py); 0 = words only. A word's
    # input is its vector plus the mean of its n-gram vectors, so an unseen word is not just <unk>.
    subword_buckets: int = 0

    def __post_init__(self) -> None:
        # JSON gives lists; the dataclass promises a tuple (hashable, immutable).
        object.__setattr__(self, "labels", tuple(self.labels))

    def validate(self) -> ModelConfig:
        """Raise ValueError naming the valid choices; return self so calls can chain."""
        if self.cell not in CELLS:
            raise ValueError(f"invalid cell {self.cell!r}; options are {list(CELLS)}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"invalid pooling {self.pooling!r}; options are {list(POOLINGS)}")
        for name in ("embedding_dim", "hidden_size", "num_layers", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be at least two distinct names, got {self.labels}")
        if self.subword_buckets < 0:
            raise ValueError(f"subword_buckets must be >= 0 (0 = no sub-words), got {self.subword_buckets}")
        if not self.temperature > 0.0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        return self

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["labels"] = list(self.labels)
        return data


@dataclass(frozen=True)
class TrainingRecord:
    """How a checkpoint was trained and how well it did on dev. Saved in config.json (read back
    through model/checkpoint_schema.py)."""

    dev_accuracy: float
    dev_macro_f1: float
    epochs_run: float  # fractional when early stopping ends mid-epoch
    best_epoch: float  # the (fractional) epoch whose weights were kept
    seed: int
    train_seconds: float
    train_examples: int
    trained_at: str  # ISO 8601, UTC
    data: str  # basename of the data directory, e.g. "sst2"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
