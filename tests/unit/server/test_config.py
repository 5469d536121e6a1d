from __future__ import annotations

import argparse

import pytest

from rnn_sentiment.server.config import ServerConfig, add_server_arguments, config_from, config_table_markdown


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
    with pytest.raises(ValueError, match="max_texts_per_request=0: must be at least 1"):
        config_from(_args(), environ={"RNN_SENTIMENT_MAX_TEXTS_PER_REQUEST": "0"})
    with pytest.raises(ValueError, match="RNN_SENTIMENT_MAX_BATCH_SIZE='lots'"):
        config_from(_args(), environ={"RNN_SENTIMENT_MAX_BATCH_SIZE": "lots"})
    with pytest.raises(ValueError, match="expected a boolean"):
        config_from(_args(), environ={"RNN_SENTIMENT_REFLECTION": "maybe"})
    with pytest.raises(ValueError, match="busy_batch_delay_ms must be >= 0"):
        config_from(_args("--busy-batch-delay-ms", "-1"), environ={})
    with pytest.raises(ValueError, match="expected a boolean"):
        config_from(_args(), environ={"RNN_SENTIMENT_PIN_WORKERS": "sometimes"})


def test_readme_table_documents_every_knob() -> None:
    table = config_table_markdown()
    for name in ServerConfig.__dataclass_fields__:
        assert f"`RNN_SENTIMENT_{name.upper()}`" in table


def test_readme_shows_the_current_table() -> None:
    from tests.support import REPO_ROOT

    assert config_table_markdown() in (REPO_ROOT / "README.md").read_text(), (
        "README's configuration table is stale: paste `rnn-sentiment serve --print-config-table`"
    )


def test_backend_choices_are_the_model_layers() -> None:
    from rnn_sentiment.model.backends import BACKENDS as MODEL_BACKENDS
    from rnn_sentiment.server.config import BACKENDS

    assert BACKENDS == MODEL_BACKENDS
    with pytest.raises(ValueError, match="backend='tensorrt'"):
        ServerConfig(backend="tensorrt").validate()
    with pytest.raises(ValueError, match="onnx_max_batch"):
        ServerConfig(onnx_max_batch=-1).validate()
