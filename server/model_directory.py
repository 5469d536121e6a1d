"""Which checkpoints a model directory holds, and the name each one is served under.

A model's name is its directory's name: the entry's own name under the model directory (a
symlink's name, not its target's), or, when the model directory is itself a checkpoint, that
directory's name. The `name` in config.json must agree; otherwise one directory could claim
another's name and take over its traffic on the next reload.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import quoted_name

CHECKPOINT_MARKER = "config.json"
# "Not there" rather than "cannot tell": the entry is simply not a checkpoint.
_ABSENT_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR})


class ModelDirectoryError(ValueError):
    """The model directory itself could not be read (not one entry in it)."""


class ModelNameMismatch(ValueError):
    """A checkpoint's config.json names another model than its directory does."""


@dataclass(frozen=True)
class CheckpointDir:
    """A checkpoint found in the model directory."""

    name: str  # the model's name: its directory entry's name
    path: Path


@dataclass(frozen=True)
class UnreadableEntry:
    """An entry that could not be inspected (permissions, a path too long, an I/O error).

    Skipped, not fatal: the next scan looks at it again."""

    name: str
    path: Path
    error: str


@dataclass(frozen=True)
class DirectoryScan:
    checkpoints: tuple[CheckpointDir, ...]  # sorted by name
    unreadable: tuple[UnreadableEntry, ...]


def model_name_of(directory: Path) -> str:
    """The name a checkpoint directory serves under. abspath drops "." and ".." by spelling
    alone, without following symlinks, so `--model-dir ./current/.` is named "current"."""
    return Path(os.path.abspath(directory)).name


def _holds_checkpoint(directory: Path) -> bool:
    """True if directory/config.json is a file, False if there is none; OSError if we cannot tell."""
    try:
        return stat.S_ISREG(os.stat(directory / CHECKPOINT_MARKER).st_mode)
    except OSError as error:
        if error.errno in _ABSENT_ERRNOS:
            return False
        raise


def scan_model_directory(model_dir: Path) -> DirectoryScan:
    """The checkpoint `model_dir` is, or the checkpoints directly under it.

    A missing model directory scans as empty. An entry that cannot be inspected is reported in
    `unreadable` and the others are still scanned; ModelDirectoryError if `model_dir` itself
    cannot be read.
    """
    try:
        if _holds_checkpoint(model_dir):
            return DirectoryScan((CheckpointDir(model_name_of(model_dir), model_dir),), ())
        names = sorted(os.listdir(model_dir))
    except (FileNotFoundError, NotADirectoryError):
        return DirectoryScan((), ())
    except OSError as error:
        raise ModelDirectoryError(f"cannot read the model directory {model_dir}: {error}") from error
    checkpoints: list[CheckpointDir] = []
    unreadable: list[UnreadableEntry] = []
    for name in names:
        path = model_dir / name
        try:
            if _holds_checkpoint(path):
                checkpoints.append(CheckpointDir(name, path))
        except OSError as error:
            unreadable.append(UnreadableEntry(name, path, describe_os_error(error)))
    return DirectoryScan(tuple(checkpoints), tuple(unreadable))


def describe_os_error(error: OSError) -> str:
    """"PermissionError: Permission denied": the kind and the reason, without the path (logged beside it)."""
    return f"{type(error).__name__}: {error.strerror or error}"


def check_model_name(checkpoint: CheckpointDir, config_name: str) -> None:
    """Refuse a checkpoint whose config.json names another model than its directory does."""
    if config_name != checkpoint.name:
        raise ModelNameMismatch(
            f"{checkpoint.path}: config.json names the model {quoted_name(config_name)} but its directory "
            f"is {checkpoint.name!r}; a model is served under its directory's name: rename the directory "
            f"or set \"name\": {checkpoint.name!r} in config.json"
        )
