"""`rnn-sentiment train`: its flags, generated from TrainConfig, and the TrainConfig they make."""

from __future__ import annotations

import argparse

from rnn_sentiment.model.train_config import TrainConfig

from .dataclass_flags import add_dataclass_flags, dataclass_from_flags

# Flags spelled otherwise than `--field-name`, as users have typed them since the first release.
FLAG_SPELLINGS = {
    "data_dir": ("--data", "--data-dir"),
    "output_dir": ("--output",),
    "time_limit_seconds": ("--time-limit",),
}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags for `rnn-sentiment train`: one per TrainConfig field, and --quiet."""
    add_dataclass_flags(parser, TrainConfig, spellings=FLAG_SPELLINGS)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    return dataclass_from_flags(TrainConfig, args)
