"""cli/dataclass_flags.py: flags generated from a dataclass, on a small dataclass of its own."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from rnn_sentiment.cli.dataclass_flags import FlagKind, add_dataclass_flags, dataclass_from_flags, flag_kind


def _knob(default, help_text):  # type: ignore[no-untyped-def]
    return field(default=default, metadata={"help": help_text})


@dataclass
class Settings:
    rate: float = _knob(0.5, "share of 100% of the work")  # a literal % must not break --help
    limit: int | None = _knob(None, "most items")
    names: tuple[str, ...] = _knob((), "names")
    fast: bool = _knob(True, "go fast")
    careful: bool = _knob(False, "double-check")
    cell: str = field(default="gru", metadata={"help": "recurrent cell", "choices": ("rnn", "gru"), "metavar": "CELL"})


def _parser(**spellings: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    if spellings:
        add_dataclass_flags(parser, Settings, spellings=spellings)
    else:
        add_dataclass_flags(parser, Settings)
    return parser


def _parsed(words: list[str]) -> Settings:
    parser = _parser(names=("--name", "--names"))
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


def test_help_shows_each_default_as_a_user_reads_it() -> None:
    # One line per flag whatever the terminal's width: argparse wraps help text otherwise.
    text = " ".join(_parser().format_help().split())
    assert "share of 100% of the work (default: 0.5)" in text
    assert "most items (default: none)" in text  # None
    assert "names (default: none)" in text  # an empty tuple
    assert "go fast (default: on)" in text and "double-check (default: off)" in text
    assert "--cell CELL recurrent cell (default: gru)" in text


def test_a_value_outside_the_choices_is_refused_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        _parsed(["--cell", "lstm"])
    assert stopped.value.code == 2
    assert "invalid choice: 'lstm'" in capsys.readouterr().err
    assert _parsed(["--cell", "rnn"]).cell == "rnn"


@pytest.mark.parametrize(("annotation", "kind"), [
    (str, FlagKind(str, optional=False, many=False)),
    (bool, FlagKind(bool, optional=False, many=False)),
    (int | None, FlagKind(int, optional=True, many=False)),
    (tuple[float, ...], FlagKind(float, optional=False, many=True)),
    (tuple[str, ...] | None, FlagKind(str, optional=True, many=True)),
])
def test_each_expressible_annotation_has_its_kind(annotation: object, kind: FlagKind) -> None:
    assert flag_kind(annotation) == kind


def test_a_field_spelled_otherwise_answers_to_its_spellings_only(capsys: pytest.CaptureFixture[str]) -> None:
    parser = _parser(limit=("--most", "--at-most"))
    assert dataclass_from_flags(Settings, parser.parse_args(["--at-most", "3"])).limit == 3
    assert dataclass_from_flags(Settings, parser.parse_args(["--most", "4"])).limit == 4
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(["--limit", "3"])
    assert stopped.value.code == 2 and "unrecognized arguments: --limit" in capsys.readouterr().err
