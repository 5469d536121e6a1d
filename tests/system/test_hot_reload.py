"""Hot reload under load: a new version swaps in with zero failed calls; a broken one is rejected."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from rnn_sentiment.client import SentimentClient, SentimentError
from tests.support import ServerProcess, write_untrained_checkpoint

pytestmark = pytest.mark.slow


def replace_checkpoint(live: Path, source: Path) -> None:
    """Move each new file over the old one (rename is atomic per file, as a deploy tool does)."""
    for file in sorted(source.iterdir()):
        os.replace(file, live / file.name)


def reload_count(server: ServerProcess, result: str) -> float:
    """Reloads with this result, summed over models."""
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in response.read().decode().splitlines()
            if line.startswith("rnn_sentiment_model_reload_total{") and f'result="{result}"' in line
        )


class Hammer:
    """Calls Predict in a loop from one thread; records (version, error) per call. Bounded."""

    def __init__(self, target: str, max_calls: int = 20000) -> None:
        self.versions: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._target = target
        self._max_calls = max_calls
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with SentimentClient(self._target, timeout=10) as client:
            for _ in range(self._max_calls):
                if self._stop.is_set():
                    return
                try:
                    self.versions.append(client.predict(["a good film", "not bad ."]).model_version)
                except SentimentError as error:
                    self.errors.append(f"{error.code}: {error.message}")

    def __enter__(self) -> "Hammer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def wait_for_version(self, version: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.versions or self.versions[-1] != version:
            assert time.monotonic() < deadline, f"never saw version {version}; saw {set(self.versions)}, errors {self.errors[:3]}"
            time.sleep(0.05)


def test_file_change_swaps_versions_with_no_failed_call(tmp_path: Path) -> None:
    live = write_untrained_checkpoint(tmp_path / "models" / "sst2-gru", "sst2-gru", "1.0.0")
    server = ServerProcess(extra_args=["--model-dir", str(tmp_path / "models"), "--model-poll-seconds", "0.2"]).start()
    try:
        with Hammer(server.target) as hammer:
            hammer.wait_for_version("1.0.0")
            replace_checkpoint(live, write_untrained_checkpoint(tmp_path / "v2", "sst2-gru", "2.0.0", seed=1))
            hammer.wait_for_version("2.0.0")
            calls_at_swap = len(hammer.versions)
            deadline = time.monotonic() + 30
            while len(hammer.versions) < calls_at_swap + 20:
                assert time.monotonic() < deadline
                time.sleep(0.05)

            # A broken version: the weights file is truncated. It must be rejected, v2 keeps serving.
            broken = write_untrained_checkpoint(tmp_path / "v3", "sst2-gru", "3.0.0", seed=2)
            weights = broken / "model.safetensors"
            weights.write_bytes(weights.read_bytes()[:100])
            replace_checkpoint(live, broken)
            deadline = time.monotonic() + 30
            while reload_count(server, "failure") < 1:
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.1)
            versions_after_failure = len(hammer.versions)
            while len(hammer.versions) < versions_after_failure + 20:
                assert time.monotonic() < deadline
                time.sleep(0.05)

        assert hammer.errors == []
        assert set(hammer.versions) == {"1.0.0", "2.0.0"}
        # One sequential caller: once it has seen v2, it never sees v1 again (no mixing).
        first_v2 = hammer.versions.index("2.0.0")
        assert "1.0.0" not in hammer.versions[first_v2:]
        assert reload_count(server, "success") == 1
        assert "model reload rejected" in server.log()
    finally:
        assert server.stop() == 0


def test_sighup_reloads_and_a_new_model_directory_is_added(tmp_path: Path) -> None:
    models = tmp_path / "models"
    live = write_untrained_checkpoint(models / "sst2-gru", "sst2-gru", "1.0.0")
    server = ServerProcess(extra_args=["--model-dir", str(models)]).start()  # no polling
    try:
        with SentimentClient(server.target, timeout=10) as client:
            replace_checkpoint(live, write_untrained_checkpoint(tmp_path / "v2", "sst2-gru", "2.0.0", seed=1))
            write_untrained_checkpoint(tmp_path / "extra", "sst2-lstm", "1.0.0", cell="lstm")
            shutil.move(str(tmp_path / "extra"), models / "sst2-lstm")
            assert client.predict("a good film").model_version == "1.0.0"  # nothing polls
            server.signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            # The reload goes through the directory in order: wait for the last model it adds.
            while reload_count(server, "success") < 2:
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.05)
            assert client.predict("a good film").model_version == "2.0.0"
            assert client.predict("a good film", model="sst2-lstm").model == "sst2-lstm"
            assert [m.name for m in client.list_models()] == ["sst2-gru", "sst2-lstm"]
            assert client.model_info().version == "2.0.0"
    finally:
        assert server.stop() == 0
