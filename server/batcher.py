"""MicroBatcher: many concurrent callers, one model, as few forward passes as possible.

Adaptive by default: when the model is idle, the first text runs at once (no waiting for a
batch to fill, only one turn of the event loop for texts that arrived together); while a
forward pass runs, new texts queue up and the next pass takes all of them, up to
`max_batch_size`. Under load batches grow by themselves; at low load nobody waits.
`max_batch_delay` adds an optional wait for users who prefer throughput over latency.

Texts are the unit: a multi-text request becomes several queue entries, resolved together.
Expired (past their deadline) and cancelled entries are dropped before compute.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass
from typing import Callable, Generic, Sequence, TypeVar

from .errors import deadline_exceeded, resource_exhausted
from .metrics import ModelMetrics
from .model_thread import ModelThread

Item = TypeVar("Item")
Result = TypeVar("Result")

log = logging.getLogger(__name__)


@dataclass
class _Entry(Generic[Item]):
    item: Item
    future: asyncio.Future
    enqueued_at: float  # time.monotonic()
    deadline: float | None  # time.monotonic() after which the answer is useless


class MicroBatcher(Generic[Item, Result]):
    """Queues items, runs `run_batch(items) -> results` (same order) on `model_thread`."""

    def __init__(
        self,
        run_batch: Callable[[list[Item]], list[Result]],
        model_thread: ModelThread,
        *,
        max_batch_size: int,
        max_queue: int,
        max_batch_delay: float = 0.0,
        metrics: ModelMetrics | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._model_thread = model_thread
        self._max_batch_size = max_batch_size
        self._max_queue = max_queue
        self._max_batch_delay = max_batch_delay
        self._metrics = metrics
        self._queue: collections.deque[_Entry[Item]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closing = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="micro-batcher")

    @property
    def depth(self) -> int:
        return len(self._queue)

    async def submit(self, items: Sequence[Item], timeout: float | None = None) -> list[Result]:
        """Score `items` (order kept); `timeout` is the caller's remaining deadline in seconds."""
        if self._closing:
            raise RuntimeError("batcher is closed")
        if len(self._queue) + len(items) > self._max_queue:
            raise resource_exhausted(
                f"the model queue is full ({len(self._queue)} texts waiting, limit {self._max_queue}); retry shortly"
            )
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        entries = [_Entry(item, loop.create_future(), now, deadline) for item in items]
        self._queue.extend(entries)
        self._set_depth()
        self._wakeup.set()
        try:
            if len(entries) == 1:  # the common case: no gathering future to build
                return [await entries[0].future]
            return list(await asyncio.gather(*(e.future for e in entries)))
        except BaseException:
            # A failed or cancelled caller frees its other texts' places in the next batch.
            for entry in entries:
                entry.future.cancel()
            raise

    async def close(self) -> None:
        """Finish what is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self._max_batch_delay > 0 and len(self._queue) < self._max_batch_size:
                await self._wait_for_batch()
            # One turn of the event loop first: the handlers gRPC woke in this turn enqueue their
            # texts and ride in this batch: bigger batches at no cost to a lone text
            # (measured in docs/performance.md).
            await asyncio.sleep(0)
            batch = self._take_batch()
            if batch:
                await self._run(batch)

    async def _wait_for_batch(self) -> None:
        give_up = time.monotonic() + self._max_batch_delay
        while len(self._queue) < self._max_batch_size and not self._closing:
            remaining = give_up - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take_batch(self) -> list[_Entry[Item]]:
        now = time.monotonic()
        batch: list[_Entry[Item]] = []
        while self._queue and len(batch) < self._max_batch_size:
            entry = self._queue.popleft()
            if entry.future.done():  # the caller gave up (cancelled) or failed already
                continue
            if entry.deadline is not None and now >= entry.deadline:
                entry.future.set_exception(
                    deadline_exceeded("the deadline passed while the text waited for the model")
                )
                continue
            batch.append(entry)
        self._set_depth()
        return batch

    async def _run(self, batch: list[_Entry[Item]]) -> None:
        started = time.monotonic()
        if self._metrics is not None:
            queue_seconds = self._metrics.queue_seconds
            for entry in batch:
                queue_seconds.observe(started - entry.enqueued_at)
            self._metrics.batch_size.observe(len(batch))
        try:
            results = await self._model_thread.run(self._run_batch, [entry.item for entry in batch])
            # One result per text, checked here: a miscount fails this batch's callers like any
            # model error, where outside the try it would end this loop and strand every later call.
            answered = list(zip(batch, results, strict=True))
        except Exception as error:  # the model failed: every caller in the batch gets it
            log.exception("model batch of %d failed", len(batch))
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(error)
            return
        finally:
            if self._metrics is not None:
                self._metrics.predict_seconds.observe(time.monotonic() - started)
        for entry, result in answered:
            if not entry.future.done():
                entry.future.set_result(result)

    def _set_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.set(len(self._queue))
