"""The served models' descriptions a client has read, so predict_many asks the server once per model."""

from __future__ import annotations

import threading
from typing import Callable

from .results import ModelInfo


class ModelLimits:
    """ModelInfo by requested model name ("" = the default), read once, safe across threads."""

    def __init__(self) -> None:
        self._infos: dict[str, ModelInfo] = {}
        self._lock = threading.Lock()

    def cached(self, model: str) -> ModelInfo | None:
        with self._lock:
            return self._infos.get(model)

    def remember(self, model: str, info: ModelInfo) -> ModelInfo:
        with self._lock:
            self._infos[model] = info
        return info

    def info(self, model: str, fetch: Callable[[str], ModelInfo]) -> ModelInfo:
        """The cached description of `model`, or `fetch(model)`'s, remembered (blocking clients)."""
        return self.cached(model) or self.remember(model, fetch(model))
