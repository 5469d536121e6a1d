"""A checkpoint is a directory: model.safetensors + config.json + vocab.json. No pickle, ever.

`torch.load` of an untrusted file can execute code; safetensors and JSON cannot.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from .config import ModelConfig, TrainingRecord
from .network import SentimentRNN
from .vocabulary import Vocabulary

__all__ = [
    "WEIGHTS_FILE", "CONFIG_FILE", "VOCAB_FILE", "FORMAT_VERSION",
    "CheckpointError", "LoadedModel", "save_checkpoint", "load_checkpoint", "checkpoint_sha256",
]

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
FORMAT_VERSION = 1
# The hash covers the files in this fixed order, so it names exactly what was loaded.
_HASHED_FILES = (CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE)
_WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16}


class CheckpointError(Exception):
    """A checkpoint directory is missing a file, or a file is unreadable or inconsistent."""


@dataclass
class LoadedModel:
    name: str
    version: str
    config: ModelConfig
    training: TrainingRecord | None
    vocab: Vocabulary
    network: SentimentRNN  # in eval mode, on `device`
    sha256: str
    path: Path

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device


def save_checkpoint(directory: str | Path, network: SentimentRNN, vocab: Vocabulary,
                    config: ModelConfig, name: str, version: str,
                    training: TrainingRecord | None = None,
                    weights_dtype: str = "float32") -> None:
    """Write the three checkpoint files into directory (created if needed).

    weights_dtype "float16" halves the file; load_checkpoint always returns float32 weights.
    """
    if weights_dtype not in _WEIGHT_DTYPES:
        raise ValueError(f"invalid weights_dtype {weights_dtype!r}; options are {list(_WEIGHT_DTYPES)}")
    config.validate()
    if network.embedding.num_embeddings != len(vocab):
        raise ValueError(f"network has {network.embedding.num_embeddings} embeddings but the "
                         f"vocabulary has {len(vocab)} tokens")
    if network.has_unfolded_subwords:
        # A loaded network never has the known-word n-gram table: it would silently serve without it.
        raise ValueError("fold the known words' n-grams into their vectors before saving "
                         "(SentimentRNN.fold_known_subwords)")
    if vocab.subword_buckets != config.subword_buckets:
        raise ValueError(f"vocabulary hashes into {vocab.subword_buckets} n-gram buckets, "
                         f"the config says {config.subword_buckets}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dtype = _WEIGHT_DTYPES[weights_dtype]
    tensors = {key: value.detach().to("cpu", dtype).contiguous()
               for key, value in network.state_dict().items()}
    # Bytes, then an ordinary write: save_file() creates the file mode 0600, which a server
    # running as another user (a container) could not read.
    (directory / WEIGHTS_FILE).write_bytes(save_safetensors_bytes(tensors, metadata={"format": "pt"}))
    document: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": version,
        "model": config.to_dict(),
        "training": training.to_dict() if training is not None else None,
    }
    (directory / CONFIG_FILE).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    (directory / VOCAB_FILE).write_text(vocab.to_json() + "\n", encoding="utf-8")


def checkpoint_sha256(directory: str | Path) -> str:
    """sha256 over config.json, vocab.json and model.safetensors bytes, in that order."""
    digest = hashlib.sha256()
    for filename in _HASHED_FILES:
        digest.update(_read_bytes(Path(directory) / filename))
    return digest.hexdigest()


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a checkpoint directory; raise CheckpointError naming the file at fault."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    config_path = directory / CONFIG_FILE
    vocab_path = directory / VOCAB_FILE
    weights_path = directory / WEIGHTS_FILE
    contents = {filename: _read_bytes(directory / filename) for filename in _HASHED_FILES}
    sha256 = hashlib.sha256(b"".join(contents[f] for f in _HASHED_FILES)).hexdigest()

    try:
        document = json.loads(contents[CONFIG_FILE].decode("utf-8"))
        name = str(document["name"])
        version = str(document["version"])
        config = ModelConfig.from_dict(document["model"])
        training = (TrainingRecord.from_dict(document["training"])
                    if document.get("training") is not None else None)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{config_path} is not a valid checkpoint config: {error}") from error
    try:
        vocab = Vocabulary.from_json(contents[VOCAB_FILE].decode("utf-8"), config.subword_buckets)
    except ValueError as error:  # includes JSON and UTF-8 decode errors
        raise CheckpointError(f"{vocab_path} is not a valid vocabulary: {error}") from error
    try:
        # From the bytes already hashed, so the hash names exactly the weights in use.
        tensors = load_safetensors_bytes(contents[WEIGHTS_FILE])
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights_path} is not a readable safetensors file: {error}") from error

    network = SentimentRNN(config, vocab_size=len(vocab))
    state = {key: value.to(torch.float32) for key, value in tensors.items()}
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{weights_path} does not match {CONFIG_FILE}/{VOCAB_FILE}: {error}") from error
    network.to(device).eval()
    return LoadedModel(name=name, version=version, config=config, training=training, vocab=vocab,
                       network=network, sha256=sha256, path=directory)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as error:
        raise CheckpointError(f"checkpoint file {path} is missing") from error
    except OSError as error:
        raise CheckpointError(f"checkpoint file {path} cannot be read: {error}") from error
