"""Model names: a model is named after its directory, and an unknown name is echoed bounded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rnn_sentiment.client import SentimentClient, SentimentError
from tests.support import ServerProcess, write_untrained_checkpoint


@pytest.mark.parametrize("length", [65, 16 * 1024])
def test_not_found_echoes_a_long_model_name_cut_short_with_its_length(client: SentimentClient, length: int) -> None:
    name = "m" * length
    with pytest.raises(SentimentError) as raised:
        client.predict("a good film", model=name)
    error = raised.value
    assert error.code == "NOT_FOUND"
    assert f"'{'m' * 64}'\u2026 ({length} characters)" in error.message
    assert len(error.message) < 300
    assert "sst2-gru" in error.message  # what is served, so the caller can fix the name
    assert client.predict("a good film").model == "sst2-gru"  # and the server keeps serving


def test_a_short_unknown_name_is_echoed_whole(client: SentimentClient) -> None:
    with pytest.raises(SentimentError) as raised:
        client.model_info("no-such-model")
    assert raised.value.code == "NOT_FOUND"
    assert "unknown model 'no-such-model'; this server serves: sst2-gru, sst2-rnn" in raised.value.message


def test_a_config_naming_another_model_than_its_directory_stops_the_start(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_untrained_checkpoint(models / "sst2-gru", "sst2-gru", "1.0.0")
    write_untrained_checkpoint(models / "sst2-rnn", "sst2-rnn", "1.0.0", seed=1)
    config = models / "sst2-rnn" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "name": "sst2-lstm"}))
    server = ServerProcess(extra_args=["--model-dir", str(models)])
    server.start(wait=False)
    try:
        assert server.process is not None
        assert server.process.wait(60) == 1
        log = server.log()
        assert "could not load the models" in log
        assert "config.json names the model 'sst2-lstm' but its directory is 'sst2-rnn'" in log
    finally:
        server.stop()
        if server.log_path is not None:
            server.log_path.unlink(missing_ok=True)
