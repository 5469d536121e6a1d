"""The models a server serves: loaded from a directory, each with its own model thread and batcher.

A model is served under its directory's name (model_directory.py). Hot reload swaps a model
atomically: a request resolves its model once and is answered wholly by that version; the old
version finishes what it has queued in the background, off the event loop, and then shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

import torch

from rnn_sentiment.model.backends import Predictor, make_predictor
from rnn_sentiment.model.checkpoint import LoadedModel, load_checkpoint
from rnn_sentiment.model.inference import EncodedText, PredictionResult, encode_texts
from rnn_sentiment.model.trace import warm_up_trace
from rnn_sentiment.model.truncation import TokenLimit

from .batcher import MicroBatcher
from .config import ServerConfig
from .errors import not_found, quoted_name
from .heap import release_free_heap
from .metrics import ModelMetrics, ServerMetrics
from .model_directory import CHECKPOINT_MARKER, CheckpointDir, check_model_name, scan_model_directory
from .model_thread import ModelThread
from .token_limits import text_chars_shortfall, token_limit_for, token_limit_overrides

log = logging.getLogger(__name__)

PREFERRED_DEFAULT = "sst2-gru"
WARM_UP_TEXT = "a warm-up sentence ."


def resolve_device(requested: str) -> str:
    """Map auto/cpu/cuda to a torch device string, failing clearly when CUDA is absent."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but torch sees no CUDA device; use --device cpu or auto")
    return requested


def find_checkpoints(model_dir: Path) -> tuple[CheckpointDir, ...]:
    """The checkpoints to serve at start: `model_dir` itself, or every one directly under it.

    An entry that cannot be read (say a root-owned lost+found in a mounted volume) is skipped
    with a warning; the hot reloader looks at it again on every poll."""
    if not model_dir.is_dir():
        raise ValueError(f"model directory {model_dir} does not exist")
    scan = scan_model_directory(model_dir)
    for entry in scan.unreadable:
        log.warning("skipping an unreadable entry of the model directory",
                    extra={"fields": {"path": str(entry.path), "error": entry.error}})
    if not scan.checkpoints:
        raise ValueError(f"no checkpoint (a directory with {CHECKPOINT_MARKER}) in {model_dir}")
    return scan.checkpoints


