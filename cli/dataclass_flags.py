"""Command-line flags generated from a settings dataclass, and the dataclass built back from them.

One flag per field: `--field-name`, typed by the field's annotation, defaulting to the field's
default, with `help` (and optional `choices`, `metavar`) from the field's metadata. A bool is an
`--x/--no-x` pair, `T | None` takes a T (absent: None), `tuple[str, ...]` takes one or more values.

>>> import argparse
>>> from rnn_sentiment.model.train_config import TrainConfig
>>> parser = argparse.ArgumentParser()
>>> add_dataclass_flags(parser, TrainConfig)
>>> dataclass_from_flags(TrainConfig, parser.parse_args(["--cell", "lstm"])).cell
'lstm'
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Mapping, Sequence, TypeVar

SettingsT = TypeVar("SettingsT")


@dataclasses.dataclass(frozen=True)
class FlagKind:
    """How one field's annotation reads from the command line."""

    value_type: type  # what each value on the command line is converted to
    optional: bool  # `T | None`
    many: bool  # `tuple[T, ...]`


def flag_kind(annotation: Any) -> FlagKind:
    """The FlagKind of a resolved annotation; raises TypeError for one no flag can express."""
    arguments = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        others = [a for a in arguments if a is not type(None)]
        if len(others) != 1 or len(arguments) != 2:
            raise TypeError(f"{annotation}: only `T | None` unions become flags")
        return dataclasses.replace(flag_kind(others[0]), optional=True)
    if typing.get_origin(annotation) is tuple:
        if len(arguments) != 2 or arguments[1] is not Ellipsis:
            raise TypeError(f"{annotation}: only `tuple[T, ...]` becomes a flag")
        return FlagKind(arguments[0], optional=False, many=True)
    if annotation in (str, int, float, bool):
        return FlagKind(annotation, optional=False, many=False)
    raise TypeError(f"{annotation}: no flag for this type")


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _shown(default: Any) -> str:
    if default is None or default == ():
        return "none"
    if isinstance(default, bool):
        return "on" if default else "off"
    return str(default)


def add_dataclass_flags(
    parser: argparse.ArgumentParser,
    settings_type: type,
    *,
    spellings: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """One flag per field of `settings_type`; `spellings` names the flags of fields whose flags
    differ from `--field-name` (kept for users who know them). Each flag's dest is its field."""
    spellings = spellings or {}
    hints = typing.get_type_hints(settings_type)
    for field in dataclasses.fields(settings_type):
        kind = flag_kind(hints[field.name])
        names = list(spellings.get(field.name, (flag_name(field.name),)))
        # argparse %-formats help strings: a literal % must be doubled.
        help_text = f"{field.metadata['help']} (default: {_shown(field.default)})".replace("%", "%%")
        options: dict[str, Any] = dict(dest=field.name, default=field.default, help=help_text)
        if field.metadata.get("choices"):
            options["choices"] = tuple(field.metadata["choices"])
        if field.metadata.get("metavar"):
            options["metavar"] = field.metadata["metavar"]
        if kind.value_type is bool:
            parser.add_argument(*names, action=argparse.BooleanOptionalAction, **options)
        else:
            parser.add_argument(*names, type=kind.value_type, nargs="+" if kind.many else None, **options)


def dataclass_from_flags(settings_type: type[SettingsT], args: argparse.Namespace) -> SettingsT:
    """The `settings_type` the flags added by add_dataclass_flags were set to."""
    hints = typing.get_type_hints(settings_type)
    values = {}
    for field in dataclasses.fields(settings_type):  # type: ignore[arg-type]
        value = getattr(args, field.name)
        values[field.name] = tuple(value) if flag_kind(hints[field.name]).many else value
    return settings_type(**values)
