"""A checkpoint is a directory: model.safetensors + config.json + vocab.json. No pickle, ever.

`torch.load` of an untrusted file can execute code; safetensors and JSON cannot.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from .checkpoint_schema import (
    FORMAT_VERSION,
    MAX_CONFIG_BYTES,
    MAX_PARAMETERS,
    MAX_VOCABULARY_BYTES,
    MAX_WEIGHTS_BYTES,
    MAX_WEIGHTS_HEADER_BYTES,
    check_vocabulary_tokens,
    parse_config_document,
)
from .config import ModelConfig, TrainingRecord
from .network import SentimentRNN
from .safetensors_header import HEADER_LENGTH_BYTES, InvalidHeader, check_tensors, header_length, parse_header
from .vocabulary import Vocabulary
from .weight_shapes import expected_state_shapes

__all__ = [
    "WEIGHTS_FILE", "CONFIG_FILE", "VOCAB_FILE", "FORMAT_VERSION",
    "CheckpointError", "LoadedModel", "save_checkpoint", "load_checkpoint", "checkpoint_sha256",
]

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
# The hash covers the files in this fixed order, so it names exactly what was loaded.
_HASHED_FILES = (CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE)
_WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16}
_SIZE_LIMITS = {CONFIG_FILE: MAX_CONFIG_BYTES, VOCAB_FILE: MAX_VOCABULARY_BYTES, WEIGHTS_FILE: MAX_WEIGHTS_BYTES}


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
    path: Path  # as the caller gave it: the server names a model after this directory entry
    # The directory the files were read from, symlinks resolved: which version was loaded.
    resolved_path: Path | None = None

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
    resolved = _resolve(Path(directory))
    digest = hashlib.sha256()
    for filename in _HASHED_FILES:
        digest.update(_read_file(resolved / filename, _SIZE_LIMITS[filename]))
    return digest.hexdigest()


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a checkpoint directory; raise CheckpointError naming the file (and field or tensor) at fault.

    Every file is checked as data before anything is built from it: config.json against its
    schema (model/checkpoint_schema.py), vocab.json against its bounds, model.safetensors' header
    against the shapes those two imply, and the weights for NaN and infinity.
    """
    directory = Path(directory)
    # Resolved once, so that a symlink flipped mid-load (`current -> v7`) cannot pair one
    # version's config with another's weights: every file is read from this one directory.
    resolved = _resolve(directory)
    config_path, vocab_path, weights_path = (resolved / f for f in (CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE))

    config_bytes = _read_file(config_path, MAX_CONFIG_BYTES)
    try:
        document = parse_config_document(_parse_json(config_bytes))
    except ValueError as error:  # includes InvalidField, JSON and UTF-8 decode errors
        raise CheckpointError(f"{config_path}: {error}") from error
    config = document.config

    vocab_bytes = _read_file(vocab_path, MAX_VOCABULARY_BYTES)
    try:
        vocab = Vocabulary(check_vocabulary_tokens(_parse_json(vocab_bytes)), config.subword_buckets)
    except ValueError as error:
        raise CheckpointError(f"{vocab_path}: {error}") from error

    expected = expected_state_shapes(config, len(vocab))
    parameters = sum(math.prod(shape) for shape in expected.values())
    if parameters > MAX_PARAMETERS:
        raise CheckpointError(f"{config_path} and {vocab_path} imply {parameters:,} parameters, "
                              f"more than the limit of {MAX_PARAMETERS:,}")
    weights_bytes = _read_weights(weights_path, expected)
    digest = hashlib.sha256(config_bytes)
    for content in (vocab_bytes, weights_bytes):
        digest.update(content)
    sha256 = digest.hexdigest()
    try:
        # From the bytes already hashed, so the hash names exactly the weights in use.
        tensors = load_safetensors_bytes(weights_bytes)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights_path} is not a readable safetensors file: {error}") from error
    del weights_bytes
    for key, tensor in tensors.items():
        # NaN weights would pass every later check (NaN > tolerance is False) and answer `nan`.
        bad = _non_finite_count(tensor)
        if bad:
            raise CheckpointError(f"{weights_path}: tensor {key} holds {bad} non-finite values (NaN or infinity)")

    network = SentimentRNN(config, vocab_size=len(vocab))
    state = {key: value.to(torch.float32) for key, value in tensors.items()}
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{weights_path} does not match {CONFIG_FILE}/{VOCAB_FILE}: {error}") from error
    network.to(device).eval()
    return LoadedModel(name=document.name, version=document.version, config=config, training=document.training,
                       vocab=vocab, network=network, sha256=sha256, path=directory, resolved_path=resolved)


