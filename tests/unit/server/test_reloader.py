"""The model repository and its hot reloader, on real checkpoints in a temporary directory.

Names come from directories; a reload never lets one directory take another's name; one
unreadable entry never stops the reloader; retiring an old version never waits on the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import threading
from pathlib import Path
from typing import Awaitable, Callable

import pytest

from rnn_sentiment.server.config import ServerConfig
from rnn_sentiment.server.metrics import ServerMetrics
from rnn_sentiment.server.model_directory import ModelNameMismatch
from rnn_sentiment.server.reloader import ModelReloader, directory_signatures
from rnn_sentiment.server.repository import ModelRepository
from tests.support import write_untrained_checkpoint

PATH_MAX = 4096  # Linux: a longer path is refused with ENAMETOOLONG, even to root


def load(model_dir: Path) -> tuple[ModelRepository, ServerMetrics]:
    metrics = ServerMetrics.create()
    config = ServerConfig(model_dir=str(model_dir), torch_threads=1, backend="torch")
    return ModelRepository.load(config, metrics), metrics


def set_config(checkpoint: Path, **fields: str) -> None:
    """Edit config.json in place (a new mtime and content: the reloader sees a change)."""
    path = checkpoint / "config.json"
    document = json.loads(path.read_text())
    document.update(fields)
    path.write_text(json.dumps(document))


def sample(metrics: ServerMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def deep_directory(base: Path) -> Path:
    """A directory whose path is so long that an entry under it can exist while that entry's
    config.json cannot even be named (ENAMETOOLONG): a filesystem error that root gets too."""
    path = base
    while len(str(path)) < PATH_MAX - 200:
        path = path / ("d" * 150)
    path.mkdir(parents=True)
    return path


def add_unreadable_entry(model_dir: Path) -> Path:
    entry = model_dir / ("x" * (PATH_MAX - len(str(model_dir)) - 8))
    entry.mkdir()
    with pytest.raises(OSError, match="too long"):
        (entry / "config.json").is_file()
    return entry


async def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Await a condition the event loop makes true (bounded; a failure names what never happened)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.01)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 120))


def test_a_model_is_named_after_its_directory_entry_not_a_symlink_target(tmp_path: Path) -> None:
    write_untrained_checkpoint(tmp_path / "store" / "v7", "current", "7.0.0")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "current").symlink_to(tmp_path / "store" / "v7")
    repository, _ = load(tmp_path / "models")
    assert repository.names() == ["current"]
    # A single checkpoint given as the model directory is named after that directory, as spelled.
    repository, _ = load(tmp_path / "models" / "current" / ".")
    assert repository.names() == ["current"]


def test_a_config_naming_another_model_than_its_directory_is_refused_at_start(tmp_path: Path) -> None:
    write_untrained_checkpoint(tmp_path / "models" / "sst2-gru", "sst2-gru", "1.0.0")
    write_untrained_checkpoint(tmp_path / "models" / "sst2-rnn", "sst2-lstm", "1.0.0")
    with pytest.raises(ModelNameMismatch, match="config.json names the model 'sst2-lstm' but its directory is 'sst2-rnn'"):
        load(tmp_path / "models")


def test_a_reload_never_lets_one_directory_take_another_models_name(tmp_path: Path) -> None:
    models = tmp_path / "models"
    gru = write_untrained_checkpoint(models / "sst2-gru", "sst2-gru", "1.0.0")
    rnn = write_untrained_checkpoint(models / "sst2-rnn", "sst2-rnn", "1.0.0", seed=1)

    async def scenario() -> None:
        repository, metrics = load(models)
        repository.start()
        reloader = ModelReloader(repository, metrics, models)
        set_config(rnn, name="sst2-gru", version="6.6.6")
        outcomes = {o.model: o for o in await reloader.reload_all("SIGHUP")}
        assert outcomes["sst2-rnn"].result == "failure"
        assert outcomes["sst2-rnn"].reason == "name_mismatch"
        assert repository.get("sst2-gru").loaded.path == gru  # type: ignore[union-attr]
        assert repository.get("sst2-rnn").loaded.version == "1.0.0"  # type: ignore[union-attr]
        assert sample(metrics, "rnn_sentiment_model_reload_failures_total", model="sst2-rnn",
                      reason="name_mismatch") == 1
        assert sample(metrics, "rnn_sentiment_model_reload_total", model="sst2-rnn", result="failure") == 1
        await repository.close()

    run(scenario)


def test_a_change_made_before_the_reloader_starts_is_still_reloaded(tmp_path: Path) -> None:
    # The server turns SERVING before its reloader starts: a caller may change a checkpoint in
    # between (under load the window is long). The baseline is what the models were loaded from.
    models = tmp_path / "models"
    write_untrained_checkpoint(models / "sst2-gru", "sst2-gru", "1.0.0")
    rnn = write_untrained_checkpoint(models / "sst2-rnn", "sst2-rnn", "1.0.0", seed=1)

    async def scenario() -> None:
        loaded_signatures = directory_signatures(models)
        repository, metrics = load(models)
        repository.start()
        set_config(rnn, version="2.0.0")
        reloader = ModelReloader(repository, metrics, models, loaded_signatures)
        watching = asyncio.ensure_future(reloader.watch(0.05))
        try:
            await until(lambda: repository.get("sst2-rnn").loaded.version == "2.0.0",  # type: ignore[union-attr]
                        "the change reloaded")
        finally:
            watching.cancel()
        await repository.close()

    run(scenario)


def test_reload_all_survives_an_unreadable_entry_and_reloads_the_others(tmp_path: Path) -> None:
    models = deep_directory(tmp_path)
    gru = write_untrained_checkpoint(models / "sst2-gru", "sst2-gru", "1.0.0")

    async def scenario() -> None:
        repository, metrics = load(models)
        repository.start()
        reloader = ModelReloader(repository, metrics, models)
        entry = add_unreadable_entry(models)
        set_config(gru, version="2.0.0")
        outcomes = {o.model: o for o in await reloader.reload_all("SIGHUP")}
        assert outcomes[entry.name].reason == "unreadable"
        assert outcomes["sst2-gru"].result == "success"
        assert repository.get("sst2-gru").loaded.version == "2.0.0"  # type: ignore[union-attr]
        await repository.close()

    run(scenario)


def test_polling_survives_an_unreadable_entry_logs_it_once_and_keeps_polling(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    models = deep_directory(tmp_path)
    gru = write_untrained_checkpoint(models / "sst2-gru", "sst2-gru", "1.0.0")

    async def scenario() -> None:
        repository, metrics = load(models)
        repository.start()
        reloader = ModelReloader(repository, metrics, models)
        watcher = asyncio.ensure_future(reloader.watch(0.02))
        entry = add_unreadable_entry(models)
        unreadable = {"model": entry.name, "reason": "unreadable"}
        await until(lambda: sample(metrics, "rnn_sentiment_model_reload_failures_total", **unreadable) == 1,
                    "the unreadable entry counted")
        set_config(gru, version="2.0.0")
        await until(lambda: repository.get("sst2-gru").loaded.version == "2.0.0",  # type: ignore[union-attr]
                    "the changed model reloaded")
        assert not watcher.done()
        # Polled many times meanwhile: one episode, one count, one log line.
        assert sample(metrics, "rnn_sentiment_model_reload_failures_total", **unreadable) == 1
        assert sum("entry unreadable" in r.getMessage() for r in caplog.records) == 1
        entry.rmdir()
        await until(lambda: any("readable again" in r.getMessage() for r in caplog.records), "recovery logged")
        # Once, for the entry that recovered: not for every readable checkpoint at every poll.
        assert [r.fields["path"] for r in caplog.records if "readable again" in r.getMessage()] == [str(entry)]
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await repository.close()

    with caplog.at_level(logging.INFO, logger="rnn_sentiment.server.reloader"):
        run(scenario)


def test_a_deleted_model_directory_keeps_serving_is_logged_once_and_shown_by_a_gauge(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    models = tmp_path / "models"
    write_untrained_checkpoint(models / "sst2-gru", "sst2-gru", "1.0.0")
    rnn = write_untrained_checkpoint(models / "sst2-rnn", "sst2-rnn", "1.0.0", seed=1)

    async def scenario() -> None:
        repository, metrics = load(models)
        repository.start()
        reloader = ModelReloader(repository, metrics, models)
        watcher = asyncio.ensure_future(reloader.watch(0.02))
        missing = {"model": "sst2-rnn"}
        assert sample(metrics, "rnn_sentiment_model_directory_missing", **missing) == 0
        parked = rnn.rename(tmp_path / "parked")
        await until(lambda: sample(metrics, "rnn_sentiment_model_directory_missing", **missing) == 1, "gauge 1")
        await until(lambda: sum("directory is gone" in r.getMessage() for r in caplog.records) >= 1, "warning")
        await reloader.reload_all("SIGHUP")  # another look: still one warning for one episode
        assert repository.resolve("sst2-rnn").loaded.version == "1.0.0"
        parked.rename(rnn)
        await until(lambda: sample(metrics, "rnn_sentiment_model_directory_missing", **missing) == 0, "gauge 0")
        assert sum("directory is gone" in r.getMessage() for r in caplog.records) == 1
        warnings = [r for r in caplog.records if "directory is gone" in r.getMessage()]
        assert warnings[0].levelno == logging.WARNING
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await repository.close()

    with caplog.at_level(logging.INFO, logger="rnn_sentiment.server.reloader"):
        run(scenario)


def test_retiring_an_old_version_does_not_wait_for_its_running_work(tmp_path: Path) -> None:
    """The reload returns while the old version's thread is still busy; the old thread ends once
    its work does, even though the reload was cancelled meanwhile."""
    models = tmp_path / "models"
    gru = write_untrained_checkpoint(models / "sst2-gru", "sst2-gru", "1.0.0")
    release = threading.Event()
    # Bounds the test if the retirement does block the event loop (the defect): it then ends
    # failing instead of hanging.
    safety = threading.Timer(20, release.set)

    async def scenario() -> None:
        repository, metrics = load(models)
        repository.start()
        reloader = ModelReloader(repository, metrics, models)
        old = repository.resolve("sst2-gru")
        old_thread = await old.model_thread.run(threading.current_thread)

        async def long_trace() -> bool:  # a stand-in: a held version, busy on its model thread
            async with old.hold():
                return await old.model_thread.run(release.wait)

        busy = asyncio.ensure_future(long_trace())
        set_config(gru, version="2.0.0")
        safety.start()
        reload = asyncio.ensure_future(reloader.reload_all("SIGHUP"))
        await until(lambda: repository.resolve("sst2-gru") is not old, "the new version swapped in")
        reload.cancel()  # what SIGTERM does to a running reload
        await asyncio.gather(reload, return_exceptions=True)
        assert not release.is_set(), "the reload waited for the old version's work"
        assert sample(metrics, "rnn_sentiment_model_reload_total", model="sst2-gru", result="success") == 1
        release.set()
        assert await busy is True  # the old version finished its work
        await repository.close()  # awaits the retirement too
        assert not old_thread.is_alive()

    try:
        run(scenario)
    finally:
        safety.cancel()


def test_a_reload_cancelled_at_any_point_swaps_all_or_nothing_and_is_retried(tmp_path: Path) -> None:
    """What SIGTERM does to a running reload: cancelled while reading the directory, while
    loading, or after the swap, the model is wholly the old version or wholly the new one, and
    every swap is recorded."""
    models = tmp_path / "models"
    gru = write_untrained_checkpoint(models / "sst2-gru", "sst2-gru", "1.0.0")

    async def scenario() -> None:
        repository, metrics = load(models)
        repository.start()
        reloader = ModelReloader(repository, metrics, models)
        served = ["1.0.0"]
        # Cancellation points spread from "at once" to "after the reload has finished".
        for attempt, delay in enumerate((0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)):
            version = f"{attempt + 2}.0.0"
            set_config(gru, version=version)
            reload = asyncio.ensure_future(reloader.reload_all("SIGHUP"))
            await asyncio.sleep(delay)
            reload.cancel()
            await asyncio.gather(reload, return_exceptions=True)
            current = repository.resolve("sst2-gru").loaded.version
            if current == version:
                served.append(version)
            assert current == served[-1]
            assert sample(metrics, "rnn_sentiment_model_reload_total", model="sst2-gru",
                          result="success") == len(served) - 1
        assert len(served) - 1 < attempt + 1  # some were cancelled before the swap (the first, at least)
        (outcome,) = await reloader.reload_all("SIGHUP")  # the next reload serves the latest files
        assert outcome.result in ("success", "unchanged")
        assert repository.resolve("sst2-gru").loaded.version == version
        await repository.close()

    run(scenario)


def test_the_shipped_checkpoints_are_named_after_their_directories() -> None:
    from tests.support import SHIPPED_MODELS

    checkpoints = sorted(p for p in SHIPPED_MODELS.iterdir() if (p / "config.json").is_file())
    assert [p.name for p in checkpoints] == ["sst2-gru", "sst2-rnn"]
    for checkpoint in checkpoints:
        assert json.loads((checkpoint / "config.json").read_text())["name"] == checkpoint.name


def test_a_scan_names_checkpoints_by_entry_skips_the_rest_and_reports_what_it_cannot_read(tmp_path: Path) -> None:
    from rnn_sentiment.server.model_directory import UnreadableEntry, scan_model_directory

    models = deep_directory(tmp_path)  # so that one entry's config.json cannot even be named
    for name in ("b-model", "a-model"):
        (models / name).mkdir()
        (models / name / "config.json").write_text("{}")  # the scan only looks for the file
    (models / "README").write_text("not a model")
    (models / "empty").mkdir()
    (models / "odd" / "config.json").mkdir(parents=True)  # not a regular file: not a checkpoint
    entry = add_unreadable_entry(models)
    scan = scan_model_directory(models)
    assert [(c.name, c.path) for c in scan.checkpoints] == [("a-model", models / "a-model"),
                                                             ("b-model", models / "b-model")]
    assert scan.unreadable == (UnreadableEntry(entry.name, entry, "OSError: File name too long"),)
    # A model directory that is itself a checkpoint is named after itself, however it is spelled.
    (itself,) = scan_model_directory(models / "a-model" / ".").checkpoints
    assert itself.name == "a-model"


def test_a_missing_model_directory_scans_empty_and_an_unreadable_one_is_an_error(tmp_path: Path) -> None:
    from rnn_sentiment.server.model_directory import ModelDirectoryError, scan_model_directory

    (tmp_path / "file").write_text("")
    for missing in (tmp_path / "absent", tmp_path / "file"):
        scan = scan_model_directory(missing)
        assert (scan.checkpoints, scan.unreadable) == ((), ())
    too_long = add_unreadable_entry(deep_directory(tmp_path))
    with pytest.raises(ModelDirectoryError, match="cannot read the model directory .*File name too long"):
        scan_model_directory(too_long)


def test_an_os_error_is_described_by_its_kind_and_reason_without_its_path() -> None:
    import errno

    from rnn_sentiment.server.model_directory import describe_os_error

    assert describe_os_error(PermissionError(errno.EACCES, "Permission denied", "/models/x")) == \
        "PermissionError: Permission denied"
    assert describe_os_error(OSError("disk gone")) == "OSError: disk gone"  # no strerror: the message


def test_signatures_name_every_readable_checkpoint_and_a_gone_one_has_none(tmp_path: Path) -> None:
    from rnn_sentiment.server.reloader import checkpoint_signature

    models = tmp_path / "models"
    gru = write_untrained_checkpoint(models / "sst2-gru", "sst2-gru", "1.0.0")
    signatures = directory_signatures(models)
    assert list(signatures) == ["sst2-gru"]
    assert [name for name, _, _ in signatures["sst2-gru"]] == sorted(p.name for p in gru.iterdir())
    assert checkpoint_signature(gru) == signatures["sst2-gru"]
    assert checkpoint_signature(tmp_path / "gone") == ()
    assert directory_signatures(tmp_path / "gone") == {}


def test_polling_reloads_a_checkpoint_only_once_its_files_have_held_still_for_a_poll(tmp_path: Path) -> None:
    # One poll at a time (what watch() runs every poll_seconds), so the rule is checked without timing.
    models = tmp_path / "models"
    gru = write_untrained_checkpoint(models / "sst2-gru", "sst2-gru", "1.0.0")
    write_untrained_checkpoint(models / "sst2-rnn", "sst2-rnn", "1.0.0", seed=1)

    async def scenario() -> None:
        repository, metrics = load(models)
        repository.start()
        reloader = ModelReloader(repository, metrics, models, directory_signatures(models))
        pending: dict = {}
        await reloader._poll(pending)  # nothing changed: nothing to wait for
        assert pending == {}
        for version in ("2.0.0", "3.0.0"):  # a copy still in progress: changed at every poll
            set_config(gru, version=version)
            await reloader._poll(pending)
            assert repository.resolve("sst2-gru").loaded.version == "1.0.0"
        await reloader._poll(pending)  # held still for one poll: reloaded
        assert repository.resolve("sst2-gru").loaded.version == "3.0.0"
        assert pending == {}
        for _ in range(3):
            await reloader._poll(pending)
        for model in ("sst2-gru", "sst2-rnn"):
            expected = 1 if model == "sst2-gru" else 0
            assert sample(metrics, "rnn_sentiment_model_reload_total", model=model, result="success") == expected
            assert sample(metrics, "rnn_sentiment_model_reload_total", model=model, result="unchanged") == 0
        await repository.close()

    run(scenario)


def test_files_touched_without_a_new_model_reload_as_unchanged_and_keep_the_served_version(tmp_path: Path) -> None:
    models = tmp_path / "models"
    gru = write_untrained_checkpoint(models / "sst2-gru", "sst2-gru", "1.0.0")

    async def scenario() -> None:
        repository, metrics = load(models)
        repository.start()
        reloader = ModelReloader(repository, metrics, models)
        served = repository.resolve("sst2-gru")
        assert [o.result for o in await reloader.reload_all("SIGHUP")] == ["unchanged"]
        config = gru / "config.json"
        config.write_text(config.read_text())  # a new mtime, the same model
        (outcome,) = await reloader.reload_all("SIGHUP")
        assert (outcome.model, outcome.result, outcome.version) == ("sst2-gru", "unchanged", "1.0.0")
        assert repository.resolve("sst2-gru") is served
        assert sample(metrics, "rnn_sentiment_model_reload_total", model="sst2-gru", result="unchanged") == 2
        assert sample(metrics, "rnn_sentiment_model_reload_total", model="sst2-gru", result="success") == 0
        assert sample(metrics, "rnn_sentiment_model_reload_failures_total", model="sst2-gru",
                      reason="invalid_checkpoint") == 0
        await repository.close()

    run(scenario)


def test_a_broken_checkpoint_is_rejected_once_keeps_the_old_version_and_is_taken_once_fixed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    models = tmp_path / "models"
    gru = write_untrained_checkpoint(models / "sst2-gru", "sst2-gru", "1.0.0")
    weights = next(p for p in gru.iterdir() if p.suffix == ".safetensors")
    good = weights.read_bytes()

    async def scenario() -> None:
        repository, metrics = load(models)
        repository.start()
        reloader = ModelReloader(repository, metrics, models)
        weights.write_bytes(good[: len(good) // 2])  # a half-written copy
        failed = {"model": "sst2-gru", "reason": "invalid_checkpoint"}
        pending: dict = {}
        for _ in range(5):  # polled again and again: refused once, not retried until it changes
            await reloader._poll(pending)
        assert sample(metrics, "rnn_sentiment_model_reload_failures_total", **failed) == 1
        assert sample(metrics, "rnn_sentiment_model_reload_total", model="sst2-gru", result="failure") == 1
        assert repository.resolve("sst2-gru").loaded.version == "1.0.0"
        (rejected,) = [r for r in caplog.records if "model reload rejected" in r.getMessage()]
        assert rejected.levelno == logging.ERROR
        assert rejected.getMessage() == "model reload rejected; the old version keeps serving"
        weights.write_bytes(good)
        set_config(gru, version="2.0.0")
        (outcome,) = await reloader.reload_all("SIGHUP")
        assert (outcome.result, outcome.version, outcome.reason) == ("success", "2.0.0", "")
        assert repository.resolve("sst2-gru").loaded.version == "2.0.0"
        assert sample(metrics, "rnn_sentiment_model_reload_failures_total", **failed) == 1
        await repository.close()

    with caplog.at_level(logging.INFO, logger="rnn_sentiment.server.reloader"):
        run(scenario)


def test_an_unreadable_model_directory_is_counted_on_every_sighup_and_once_per_polling_episode(tmp_path: Path) -> None:
    from rnn_sentiment.server.model_directory import model_name_of

    models = tmp_path / "models"
    write_untrained_checkpoint(models / "sst2-gru", "sst2-gru", "1.0.0")
    too_long = add_unreadable_entry(deep_directory(tmp_path / "deep"))  # its entries cannot be named

    async def scenario() -> None:
        repository, metrics = load(models)
        repository.start()
        reloader = ModelReloader(repository, metrics, too_long)
        unreadable = {"model": model_name_of(too_long), "reason": "unreadable"}
        assert sample(metrics, "rnn_sentiment_model_reload_failures_total", **unreadable) == 1  # at start
        for _ in range(3):
            await reloader._poll({})
        assert sample(metrics, "rnn_sentiment_model_reload_failures_total", **unreadable) == 1
        for count in (2, 3):
            (outcome,) = await reloader.reload_all("SIGHUP")
            assert (outcome.result, outcome.reason) == ("failure", "unreadable")
            assert "File name too long" in outcome.error
            assert sample(metrics, "rnn_sentiment_model_reload_failures_total", **unreadable) == count
        assert repository.resolve("sst2-gru").loaded.version == "1.0.0"
        await repository.close()

    run(scenario)


def test_an_unreadable_entry_is_counted_on_every_sighup(tmp_path: Path) -> None:
    # Polling counts one episode once; an operator's explicit reload is answered every time.
    models = deep_directory(tmp_path)
    write_untrained_checkpoint(models / "sst2-gru", "sst2-gru", "1.0.0")

    async def scenario() -> None:
        repository, metrics = load(models)
        repository.start()
        reloader = ModelReloader(repository, metrics, models)
        entry = add_unreadable_entry(models)
        unreadable = {"model": entry.name, "reason": "unreadable"}
        for count in (1, 2, 3):
            outcomes = {o.model: o for o in await reloader.reload_all("SIGHUP")}
            assert outcomes[entry.name].result == "failure"
            assert sample(metrics, "rnn_sentiment_model_reload_failures_total", **unreadable) == count
        await repository.close()

    run(scenario)


def checkpoint_with_an_unstattable_file(base: Path, name: str) -> Path:
    """A loadable checkpoint holding one more file whose full path is too long to stat
    (ENAMETOOLONG, root included): its directory lists, its signature cannot be taken."""
    path = base
    while len(str(path)) + 151 < PATH_MAX - 146:
        path = path / ("d" * 150)
    path = path / ("d" * (PATH_MAX - 146 - len(str(path)) - 1))
    name += "-" * (90 - len(name))  # a model is named after its directory (at most 128 characters)
    checkpoint = write_untrained_checkpoint(path / name, name, "1.0.0")
    directory = os.open(checkpoint, os.O_RDONLY)
    try:  # created relative to its directory: only the name is looked up
        os.close(os.open("x" * 100, os.O_CREAT | os.O_WRONLY, dir_fd=directory))
    finally:
        os.close(directory)
    with pytest.raises(OSError, match="too long"):
        (checkpoint / ("x" * 100)).is_file()
    return checkpoint


def test_a_checkpoint_whose_files_cannot_be_read_is_counted_and_the_ones_after_it_still_reload(tmp_path: Path) -> None:
    models = tmp_path / "m"
    blocked = checkpoint_with_an_unstattable_file(models, "a-blocked")
    ok = write_untrained_checkpoint(blocked.parent / "b-ok", "b-ok", "1.0.0")

    async def scenario() -> None:
        repository, metrics = load(blocked.parent)
        repository.start()
        assert repository.names() == [blocked.name, "b-ok"]
        reloader = ModelReloader(repository, metrics, blocked.parent, directory_signatures(blocked.parent))
        unreadable = {"model": blocked.name, "reason": "unreadable"}
        set_config(ok, version="2.0.0")
        pending: dict = {}
        for _ in range(3):  # polling: the blocked one counted once, the one after it reloaded
            await reloader._poll(pending)
        assert repository.resolve("b-ok").loaded.version == "2.0.0"
        assert sample(metrics, "rnn_sentiment_model_reload_failures_total", **unreadable) == 1
        for count in (2, 3):  # an explicit reload answers every time
            outcomes = {o.model: o for o in await reloader.reload_all("SIGHUP")}
            assert (outcomes[blocked.name].result, outcomes[blocked.name].reason) == ("failure", "unreadable")
            assert "File name too long" in outcomes[blocked.name].error
            assert sample(metrics, "rnn_sentiment_model_reload_failures_total", **unreadable) == count
        assert repository.resolve(blocked.name).loaded.version == "1.0.0"
        await repository.close()

    run(scenario)


class FaultyRepository(ModelRepository):
    """A real repository with a fault injected where no input can put one: a bug of ours."""

    swap_faults = 0
    all_faults = 0

    def swap(self, predictor):  # type: ignore[no-untyped-def]
        if self.swap_faults:
            self.swap_faults -= 1
            raise RuntimeError("injected swap fault")
        return super().swap(predictor)

    def all(self):  # type: ignore[no-untyped-def]
        if self.all_faults:
            self.all_faults -= 1
            raise RuntimeError("injected listing fault")
        return super().all()


def test_a_bug_during_a_reload_or_a_poll_is_counted_and_never_ends_reloading(tmp_path: Path) -> None:
    models = tmp_path / "models"
    gru = write_untrained_checkpoint(models / "sst2-gru", "sst2-gru", "1.0.0")

    async def scenario() -> None:
        metrics = ServerMetrics.create()
        config = ServerConfig(model_dir=str(models), torch_threads=1, backend="torch")
        repository = FaultyRepository.load(config, metrics)
        assert isinstance(repository, FaultyRepository)
        repository.start()
        reloader = ModelReloader(repository, metrics, models)
        set_config(gru, version="2.0.0")
        repository.swap_faults = 1
        (outcome,) = await reloader.reload_all("SIGHUP")  # never raises
        assert (outcome.result, outcome.reason, outcome.error) == ("failure", "unexpected", "injected swap fault")
        assert sample(metrics, "rnn_sentiment_model_reload_failures_total", model="sst2-gru", reason="unexpected") == 1
        assert repository.resolve("sst2-gru").loaded.version == "1.0.0"
        # A poll that fails outright: polling goes on and takes the next change.
        repository.all_faults = 1
        watcher = asyncio.ensure_future(reloader.watch(0.02))
        await until(lambda: repository.all_faults == 0, "the faulty poll")
        set_config(gru, version="3.0.0")
        await until(lambda: repository.resolve("sst2-gru").loaded.version == "3.0.0",  # type: ignore[union-attr]
                    "the next change reloaded")
        assert not watcher.done()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await repository.close()

    run(scenario)


def test_a_reload_outcome_is_a_value_its_caller_cannot_change(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_untrained_checkpoint(models / "sst2-gru", "sst2-gru", "1.0.0")

    async def scenario() -> None:
        repository, metrics = load(models)
        repository.start()
        (outcome,) = await ModelReloader(repository, metrics, models).reload_all("SIGHUP")
        assert {outcome: "seen"}[dataclasses.replace(outcome)] == "seen"
        with pytest.raises(dataclasses.FrozenInstanceError):
            outcome.result = "success"  # type: ignore[misc]
        await repository.close()

    run(scenario)
