"""The models a server serves: loaded from a directory, each with its own model thread and batcher."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import torch

from rnn_sentiment.model.checkpoint import LoadedModel, load_checkpoint
from rnn_sentiment.model.inference import EncodedText, PredictionResult, predict_encoded

from .batcher import MicroBatcher
from .config import ServerConfig
from .errors import not_found
from .metrics import ServerMetrics

log = logging.getLogger(__name__)

PREFERRED_DEFAULT = "sst2-gru"
CHECKPOINT_MARKER = "config.json"

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

    loaded: LoadedModel
    device: str
    executor: ThreadPoolExecutor
    batcher: MicroBatcher[EncodedText, PredictionResult]
    metrics: ServerMetrics

    @property
    def name(self) -> str:
        return self.loaded.name

    async def run_exclusive(self, kind: str, work: Callable[[], T]) -> T:
        """Run `work` on the model thread (between batches) and time it as `kind`."""
        loop = asyncio.get_running_loop()

        def timed() -> T:
            started = time.perf_counter()
            try:
                return work()
            finally:
                self.metrics.model_seconds.labels(self.name, kind).observe(time.perf_counter() - started)

        return await loop.run_in_executor(self.executor, timed)


class ModelRepository:
    """Name -> ServedModel, plus which one answers requests that name no model."""

    def __init__(self, models: dict[str, ServedModel], default_name: str) -> None:
        self._models = models
        self.default_name = default_name

    @classmethod
    def load(cls, config: ServerConfig, metrics: ServerMetrics) -> "ModelRepository":
        """Load every checkpoint (blocking; call before serving or from a thread)."""
        device = resolve_device(config.device)
        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        models: dict[str, ServedModel] = {}
        for path in find_checkpoints(config.resolved_model_dir):
            loaded = load_checkpoint(path, device=device)
            if loaded.name in models:
                raise ValueError(f"two checkpoints are named {loaded.name!r}: {models[loaded.name].loaded.path} and {path}")
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{loaded.name}")
            batcher: MicroBatcher[EncodedText, PredictionResult] = MicroBatcher(
                _batch_runner(loaded),
                executor,
                max_batch_size=config.max_batch_size,
                max_queue=config.max_queue_texts,
                max_batch_delay=config.max_batch_delay_ms / 1000.0,
                metrics=metrics,
                model_name=loaded.name,
            )
            models[loaded.name] = ServedModel(loaded, device, executor, batcher, metrics)
        default_name = config.default_model or (
            PREFERRED_DEFAULT if PREFERRED_DEFAULT in models else sorted(models)[0]
        )
        if default_name not in models:
            raise ValueError(
                f"default_model={default_name!r} is not among the loaded models: {', '.join(sorted(models))}"
            )
        return cls(models, default_name)

    def warm_up(self) -> None:
        """One forward per model so the first caller does not pay for lazy initialisation."""
        from rnn_sentiment.model.inference import encode_texts

        for served in self._models.values():
            encoded = encode_texts(["a warm-up sentence ."], served.loaded.vocab, served.loaded.config.max_tokens)
            predict_encoded(served.loaded, encoded)

    def start(self) -> None:
        for served in self._models.values():
            served.batcher.start()

    async def close(self) -> None:
        for served in self._models.values():
            await served.batcher.close()
            served.executor.shutdown(wait=True)

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


def _batch_runner(loaded: LoadedModel) -> Callable[[list[EncodedText]], list[PredictionResult]]:
    def run(batch: list[EncodedText]) -> list[PredictionResult]:
        return predict_encoded(loaded, batch)

    return run