def _parse_json(content: bytes) -> Any:
    """JSON from bytes; a ValueError for anything unparseable, deep nesting included."""
    try:
        return json.loads(content.decode("utf-8"))
    except RecursionError:  # `[[[[…` a few thousand deep: not a ValueError of its own
        raise ValueError("the document is nested too deeply to be a checkpoint file") from None


def _non_finite_count(tensor: torch.Tensor) -> int:
    """How many NaN or infinite values tensor holds. The least and greatest value, in one pass
    without a mask, answer for a finite tensor: NaN propagates through both, ±inf shows in one."""
    if tensor.numel() == 0:
        return 0
    least, greatest = torch.aminmax(tensor)
    if math.isfinite(least.item()) and math.isfinite(greatest.item()):
        return 0
    return int((~torch.isfinite(tensor)).sum())


def _resolve(directory: Path) -> Path:
    resolved = Path(os.path.realpath(directory))
    if not resolved.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    return resolved


@contextmanager
def _opened(path: Path, limit: int) -> Iterator[tuple[BinaryIO, int]]:
    """The open file and its size, refused when it is not a regular file or over limit bytes."""
    try:
        # Non-blocking, so that a FIFO planted under a checkpoint's name cannot hang the open.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError as error:
        raise CheckpointError(f"checkpoint file {path} is missing") from error
    except OSError as error:
        raise CheckpointError(f"checkpoint file {path} cannot be read: {error}") from error
    with os.fdopen(descriptor, "rb") as file:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise CheckpointError(f"checkpoint file {path} is not a regular file")
        if status.st_size > limit:
            raise CheckpointError(f"checkpoint file {path} is {status.st_size:,} bytes, "
                                  f"more than the limit of {limit:,}")
        try:
            yield file, status.st_size
        except OSError as error:
            raise CheckpointError(f"checkpoint file {path} cannot be read: {error}") from error


def _read_file(path: Path, limit: int) -> bytes:
    with _opened(path, limit) as (file, _):
        content = file.read(limit + 1)
    if len(content) > limit:  # it grew after the size was checked
        raise CheckpointError(f"checkpoint file {path} grew past the limit of {limit:,} bytes while read")
    return content


def _read_weights(path: Path, expected: dict[str, tuple[int, ...]]) -> bytes:
    """The weights file's bytes, read only after its header matches the expected tensors."""
    with _opened(path, MAX_WEIGHTS_BYTES) as (file, size):
        try:
            prefix = file.read(HEADER_LENGTH_BYTES)
            length = header_length(prefix, size, MAX_WEIGHTS_HEADER_BYTES)
            header = file.read(length)
            data_size = size - HEADER_LENGTH_BYTES - length
            check_tensors(parse_header(header, data_size), expected, data_size,
                          source=f"{CONFIG_FILE} and {VOCAB_FILE}")
        except InvalidHeader as error:
            raise CheckpointError(f"{path}: {error}") from error
        data = file.read(data_size + 1)
    if len(header) != length or len(data) != data_size:
        raise CheckpointError(f"checkpoint file {path} changed size while it was read")
    return prefix + header + data
