"""cli/dataclass_flags.py: flags generated from a dataclass, on a small dataclass of its own."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from rnn_sentiment.cli.dataclass_flags import add_dataclass_flags, dataclass_from_flags, flag_kind


def _knob(default, help_text):  # type: ignore[no-untyped-def]
    return field(default=default, metadata={"help": help_text})


@dataclass
class Settings:
    rate: float = _knob(0.5, "share of 100% of the work")  # a literal % must not break --help
    limit: int | None = _knob(None, "most items")
    names: tuple[str, ...] = _knob((), "names")
    fast: bool = _knob(True, "go fast")


def _parsed(words: list[str]) -> Settings:
    parser = argparse.ArgumentParser()
    add_dataclass_flags(parser, Settings, spellings={"names": ("--name", "--names")})
    parser.format_help()
    return dataclass_from_flags(Settings, parser.parse_args(words))


def test_no_flags_give_the_defaults() -> None:
    assert _parsed([]) == Settings()


def test_each_kind_of_field_reads_its_flag() -> None:
    parsed = _parsed(["--rate", "0.25", "--limit", "3", "--name", "a", "b", "--no-fast"])
    assert parsed == Settings(rate=0.25, limit=3, names=("a", "b"), fast=False)


@pytest.mark.parametrize("annotation", [dict[str, int], int | str, tuple[int, str], list[str]])
def test_a_type_no_flag_can_express_is_refused(annotation: object) -> None:
    with pytest.raises(TypeError):
        flag_kind(annotation)
