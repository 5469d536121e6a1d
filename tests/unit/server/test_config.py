from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import fields

import pytest

from rnn_sentiment.server.config import (
    NUMERIC_RANGES, ServerConfig, add_server_arguments, config_from, config_table_markdown,
)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults() -> None:
    config = config_from(_args(), environ={})
    assert config == ServerConfig()
    assert config.address == "127.0.0.1:50051" and config.metrics_address == "127.0.0.1:9464"


def test_flag_beats_environment_beats_default() -> None:
    environ = {"RNN_SENTIMENT_MAX_BATCH_SIZE": "16", "RNN_SENTIMENT_DEVICE": "cpu", "RNN_SENTIMENT_REFLECTION": "false"}
    config = config_from(_args("--max-batch-size", "8"), environ=environ)
    assert config.max_batch_size == 8
    assert config.device == "cpu"
    assert config.reflection is False
    assert config_from(_args("--reflection"), environ=environ).reflection is True


def test_bad_values_say_how_to_fix_them() -> None:
    with pytest.raises(ValueError, match="device='tpu': use one of auto, cpu, cuda"):
        config_from(_args("--device", "tpu"), environ={})
    with pytest.raises(ValueError, match="--max-texts-per-request/RNN_SENTIMENT_MAX_TEXTS_PER_REQUEST=0: must be from 1"):
        config_from(_args(), environ={"RNN_SENTIMENT_MAX_TEXTS_PER_REQUEST": "0"})
    with pytest.raises(ValueError, match="RNN_SENTIMENT_MAX_BATCH_SIZE='lots'"):
        config_from(_args(), environ={"RNN_SENTIMENT_MAX_BATCH_SIZE": "lots"})
    with pytest.raises(ValueError, match="expected a boolean"):
        config_from(_args(), environ={"RNN_SENTIMENT_REFLECTION": "maybe"})
    with pytest.raises(ValueError, match="--max-batch-delay-ms/RNN_SENTIMENT_MAX_BATCH_DELAY_MS=-1.0: must be from 0"):
        config_from(_args("--max-batch-delay-ms", "-1"), environ={})
    with pytest.raises(ValueError, match="expected a boolean"):
        config_from(_args(), environ={"RNN_SENTIMENT_PIN_WORKERS": "sometimes"})


@pytest.mark.parametrize("argv, environ", [
    (("--busy-batch-delay-ms", "0.5"), {}),
    ((), {"RNN_SENTIMENT_BUSY_BATCH_DELAY_MS": "0.5"}),
])
def test_a_removed_knob_is_refused_naming_what_replaced_it(argv: tuple[str, ...], environ: dict[str, str]) -> None:
    # A deployment that still sets it must not start silently without it.
    with pytest.raises(ValueError, match="busy-batch-delay-ms.*BUSY_BATCH_DELAY_MS.*removed.*--max-batch-delay-ms"):
        config_from(_args(*argv), environ=environ)


def test_config_table_documents_every_knob() -> None:
    table = config_table_markdown()
    for name in ServerConfig.__dataclass_fields__:
        assert f"`RNN_SENTIMENT_{name.upper()}`" in table


def test_configuration_page_shows_the_current_table() -> None:
    from tests.support import REPO_ROOT

    assert config_table_markdown() in (REPO_ROOT / "docs" / "configuration.md").read_text(), (
        "docs/configuration.md's table is stale: paste `rnn-sentiment serve --print-config-table`"
    )


def test_reading_and_checking_the_configuration_never_imports_torch() -> None:
    # A supervisor reads the configuration before any worker loads a model.
    code = ("import sys\nfrom rnn_sentiment.server.config import config_from\n"
            "config_from(None, {'RNN_SENTIMENT_BACKEND': 'onnxruntime'})\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_every_backend_the_model_runs_is_a_valid_choice() -> None:
    from rnn_sentiment.model.backends import BACKENDS

    for backend in BACKENDS:
        ServerConfig(backend=backend).validate()
    with pytest.raises(ValueError, match="backend='tensorrt'"):
        ServerConfig(backend="tensorrt").validate()
    with pytest.raises(ValueError, match="--onnx-max-batch/RNN_SENTIMENT_ONNX_MAX_BATCH=-1"):
        ServerConfig(onnx_max_batch=-1).validate()


NUMERIC_FIELDS = [f for f in fields(ServerConfig) if str(f.type) in ("int", "float")]
FLOAT_FIELDS = [f.name for f in NUMERIC_FIELDS if str(f.type) == "float"]


@pytest.mark.parametrize("name", FLOAT_FIELDS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
def test_float_settings_must_be_finite(name: str, value: str) -> None:
    flag = "--" + name.replace("_", "-")
    with pytest.raises(ValueError, match=f"{flag}/RNN_SENTIMENT_{name.upper()}=.*: must be a finite number"):
        config_from(_args(f"{flag}={value}"), environ={})  # "=": argparse reads a bare "-inf" as a flag
    with pytest.raises(ValueError, match=f"{flag}/RNN_SENTIMENT_{name.upper()}=.*: must be a finite number"):
        config_from(_args(), environ={f"RNN_SENTIMENT_{name.upper()}": value})


@pytest.mark.parametrize("name", [f.name for f in NUMERIC_FIELDS])
def test_every_numeric_setting_has_a_range_that_holds_its_default(name: str) -> None:
    assert name in NUMERIC_RANGES, f"add {name!r} to server/config.py NUMERIC_RANGES: every number is range-checked"
    allowed = NUMERIC_RANGES[name]
    assert allowed.lowest <= getattr(ServerConfig(), name) <= allowed.highest
    below, above = allowed.lowest - 1, allowed.highest + 1
    for value in (below, above):
        with pytest.raises(ValueError, match=f"RNN_SENTIMENT_{name.upper()}={value!r}: must be from"):
            ServerConfig(**{name: value}).validate()


def test_a_batch_delay_in_seconds_instead_of_ms_is_refused() -> None:
    with pytest.raises(ValueError, match="--max-batch-delay-ms/RNN_SENTIMENT_MAX_BATCH_DELAY_MS=1000000.0: "
                                         "must be from 0 to 10000"):
        config_from(_args("--max-batch-delay-ms", "1e6"), environ={})


def test_serve_refuses_infinity_before_starting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rnn_sentiment.cli", "serve", "--max-batch-delay-ms", "inf", "--metrics-address", ""],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "--max-batch-delay-ms/RNN_SENTIMENT_MAX_BATCH_DELAY_MS=inf: must be a finite number" in result.stderr


def _subcommands() -> list[str]:
    from rnn_sentiment.cli.main import build_parser

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(subparsers.choices)


@pytest.mark.parametrize("command", ["", *_subcommands()])
def test_help_of_every_command_works(command: str) -> None:
    # Each help is rendered by the process the user runs: `serve --help` builds the server flags.
    result = subprocess.run(
        [sys.executable, "-m", "rnn_sentiment.cli", *([command] if command else []), "--help"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: rnn-sentiment" in result.stdout


def test_serve_help_lists_every_flag() -> None:
    result = subprocess.run([sys.executable, "-m", "rnn_sentiment.cli", "serve", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for f in fields(ServerConfig):
        if not f.metadata.get("env_only"):
            assert "--" + f.name.replace("_", "-") in result.stdout
