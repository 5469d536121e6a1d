"""The models a server serves: loaded from a directory, each with its own model thread and batcher.

Hot reload swaps a model atomically: a request resolves its model once and is answered wholly
by that version; the old version finishes what it has queued and then shuts down.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import torch

from rnn_sentiment.model.backends import Predictor, make_predictor
from rnn_sentiment.model.checkpoint import LoadedModel, load_checkpoint
from rnn_sentiment.model.inference import EncodedText, PredictionResult, encode_texts

from .batcher import MicroBatcher
from .config import ServerConfig
from .errors import not_found
from .heap import release_free_heap
from .metrics import ModelMetrics, ServerMetrics
from .model_thread import ModelThread

log = logging.getLogger(__name__)

PREFERRED_DEFAULT = "sst2-gru"
CHECKPOINT_MARKER = "config.json"
WARM_UP_TEXT = "a warm-up sentence ."

T = TypeVar("T")


def resolve_device(requested: str) -> str:
    """Map auto/cpu/cuda to a torch device string, failing clearly when CUDA is absent."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but torch sees no CUDA device; use --device cpu or auto")
    return requested


def find_checkpoints(model_dir: Path) -> list[Path]:
    """A checkpoint directory itself, or every checkpoint directly under a model repository."""
    if not model_dir.is_dir():
        raise ValueError(f"model directory {model_dir} does not exist")
    if (model_dir / CHECKPOINT_MARKER).is_file():
        return [model_dir]
    found = sorted(p for p in model_dir.iterdir() if (p / CHECKPOINT_MARKER).is_file())
    if not found:
        raise ValueError(f"no checkpoint (a directory with {CHECKPOINT_MARKER}) in {model_dir}")
    return found


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

    @property
    def loaded(self) -> LoadedModel:
        return self.predictor.loaded

    @property
    def name(self) -> str:
        return self.loaded.name

    async def run_exclusive(self, kind: str, work: Callable[[], T]) -> T:
        """Run `work` on the model thread (between batches) and time it as `kind`."""

        def timed() -> T:
            started = time.perf_counter()
            try:
                return work()
            finally:
                self.metrics.model_seconds.labels(self.name, kind).observe(time.perf_counter() - started)

        return await self.model_thread.run(timed)

    async def close(self) -> None:
        """Finish queued work, then release the model thread."""
        await self.batcher.close()
        self.model_thread.shutdown()


def load_and_warm(path: Path, device: str, config: ServerConfig) -> Predictor:
    """Load a checkpoint, prepare its Predict executor and run one forward through it, so a
    broken checkpoint fails here and not on a caller. Blocking: call it from a thread."""
    loaded = load_checkpoint(path, device=device)
    predictor = make_predictor(loaded, config.backend, config.resolved_torch_threads, config.onnx_max_batch)
    predictor(encode_texts([WARM_UP_TEXT], loaded.vocab, loaded.config.max_tokens))
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
        self.default_name = ""

    @classmethod
    def load(cls, config: ServerConfig, metrics: ServerMetrics) -> "ModelRepository":
        """Load and warm every checkpoint (blocking; call from a thread), then pick the default."""
        device = resolve_device(config.device)
        torch.set_num_threads(config.resolved_torch_threads)
        repository = cls(config, metrics, device)
        loaded_models: dict[str, Predictor] = {}
        for path in find_checkpoints(config.resolved_model_dir):
            predictor = load_and_warm(path, device, config)
            name = predictor.loaded.name
            if name in loaded_models:
                raise ValueError(f"two checkpoints are named {name!r}: {loaded_models[name].loaded.path} and {path}")
            loaded_models[name] = predictor
        default_name = config.default_model or (
            PREFERRED_DEFAULT if PREFERRED_DEFAULT in loaded_models else sorted(loaded_models)[0]
        )
        if default_name not in loaded_models:
            raise ValueError(
                f"default_model={default_name!r} is not among the loaded models: {', '.join(sorted(loaded_models))}"
            )
        repository.default_name = default_name
        for predictor in loaded_models.values():
            repository._models[predictor.loaded.name] = repository._serve(predictor)
        return repository

    def prepare(self, path: Path) -> Predictor:
        """load_and_warm with this repository's device and settings (blocking; for hot reload)."""
        return load_and_warm(path, self.device, self._config)

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
            busy_batch_delay=self._config.busy_batch_delay_ms / 1000.0,
            metrics=model_metrics,
        )
        return ServedModel(predictor, self.device, model_thread, batcher, self._metrics, model_metrics)

    def start(self) -> None:
        """Start every batcher (needs the running event loop) and publish model info."""
        for served in self._models.values():
            served.batcher.start()
            self._publish_info(served)

    async def close(self) -> None:
        for served in self._models.values():
            await served.close()

    async def swap(self, predictor: Predictor) -> ServedModel | None:
        """Serve `predictor`'s model under its name from now on; return the replaced model, closed."""
        loaded = predictor.loaded
        served = self._serve(predictor)
        served.batcher.start()
        old = self._models.get(loaded.name)
        self._models[loaded.name] = served  # one assignment: the swap is atomic on the event loop
        if old is not None:
            self._unpublish_info(old)
        self._publish_info(served)
        if old is not None:
            await old.close()  # answers what it already queued with the old version
        return old

    def resolve(self, name: str) -> ServedModel:
        """The named model, the default for "", or NOT_FOUND listing what is served."""
        served = self._models.get(name or self.default_name)
        if served is None:
            raise not_found(f"unknown model {name!r}; this server serves: {', '.join(self.names())}")
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
