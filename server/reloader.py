"""Hot reload: load changed checkpoints in the background and swap them in atomically.

Triggers: SIGHUP (reload everything now) and, when `model_poll_seconds` > 0, polling the model
directory for changed files. A checkpoint is reloaded only once its files have stopped changing
for one poll (so a copy in progress is not read half-written). A broken new version is rejected,
logged and counted (`rnn_sentiment_model_reload_total{result="failure"}`); the old one keeps
serving.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from .errors import ServiceError
from .metrics import ServerMetrics
from .repository import ModelRepository, find_checkpoints

log = logging.getLogger(__name__)

# (file name, size, mtime in ns) of every file of a checkpoint directory.
Signature = tuple[tuple[str, int, int], ...]


def checkpoint_signature(path: Path) -> Signature:
    try:
        return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file()))
    except FileNotFoundError:
        return ()


@dataclass(frozen=True)
class ReloadOutcome:
    path: Path
    model: str
    result: str  # "success", "unchanged" or "failure"
    version: str = ""
    error: str = ""


class ModelReloader:
    def __init__(self, repository: ModelRepository, metrics: ServerMetrics, model_dir: Path) -> None:
        self._repository = repository
        self._metrics = metrics
        self._model_dir = model_dir
        self._lock = asyncio.Lock()
        self._served_signatures = {p: checkpoint_signature(p) for p in self._checkpoints()}

    def _checkpoints(self) -> list[Path]:
        try:
            return find_checkpoints(self._model_dir)
        except ValueError:
            return []

    async def reload_all(self, reason: str) -> list[ReloadOutcome]:
        """Reload every checkpoint under the model directory whose content changed."""
        async with self._lock:
            return [await self._reload(path, reason) for path in self._checkpoints()]

    async def watch(self, poll_seconds: float) -> None:
        """Poll forever (cancel to stop): reload checkpoints whose files changed and then held still."""
        pending: dict[Path, Signature] = {}
        while True:
            await asyncio.sleep(poll_seconds)
            for path in self._checkpoints():
                signature = checkpoint_signature(path)
                if signature == self._served_signatures.get(path):
                    pending.pop(path, None)
                elif pending.get(path) == signature:  # changed, and unchanged since the last poll
                    pending.pop(path)
                    async with self._lock:
                        await self._reload(path, "file change")
                else:
                    pending[path] = signature

    async def _reload(self, path: Path, reason: str) -> ReloadOutcome:
        signature = checkpoint_signature(path)
        try:
            predictor = await asyncio.to_thread(self._repository.prepare, path)
        except Exception as error:  # any failure keeps the old version serving
            # Remember the broken files, so polling does not retry them until they change again.
            self._served_signatures[path] = signature
            outcome = ReloadOutcome(path, path.name, "failure", error=str(error))
            self._record(outcome, reason)
            return outcome
        self._served_signatures[path] = signature
        loaded = predictor.loaded
        try:
            current = self._repository.resolve(loaded.name)
        except ServiceError:  # NOT_FOUND: a new model directory
            current = None
        if current is not None and current.loaded.sha256 == loaded.sha256:
            outcome = ReloadOutcome(path, loaded.name, "unchanged", loaded.version)
        else:
            await self._repository.swap(predictor)
            outcome = ReloadOutcome(path, loaded.name, "success", loaded.version)
        self._record(outcome, reason)
        return outcome

    def _record(self, outcome: ReloadOutcome, reason: str) -> None:
        self._metrics.model_reloads.labels(outcome.model, outcome.result).inc()
        fields = {"model": outcome.model, "path": str(outcome.path), "result": outcome.result, "reason": reason}
        if outcome.result == "failure":
            log.error("model reload rejected; the old version keeps serving",
                      extra={"fields": {**fields, "error": outcome.error}})
        else:
            log.info("model reload", extra={"fields": {**fields, "version": outcome.version}})



