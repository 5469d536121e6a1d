"""The model repository on real (untrained) checkpoints: what it serves at start, which model
answers a request naming none, NOT_FOUND listing what is served, the rnn_sentiment_model_info
series, an atomic swap that retires the old version, and the start-up checks with their fixes."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import grpc
import pytest
import torch

from rnn_sentiment.model.inference import encode_texts
from rnn_sentiment.server.config import ServerConfig
from rnn_sentiment.server.errors import ServiceError
from rnn_sentiment.server.metrics import ServerMetrics
from rnn_sentiment.server.model_directory import CheckpointDir
from rnn_sentiment.server.repository import ModelRepository, find_checkpoints, resolve_device
from tests.support import write_untrained_checkpoint


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three models, none named sst2-gru: the default falls to the first by name."""
    directory = tmp_path_factory.mktemp("models")
    for seed, name in enumerate(("zeta", "alpha", "mid")):
        write_untrained_checkpoint(directory / name, name, f"{seed + 1}.0.0", seed=seed)
    return directory


def load(model_dir: Path, **settings: object) -> tuple[ModelRepository, ServerMetrics]:
    metrics = ServerMetrics.create()
    config = ServerConfig(model_dir=str(model_dir), torch_threads=1, backend="torch", **settings)  # type: ignore[arg-type]
    return ModelRepository.load(config, metrics), metrics


def info(metrics: ServerMetrics) -> dict[tuple[str, str], float]:
    """(model, default) -> value of every rnn_sentiment_model_info series."""
    (family,) = [f for f in metrics.registry.collect() if f.name == "rnn_sentiment_model_info"]
    return {(s.labels["model"], s.labels["default"]): s.value for s in family.samples}


def test_the_device_is_resolved_and_cuda_without_a_device_is_refused_with_the_fix() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda") == "cuda"
    else:
        with pytest.raises(ValueError, match="device=cuda but torch sees no CUDA device; use --device cpu or auto"):
            resolve_device("cuda")


def test_a_missing_or_empty_model_directory_stops_the_start_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"model directory {tmp_path / 'absent'} does not exist"):
        find_checkpoints(tmp_path / "absent")
    (tmp_path / "empty" / "notes").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no checkpoint \(a directory with config.json\) in .*empty"):
        find_checkpoints(tmp_path / "empty")


