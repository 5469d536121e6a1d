"""Hot reload: load changed checkpoints in the background and swap them in atomically.

Triggers: SIGHUP (reload everything now) and, when `model_poll_seconds` > 0, polling the model
directory for changed files. A checkpoint is reloaded only once its files have stopped changing
for one poll (so a copy in progress is not read half-written). A broken new version is rejected,
logged and counted (`rnn_sentiment_model_reload_total{result="failure"}` and
`rnn_sentiment_model_reload_failures_total{reason=...}`); the old one keeps serving.

Nothing in one directory can stop the reloader: an error reading or loading one checkpoint is
logged, counted and retried on the next poll while the others are still polled, and
`reload_all` never raises. A model whose directory disappears keeps serving its loaded version;
that is logged once and shown by `rnn_sentiment_model_directory_missing`. The model directory is
read in worker threads, so a stalled mount never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from .metrics import ServerMetrics
from .model_directory import (
    CheckpointDir, DirectoryScan, ModelDirectoryError, ModelNameMismatch, describe_os_error, model_name_of,
    scan_model_directory,
)
from .repository import ModelRepository

log = logging.getLogger(__name__)

# (file name, size, mtime in ns) of every file of a checkpoint directory.
Signature = tuple[tuple[str, int, int], ...]

# Why a reload failed: the `reason` label of rnn_sentiment_model_reload_failures_total.
NAME_MISMATCH = "name_mismatch"  # config.json names another model than its directory
INVALID_CHECKPOINT = "invalid_checkpoint"  # loading or warming it up failed
UNREADABLE = "unreadable"  # the filesystem refused to show the directory or its files
UNEXPECTED = "unexpected"  # a bug of ours; logged with its traceback


def checkpoint_signature(path: Path) -> Signature | OSError:
    """What the files of a checkpoint look like now; () once the directory is gone; the
    OSError when they cannot be read. Blocking (a stalled mount): call it from a thread."""
    files = []
    try:
        for file in path.iterdir():
            if file.is_file():
                status = file.stat()
                files.append((file.name, status.st_size, status.st_mtime_ns))
    except FileNotFoundError:
        return ()
    except OSError as error:
        return error
    return tuple(sorted(files))


def directory_signatures(model_dir: Path) -> dict[str, Signature]:
    """Model name -> checkpoint_signature for every readable checkpoint under model_dir now.

    Taken before the models load, it is the baseline a ModelReloader compares against: a
    change made while they load, or between SERVING and the reloader's start, is then seen.
    Blocking: call it from a thread."""
    scan = read_model_directory(model_dir)
    signatures: dict[str, Signature] = {}
    for checkpoint in scan.checkpoints if isinstance(scan, DirectoryScan) else ():
        signature = checkpoint_signature(checkpoint.path)
        if not isinstance(signature, OSError):  # else unknown: the first readable poll reloads it
            signatures[checkpoint.name] = signature
    return signatures


def read_model_directory(model_dir: Path) -> DirectoryScan | ModelDirectoryError:
    """scan_model_directory, its error returned. Blocking: call it from a thread."""
    try:
        return scan_model_directory(model_dir)
    except ModelDirectoryError as error:
        return error


@dataclass(frozen=True)
class ReloadOutcome:
    path: Path
    model: str
    result: str  # "success", "unchanged" or "failure"
    version: str = ""
    error: str = ""
    reason: str = ""  # for failures: NAME_MISMATCH, INVALID_CHECKPOINT, UNREADABLE or UNEXPECTED


class ModelReloader:
    def __init__(self, repository: ModelRepository, metrics: ServerMetrics, model_dir: Path,
                 loaded_signatures: dict[str, Signature] | None = None) -> None:
        """loaded_signatures: directory_signatures(model_dir) taken before the repository loaded;
        None takes them now, which misses a change made since the models were read."""
        self._repository = repository
        self._metrics = metrics
        self._model_dir = model_dir
        self._lock = asyncio.Lock()
        # Per model name: the files last loaded (or last refused, so polling waits for a change).
        self._served_signatures: dict[str, Signature] = {}
        # Per path: the filesystem error a poll last reported, so it is logged once per episode.
        self._unreadable: dict[Path, str] = {}
        self._missing: set[str] = set()
        scan = self._take(read_model_directory(model_dir), "start")
        self._served_signatures = dict(loaded_signatures) if loaded_signatures is not None \
            else directory_signatures(model_dir)
        self._note_missing(scan)

    async def reload_all(self, trigger: str) -> list[ReloadOutcome]:
        """Reload every checkpoint under the model directory whose content changed.

        Never raises (cancellation aside): each directory's failure is logged, counted and
        returned as an outcome."""
        async with self._lock:
            scan = await self._scan(trigger)
            if isinstance(scan, ReloadOutcome):
                return [scan]
            outcomes = [self._unreadable_outcome(entry.name, entry.path, entry.error, trigger, always=True)
                        for entry in scan.unreadable]
            for checkpoint in scan.checkpoints:
                outcomes.append(await self._reload_guarded(checkpoint, trigger))
            self._note_missing(scan)
            return outcomes

    async def watch(self, poll_seconds: float) -> None:
        """Poll forever (cancel to stop): reload checkpoints whose files changed and then held still."""
        pending: dict[str, Signature] = {}
        while True:
            await asyncio.sleep(poll_seconds)
            try:
                await self._poll(pending)
            except Exception:  # a bug of ours: polling goes on, the next poll starts afresh
                log.exception("model directory poll failed; polling continues")
                pending.clear()

    async def _poll(self, pending: dict[str, Signature]) -> None:
        scan = await self._scan("file change")
        if isinstance(scan, ReloadOutcome):
            return
        for entry in scan.unreadable:
            pending.pop(entry.name, None)
            self._unreadable_outcome(entry.name, entry.path, entry.error, "file change", always=False)
        checkpoints = scan.checkpoints
        signatures = await asyncio.to_thread(lambda: [checkpoint_signature(c.path) for c in checkpoints])
        for checkpoint, signature in zip(checkpoints, signatures):
            name = checkpoint.name
            if isinstance(signature, OSError):
                pending.pop(name, None)
                self._unreadable_outcome(name, checkpoint.path, describe_os_error(signature), "file change",
                                         always=False)
                continue
            self._readable_again(checkpoint.path)
            if signature == self._served_signatures.get(name):
                pending.pop(name, None)
            elif pending.get(name) == signature:  # changed, and unchanged since the last poll
                pending.pop(name)
                async with self._lock:
                    await self._reload_guarded(checkpoint, "file change")
            else:
                pending[name] = signature
        self._note_missing(scan)

    async def _scan(self, trigger: str) -> DirectoryScan | ReloadOutcome:
        """The model directory's checkpoints now (read off the event loop), or the failure
        recorded when it cannot be read."""
        return self._take(await asyncio.to_thread(read_model_directory, self._model_dir), trigger)

    def _take(self, scan: DirectoryScan | ModelDirectoryError, trigger: str) -> DirectoryScan | ReloadOutcome:
        if isinstance(scan, ModelDirectoryError):  # the directory itself, not one entry in it
            return self._unreadable_outcome(model_name_of(self._model_dir), self._model_dir, str(scan), trigger,
                                            always=trigger != "file change")
        # Entries no longer unreadable and no longer checkpoints (removed, say) are done with;
        # a checkpoint is cleared once its files are read (_readable_again).
        still = {entry.path for entry in scan.unreadable} | {c.path for c in scan.checkpoints}
        for path in [p for p in self._unreadable if p not in still]:
            self._readable_again(path)
        return scan

    async def _reload_guarded(self, checkpoint: CheckpointDir, trigger: str) -> ReloadOutcome:
        try:
            return await self._reload(checkpoint, trigger)
        except Exception as error:  # a bug of ours must not end polling or a SIGHUP reload
            log.exception("model reload failed unexpectedly", extra={"fields": {"model": checkpoint.name}})
            outcome = ReloadOutcome(checkpoint.path, checkpoint.name, "failure", error=str(error), reason=UNEXPECTED)
            self._count(outcome)
            return outcome

    async def _reload(self, checkpoint: CheckpointDir, trigger: str) -> ReloadOutcome:
        name = checkpoint.name
        signature = await asyncio.to_thread(checkpoint_signature, checkpoint.path)
        if isinstance(signature, OSError):
            return self._unreadable_outcome(name, checkpoint.path, describe_os_error(signature), trigger, always=True)
        self._readable_again(checkpoint.path)
        try:
            predictor = await asyncio.to_thread(self._repository.prepare, checkpoint)
        except Exception as error:  # any failure keeps the old version serving
            # Remember the broken files, so polling does not retry them until they change again.
            self._served_signatures[name] = signature
            reason = NAME_MISMATCH if isinstance(error, ModelNameMismatch) else INVALID_CHECKPOINT
            outcome = ReloadOutcome(checkpoint.path, name, "failure", error=str(error), reason=reason)
            self._record(outcome, trigger)
            return outcome
        # Cancel-safe from here: nothing below awaits, so a cancellation (SIGTERM during a
        # reload) lands while loading, and the loaded-but-unswapped predictor is simply dropped.
        loaded = predictor.loaded
        current = self._repository.get(name)
        if current is not None and current.loaded.sha256 == loaded.sha256:
            outcome = ReloadOutcome(checkpoint.path, name, "unchanged", loaded.version)
        else:
            self._repository.swap(predictor)
            outcome = ReloadOutcome(checkpoint.path, name, "success", loaded.version)
        self._served_signatures[name] = signature
        self._record(outcome, trigger)
        return outcome

    def _unreadable_outcome(self, name: str, path: Path, error: str, trigger: str, always: bool) -> ReloadOutcome:
        """Record a filesystem error: every time for an explicit reload, once per episode when polling."""
        outcome = ReloadOutcome(path, name, "failure", error=error, reason=UNREADABLE)
        if always or self._unreadable.get(path) != error:
            self._unreadable[path] = error
            self._record(outcome, trigger)
        return outcome

    def _readable_again(self, path: Path) -> None:
        if self._unreadable.pop(path, None) is not None:
            log.info("model directory entry readable again", extra={"fields": {"path": str(path)}})

    def _note_missing(self, scan: DirectoryScan | ReloadOutcome) -> None:
        """Log once when a served model's directory disappears (or comes back); set the gauge.
        An unreadable model directory says nothing either way."""
        if isinstance(scan, ReloadOutcome):
            return
        present = {c.name for c in scan.checkpoints} | {u.name for u in scan.unreadable}
        for served in self._repository.all():
            missing = served.name not in present
            self._metrics.model_directory_missing.labels(served.name).set(int(missing))
            fields = {"model": served.name, "version": served.loaded.version, "path": str(served.loaded.path)}
            if missing and served.name not in self._missing:
                self._missing.add(served.name)
                log.warning("model directory is gone; the loaded version keeps serving until it is "
                            "restored or the server restarts", extra={"fields": fields})
            elif not missing and served.name in self._missing:
                self._missing.discard(served.name)
                log.info("model directory is back", extra={"fields": fields})

    def _count(self, outcome: ReloadOutcome) -> None:
        self._metrics.model_reloads.labels(outcome.model, outcome.result).inc()
        if outcome.result == "failure":
            self._metrics.model_reload_failures.labels(outcome.model, outcome.reason).inc()

    def _record(self, outcome: ReloadOutcome, trigger: str) -> None:
        self._count(outcome)
        fields = {"model": outcome.model, "path": str(outcome.path), "result": outcome.result, "trigger": trigger}
        if outcome.result != "failure":
            log.info("model reload", extra={"fields": {**fields, "version": outcome.version}})
        elif outcome.reason == UNREADABLE:
            log.warning("model directory entry unreadable; skipped, retried on the next poll or SIGHUP",
                        extra={"fields": {**fields, "reason": outcome.reason, "error": outcome.error}})
        else:
            keeps = ("the old version keeps serving" if self._repository.get(outcome.model) is not None
                     else "nothing is served under this name")
            log.error(f"model reload rejected; {keeps}",
                      extra={"fields": {**fields, "reason": outcome.reason, "error": outcome.error}})
