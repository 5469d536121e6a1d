"""predict_many: score any number of texts as Predict calls under the server's per-request limit.

The texts are read lazily and cut into chunks of at most the server's `max_texts_per_request`
(read once from GetModelInfo); a few chunks are in flight at a time, so the network and the
server's micro-batcher stay busy while answers come back in the order the texts went in.

>>> chunks_of(iter("abcde"), 2)                                   # doctest: +ELLIPSIS
<generator object chunks_of at ...>
>>> list(chunks_of(iter("abcde"), 2))
[['a', 'b'], ['c', 'd'], ['e']]
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import AsyncIterable, AsyncIterator, Awaitable, Callable, Deque, Iterable, Iterator, TypeVar

from .results import ModelInfo, Prediction, PredictResult

ChunkT = TypeVar("ChunkT")

# What a server too old to report its limit accepts by default (--max-texts-per-request).
FALLBACK_MAX_TEXTS_PER_REQUEST = 64
# Requests in flight at once: enough to hide one round trip behind the server's batching, few
# enough that one caller cannot fill the server's queue (it answers RESOURCE_EXHAUSTED past it).
DEFAULT_IN_FLIGHT = 4


@dataclass(frozen=True)
class ChunkPlan:
    """How predict_many cuts its input: `size` texts per request, `in_flight` requests at once."""

    size: int
    in_flight: int

    @classmethod
    def for_server(cls, info: ModelInfo, batch_size: int | None, in_flight: int) -> "ChunkPlan":
        """The caller's batch_size capped by the server's limit (the limit itself when None)."""
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if in_flight < 1:
            raise ValueError(f"in_flight must be at least 1, got {in_flight}")
        limit = info.max_texts_per_request or FALLBACK_MAX_TEXTS_PER_REQUEST
        return cls(size=min(batch_size or limit, limit), in_flight=in_flight)


def chunks_of(texts: Iterator[str], size: int) -> Iterator[list[str]]:
    """Lists of `size` texts (the last one shorter), read lazily from `texts`."""
    chunk: list[str] = []
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"predict_many takes texts (str), got {type(text).__name__}")
        chunk.append(text)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def pipelined(chunks: Iterator[list[str]], start: Callable[[list[str]], "ResultFuture"],
              in_flight: int) -> Iterator[Prediction]:
    """Start up to `in_flight` calls ahead and yield their predictions in input order.

    `start` begins one Predict and returns a future whose `result()` blocks for its answer.
    """
    pending: Deque[ResultFuture] = deque()
    try:
        for chunk in chunks:
            pending.append(start(chunk))
            if len(pending) >= in_flight:
                yield from pending.popleft().result().predictions
        while pending:
            yield from pending.popleft().result().predictions
    finally:
        for future in pending:  # the caller stopped early or a call failed: abandon the rest
            future.cancel()


class ResultFuture:
    """A started blocking Predict: `result()` waits for it, `cancel()` abandons it."""

    def __init__(self, wait: Callable[[], PredictResult], cancel: Callable[[], object]) -> None:
        self._wait = wait
        self._cancel = cancel

    def result(self) -> PredictResult:
        return self._wait()

    def cancel(self) -> None:
        self._cancel()


async def pipelined_async(texts: Iterable[str] | AsyncIterable[str], size: int,
                          predict: Callable[[list[str]], Awaitable[PredictResult]],
                          in_flight: int) -> AsyncIterator[Prediction]:
    """The asyncio twin of `pipelined`: up to `in_flight` Predict tasks ahead, answers in order."""
    pending: Deque[asyncio.Task[PredictResult]] = deque()
    try:
        async for chunk in _async_chunks(texts, size):
            pending.append(asyncio.ensure_future(predict(chunk)))
            if len(pending) >= in_flight:
                for prediction in (await pending.popleft()).predictions:
                    yield prediction
        while pending:
            for prediction in (await pending.popleft()).predictions:
                yield prediction
    finally:
        for task in pending:
            task.cancel()


async def _async_chunks(texts: Iterable[str] | AsyncIterable[str], size: int) -> AsyncIterator[list[str]]:
    if not isinstance(texts, AsyncIterable):
        for chunk in chunks_of(iter(texts), size):
            yield chunk
        return
    chunk: list[str] = []
    async for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"predict_many takes texts (str), got {type(text).__name__}")
        chunk.append(text)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