def test_every_checkpoint_is_found_and_an_unreadable_entry_is_skipped_with_a_warning(
    models: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert [c.name for c in find_checkpoints(models)] == ["alpha", "mid", "zeta"]
    # An entry whose config.json cannot even be named (ENAMETOOLONG, which root gets too).
    directory = tmp_path
    while len(str(directory)) < 4096 - 200:
        directory = directory / ("d" * 150)
    write_untrained_checkpoint(directory / "only", "only", "1.0.0")
    (directory / ("x" * (4096 - len(str(directory)) - 8))).mkdir()
    with caplog.at_level(logging.WARNING, logger="rnn_sentiment.server.repository"):
        assert [c.name for c in find_checkpoints(directory)] == ["only"]
    assert sum("skipping an unreadable entry" in r.getMessage() for r in caplog.records) == 1


def test_the_default_is_the_first_by_name_listed_first_and_answers_an_empty_name(models: Path) -> None:
    repository, metrics = load(models)
    assert repository.default_name == "alpha"
    assert repository.names() == ["alpha", "mid", "zeta"]
    assert [s.name for s in repository.all()] == ["alpha", "mid", "zeta"]
    assert repository.resolve("").name == "alpha"
    assert repository.resolve("zeta").name == "zeta"
    assert repository.get("zeta") is repository.resolve("zeta")
    assert repository.get("nope") is None
    with pytest.raises(ServiceError) as unknown:
        repository.resolve("nope")
    assert unknown.value.code == grpc.StatusCode.NOT_FOUND
    assert unknown.value.message == "unknown model 'nope'; this server serves: alpha, mid, zeta"

    async def published() -> None:
        repository.start()  # needs the running event loop
        assert info(metrics) == {("alpha", "true"): 1.0, ("mid", "false"): 1.0, ("zeta", "false"): 1.0}
        await repository.close()

    asyncio.run(asyncio.wait_for(published(), 60))


def test_a_configured_default_is_listed_first_and_an_unknown_one_stops_the_start(models: Path) -> None:
    repository, _ = load(models, default_model="zeta")
    assert repository.names() == ["zeta", "alpha", "mid"]
    assert repository.resolve("").name == "zeta"
    with pytest.raises(ValueError, match="default_model='nope' is not among the loaded models: alpha, mid, zeta"):
        load(models, default_model="nope")


def test_sst2_gru_is_preferred_as_the_default(tmp_path: Path) -> None:
    for seed, name in enumerate(("sst2-rnn", "sst2-gru", "a-first")):
        write_untrained_checkpoint(tmp_path / name, name, "1.0.0", seed=seed)
    repository, _ = load(tmp_path)
    assert repository.default_name == "sst2-gru"
    assert repository.names() == ["sst2-gru", "a-first", "sst2-rnn"]


def test_start_up_warnings_name_an_override_for_no_model_and_a_text_limit_below_the_token_limit(
    models: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="rnn_sentiment.server.repository"):
        repository, _ = load(models, model_token_limits="ghost=16,mid=300", max_tokens=64, max_text_chars=1000)
    assert [s.max_tokens for s in repository.all()] == [64, 300, 64]
    messages = [(r.getMessage(), getattr(r, "fields", {})) for r in caplog.records]
    assert ("--model-token-limits names a model that is not served", {"model": "ghost"}) in messages
    # The longest limit (300 tokens, about 1,800 characters) is the one the text limit is held to.
    assert any(m.startswith("--max-text-chars 1000 refuses prose before it reaches 300 tokens") for m, _ in messages)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rnn_sentiment.server.repository"):
        load(models, max_tokens=64, max_text_chars=64 * 6)
    assert caplog.records == []


def test_a_swap_serves_the_new_version_at_once_and_retires_the_old_one(models: Path, tmp_path: Path) -> None:
    async def scenario() -> None:
        repository, metrics = load(models)
        repository.start()
        old = repository.resolve("mid")
        old_thread = await old.model_thread.run(threading.current_thread)
        newer = write_untrained_checkpoint(tmp_path / "mid", "mid", "9.0.0", seed=9)
        predictor = repository.prepare(CheckpointDir("mid", newer))
        assert repository.swap(predictor) is old
        served = repository.resolve("mid")
        assert served.loaded.version == "9.0.0" and served.predictor is predictor
        assert repository.names() == ["alpha", "mid", "zeta"]
        # One info series per served model: the replaced version's is gone.
        (family,) = [f for f in metrics.registry.collect() if f.name == "rnn_sentiment_model_info"]
        assert sorted((s.labels["model"], s.labels["version"]) for s in family.samples) == [
            ("alpha", "2.0.0"), ("mid", "9.0.0"), ("zeta", "1.0.0")]
        await repository.close()  # awaits the old version's retirement too
        assert not old_thread.is_alive()
        # A swap under a new name adds a model beside the others.
        extra = write_untrained_checkpoint(tmp_path / "extra", "extra", "1.0.0")
        assert repository.swap(repository.prepare(CheckpointDir("extra", extra))) is None
        assert repository.names() == ["alpha", "extra", "mid", "zeta"]
        await repository.close()

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_close_waits_for_held_work_on_a_version(models: Path) -> None:
    async def scenario() -> None:
        repository, _ = load(models)
        repository.start()
        served = repository.resolve("alpha")
        thread = await served.model_thread.run(threading.current_thread)
        closed = asyncio.Event()

        async def hold_then_release() -> None:
            async with served.hold():
                await asyncio.sleep(0.2)
                assert not closed.is_set()  # close() is still waiting for this hold

        holder = asyncio.ensure_future(hold_then_release())
        await asyncio.sleep(0.05)
        await served.close()
        closed.set()
        await holder
        assert not thread.is_alive()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_the_batch_delay_reaches_the_batcher_in_milliseconds(models: Path) -> None:
    async def scenario() -> list[str]:
        repository, _ = load(models, max_batch_delay_ms=50)
        repository.start()
        served = repository.resolve("alpha")
        try:
            # A lone text on an idle model waits at most the delay for company: 50 ms, not 50 s.
            texts = encode_texts(["a good film"], served.loaded.vocab, served.max_tokens)
            results = await asyncio.wait_for(served.batcher.submit(texts), 10)
            return [r.label for r in results]
        finally:
            await repository.close()

    assert asyncio.run(asyncio.wait_for(scenario(), 120)) in (["negative"], ["positive"])


def test_a_replaced_version_that_fails_to_close_is_logged_and_close_still_finishes(
    models: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        repository, _ = load(models)
        repository.start()
        old = repository.resolve("mid")

        async def broken_close() -> None:
            raise RuntimeError("the old version's batcher failed")

        # The one failure injected: nothing in a real version's close() fails on demand.
        monkeypatch.setattr(old.batcher, "close", broken_close)
        newer = write_untrained_checkpoint(tmp_path / "mid", "mid", "9.0.0", seed=9)
        assert repository.swap(repository.prepare(CheckpointDir("mid", newer))) is old
        try:
            await repository.close()  # the old version's failure is its own: the others still close
        finally:
            await asyncio.to_thread(old.model_thread.shutdown)

    with caplog.at_level(logging.INFO, logger="rnn_sentiment.server.repository"):
        asyncio.run(asyncio.wait_for(scenario(), 120))
    failed = [r for r in caplog.records if r.getMessage() == "retiring a replaced model version failed"]
    assert len(failed) == 1 and failed[0].fields == {"model": "mid", "version": "3.0.0"}  # type: ignore[attr-defined]
    assert "the old version's batcher failed" in caplog.text
    assert not any(r.getMessage() == "replaced model version retired" for r in caplog.records)


def test_under_workers_a_swap_sets_the_replaced_versions_info_series_to_0(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under --workers N the series live in the workers' files, where they cannot be removed.
    async def scenario() -> dict[tuple[str, str], float]:
        repository, metrics = load(models)
        repository.start()
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
        newer = write_untrained_checkpoint(tmp_path / "mid", "mid", "9.0.0", seed=9)
        repository.swap(repository.prepare(CheckpointDir("mid", newer)))
        (family,) = [f for f in metrics.registry.collect() if f.name == "rnn_sentiment_model_info"]
        await repository.close()
        return {(s.labels["model"], s.labels["version"]): s.value for s in family.samples}

    assert asyncio.run(asyncio.wait_for(scenario(), 120)) == {
        ("alpha", "2.0.0"): 1.0, ("mid", "3.0.0"): 0.0, ("mid", "9.0.0"): 1.0, ("zeta", "1.0.0"): 1.0}