@dataclass
class ServedModel:
    """One loaded model with its own single model thread, shared by its batcher and traces.

    One thread per model serializes forward passes: torch already spreads one pass over the
    configured intra-op threads, and a single queue keeps Predict and Trace fair (FIFO).
    """

    predictor: Predictor  # Predict's forward (ONNX Runtime in length runs, or torch) and its model
    device: str
    model_thread: ModelThread
    batcher: MicroBatcher[EncodedText, PredictionResult]
    metrics: ServerMetrics
    model_metrics: ModelMetrics  # this model's series, shared with its batcher
    token_limit: TokenLimit  # from the server's configuration, not the checkpoint (server/token_limits.py)
    _holds: int = field(default=0, init=False)  # callers between model-thread calls (hold())
    _released: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    @property
    def loaded(self) -> LoadedModel:
        return self.predictor.loaded

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def max_tokens(self) -> int:
        """The most tokens this model reads of one text; the rest is dropped (truncated)."""
        return self.token_limit.max_tokens

    @property
    def truncation(self) -> str:
        """Which tokens of a longer text are read: "head" or "head_tail" (model/truncation.py)."""
        return self.token_limit.truncation

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Keep this version's model thread running until the block ends, even once a reload has
        replaced it: for work that makes several model-thread calls (a trace run in slices)."""
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1
            if not self._holds:
                self._released.set()

    async def close(self) -> None:
        """Finish queued work and held calls, then release the model thread.

        The join waits in a worker thread: the model thread may be seconds into a Trace, and
        the event loop must keep answering every other model and health meanwhile."""
        await self.batcher.close()
        while self._holds:
            self._released.clear()
            await self._released.wait()
        await asyncio.to_thread(self.model_thread.shutdown)


def load_and_warm(checkpoint: CheckpointDir, device: str, config: ServerConfig) -> Predictor:
    """Load a checkpoint, prepare its Predict executor and run one forward through it, so a
    broken checkpoint fails here and not on a caller. Blocking: call it from a thread.

    ModelNameMismatch if its config.json names another model than its directory does."""
    loaded = load_checkpoint(checkpoint.path, device=device)
    check_model_name(checkpoint, loaded.name)
    predictor = make_predictor(loaded, config.backend, config.resolved_torch_threads, config.onnx_max_batch)
    predictor(encode_texts([WARM_UP_TEXT], loaded.vocab, config.max_tokens))
    # Torch's one-off autograd set-up (~0.5 s) here, not inside one slice of the first caller's trace.
    warm_up_trace(loaded)
    log.info("model %s %s: Predict runs on %s", loaded.name, loaded.version, predictor.description)
    release_free_heap()  # the session build's temporaries: tens of MB an idle worker would keep
    return predictor


class ModelRepository:
    """Name -> ServedModel, plus which one answers requests that name no model."""

    def __init__(self, config: ServerConfig, metrics: ServerMetrics, device: str) -> None:
        self._config = config
        self._metrics = metrics
        self.device = device
        self._models: dict[str, ServedModel] = {}
        self._retiring: set[asyncio.Task[None]] = set()  # replaced versions finishing their queues
        self.default_name = ""

    @classmethod
    def load(cls, config: ServerConfig, metrics: ServerMetrics) -> "ModelRepository":
        """Load and warm every checkpoint (blocking; call from a thread), then pick the default."""
        device = resolve_device(config.device)
        torch.set_num_threads(config.resolved_torch_threads)
        repository = cls(config, metrics, device)
        loaded_models: dict[str, Predictor] = {}
        for checkpoint in find_checkpoints(config.resolved_model_dir):
            # Directory names are unique, and each config must agree with its directory's name.
            loaded_models[checkpoint.name] = load_and_warm(checkpoint, device, config)
        default_name = config.default_model or (
            PREFERRED_DEFAULT if PREFERRED_DEFAULT in loaded_models else sorted(loaded_models)[0]
        )
        if default_name not in loaded_models:
            raise ValueError(
                f"default_model={default_name!r} is not among the loaded models: {', '.join(sorted(loaded_models))}"
            )
        repository.default_name = default_name
        for name in token_limit_overrides(config.model_token_limits).keys() - loaded_models.keys():
            # Not fatal: hot reload may add the model later, and then the override applies.
            log.warning("--model-token-limits names a model that is not served", extra={"fields": {"model": name}})
        for predictor in loaded_models.values():
            repository._models[predictor.loaded.name] = repository._serve(predictor)
        longest = max(served.max_tokens for served in repository._models.values())
        if shortfall := text_chars_shortfall(config.max_text_chars, longest):
            log.warning(shortfall)
        return repository

    def prepare(self, checkpoint: CheckpointDir) -> Predictor:
        """load_and_warm with this repository's device and settings (blocking; for hot reload)."""
        return load_and_warm(checkpoint, self.device, self._config)

    def _serve(self, predictor: Predictor) -> ServedModel:
        loaded = predictor.loaded
        model_thread = ModelThread(f"model-{loaded.name}")
        model_metrics = self._metrics.for_model(loaded.name, loaded.config.labels)
        batcher: MicroBatcher[EncodedText, PredictionResult] = MicroBatcher(
            predictor,
            model_thread,
            max_batch_size=self._config.max_batch_size,
            max_queue=self._config.max_queue_texts,
            max_batch_delay=self._config.max_batch_delay_ms / 1000.0,
            metrics=model_metrics,
        )
        token_limit = token_limit_for(loaded.name, self._config.max_tokens, self._config.truncation,
                                      self._config.model_token_limits)
        return ServedModel(predictor, self.device, model_thread, batcher, self._metrics, model_metrics, token_limit)

    def start(self) -> None:
        """Start every batcher (needs the running event loop) and publish model info."""
        for served in self._models.values():
            served.batcher.start()
            self._publish_info(served)

    async def close(self) -> None:
        """Finish every model's queued work (and the replaced versions'), then stop their threads."""
        await asyncio.gather(*(served.close() for served in self._models.values()), *self._retiring)

    def swap(self, predictor: Predictor) -> ServedModel | None:
        """Serve `predictor`'s model under its name from now on; return the replaced model.

        Never waits: the replaced version answers what it already queued in the background
        (close() awaits that too). With no await here a cancelled reload swaps all or nothing."""
        loaded = predictor.loaded
        served = self._serve(predictor)
        served.batcher.start()
        old = self._models.get(loaded.name)
        self._models[loaded.name] = served  # one assignment: the swap is atomic on the event loop
        if old is not None:
            self._unpublish_info(old)
            retiring = asyncio.ensure_future(self._retire(old))
            self._retiring.add(retiring)
            retiring.add_done_callback(self._retiring.discard)
        self._publish_info(served)
        return old

    @staticmethod
    async def _retire(old: ServedModel) -> None:
        fields = {"model": old.name, "version": old.loaded.version}
        try:
            await old.close()
        except Exception:
            log.exception("retiring a replaced model version failed", extra={"fields": fields})
            return
        log.info("replaced model version retired", extra={"fields": fields})

    def get(self, name: str) -> ServedModel | None:
        """The model served under exactly `name`, if any."""
        return self._models.get(name)

    def resolve(self, name: str) -> ServedModel:
        """The named model, the default for "", or NOT_FOUND listing what is served."""
        served = self._models.get(name or self.default_name)
        if served is None:
            raise not_found(f"unknown model {quoted_name(name)}; this server serves: {', '.join(self.names())}")
        return served

    def names(self) -> list[str]:
        """Model names, the default first."""
        return [self.default_name] + sorted(n for n in self._models if n != self.default_name)

    def all(self) -> list[ServedModel]:
        return [self._models[n] for n in self.names()]

    def _info_labels(self, served: ServedModel) -> tuple[str, ...]:
        return (
            served.name, served.loaded.version, served.loaded.sha256, served.device,
            str(served.name == self.default_name).lower(),
        )

    def _publish_info(self, served: ServedModel) -> None:
        self._metrics.model_info.labels(*self._info_labels(served)).set(1)

    def _unpublish_info(self, served: ServedModel) -> None:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # Multiprocess values live in files that `remove` cannot reach: mark it retired.
            self._metrics.model_info.labels(*self._info_labels(served)).set(0)
            return
        try:
            self._metrics.model_info.remove(*self._info_labels(served))
        except KeyError:
            pass
