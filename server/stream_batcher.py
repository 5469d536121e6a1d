"""StreamBatcher: the chunks many open streams have ready, advanced in ONE model-thread call.

A chunk that finds the batcher idle waits at most GATHER_SECONDS for others to join it (the
streams' words arrive spread over time, not in one loop turn), and while a call runs on the model
thread, newly arrived chunks queue and the next call takes them all without waiting longer than
that from the first of them. A call costs far more than one more session in it, so the model's
cost follows the tokens arriving, not the streams open. The calls share the model's one thread
with Predict batches and Trace slices (FIFO), so a stream never stalls them by more than one
batch of chunks.

No task runs while nothing is queued: a runner starts with the first chunk and ends when the
queue is empty, so a retired model version leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass

from rnn_sentiment.model.streaming import StreamChunk, StreamState, StreamStepper, StreamStepResult

from .metric_buffer import BufferedHistogram
from .model_thread import ModelThread

# The most sessions one model-thread call advances: bounds how long a Predict batch can wait
# behind a stream batch (a chunk is usually a word or two).
MAX_STREAM_BATCH = 256

# How long the first chunk of a batch waits for others. A model-thread call (and the event loop's
# hand-off to it) costs many times one more session in it (bench/results/stream.md, "1 sessions"
# against "16 sessions"), and at a few hundred streams per worker the chunks arrive about a
# millisecond apart, so without a wait nearly every call advances one session. It bounds what a
# chunk waits (a word's answer has tens of milliseconds); a full batch never waits.
GATHER_SECONDS = 0.003


@dataclass
class _Pending:
    state: StreamState
    chunk: StreamChunk
    want_steps: bool
    future: asyncio.Future


class StreamBatcher:
    """Advances stream sessions of one model version on its model thread, many per call."""

    def __init__(self, stepper: StreamStepper, model_thread: ModelThread, model_seconds: BufferedHistogram,
                 max_batch: int = MAX_STREAM_BATCH, gather_seconds: float = GATHER_SECONDS) -> None:
        self.stepper = stepper
        # Weakly: the thread's ServedModel keeps it alive while any of its streams is open (hold()),
        # and a cache keyed by the thread can drop this batcher once the version is retired.
        self._model_thread = weakref.ref(model_thread)
        self._model_seconds = model_seconds
        self._max_batch = max_batch
        self._gather_seconds = gather_seconds
        self._gather_until = 0.0  # loop time until which the queued chunks wait for company
        self._pending: list[_Pending] = []
        self._runner: asyncio.Task[None] | None = None

    def start_state(self) -> StreamState:
        return self.stepper.start()

    async def advance(self, state: StreamState, chunk: StreamChunk,
                      want_steps: bool) -> tuple[StreamState, StreamStepResult]:
        """`state` after reading `chunk` (token strings), batched with the other streams' chunks."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._pending:  # the first of a batch: its wait starts now
            self._gather_until = loop.time() + self._gather_seconds
        self._pending.append(_Pending(state, chunk, want_steps, future))
        if self._runner is None:
            self._runner = asyncio.ensure_future(self._run_until_empty())
        return await future

    async def _run_until_empty(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                # One turn of the event loop: chunks whose handlers woke in this turn join the batch.
                await asyncio.sleep(0)
                wait = self._gather_until - loop.time()
                if wait > 0 and len(self._pending) < self._max_batch:
                    await asyncio.sleep(wait)
                batch = [p for p in self._pending[: self._max_batch] if not p.future.done()]
                del self._pending[: self._max_batch]
                if batch:
                    await self._run(batch)
        finally:
            self._runner = None

    async def _run(self, batch: list[_Pending]) -> None:
        started = time.monotonic()
        try:
            model_thread = self._model_thread()
            if model_thread is None:
                raise RuntimeError("the model version of these streams has been retired")
            answers = await model_thread.run(
                self.stepper.advance, [p.state for p in batch], [p.chunk for p in batch],
                [p.want_steps for p in batch])
            # One answer per session, checked here: a miscount fails this call's streams like any
            # model error, where outside the try it would end the runner and strand the queue.
            answered = list(zip(batch, answers, strict=True))
        except Exception as error:  # every stream in the batch gets the failure
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        finally:
            self._model_seconds.observe(time.monotonic() - started)
        for pending, answer in answered:
            if not pending.future.done():
                pending.future.set_result(answer)
