"""Runs a trace as slices on its model's thread: one slice at a time, so Predict batches queued
meanwhile run between slices, with a pause after each so a trace uses at most half a core;
abandoned at the caller's deadline or cancellation; and at most one trace per model at work, a
few more waiting, the rest refused.

model/trace.py cuts the work (trace_slices); this module decides when each slice may run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

from rnn_sentiment.model.attribution import Slices

from .errors import deadline_exceeded, resource_exhausted
from .model_thread import ModelThread

Result = TypeVar("Result")

# One trace per model at work: with more, a Predict batch could wait behind one slice of each.
CONCURRENT_TRACES = 1
# Traces waiting for their turn, per model; beyond them a trace is refused at once with
# RESOURCE_EXHAUSTED rather than held (the caller retries after RetryInfo's delay).
WAITING_TRACES = 4
# After each slice a trace waits as long as the slice took: it gets at most half of one core.
# Slicing alone bounds Predict's wait for the model thread, but a trace running flat out still
# takes a whole core from the event loop and the callers on a small machine; with the pause,
# Predict's p99 beside a looping heavy trace stays within the 2x target (bench/trace_isolation.py,
# docs/reliability.md). The price: a heavy trace takes about twice as long. Light traces (a
# 20-word trace with gradient x input needs a few ms) finish within UNPAUSED_SECONDS, unpaused.
PAUSE_PER_SLICE_SECOND = 1.0
UNPAUSED_SECONDS = 0.02


class TraceAdmission:
    """Who of a model's traces may work now: CONCURRENT_TRACES at a time, WAITING_TRACES queued."""

    def __init__(self, concurrent: int = CONCURRENT_TRACES, waiting: int = WAITING_TRACES) -> None:
        self._slots = asyncio.Semaphore(concurrent)
        self._waiting_limit = waiting
        self._waiting = 0

    @contextlib.asynccontextmanager
    async def admitted(self, timeout: float | None) -> AsyncIterator[None]:
        """Hold a slot for the body, after waiting at most `timeout` seconds for one (None: no
        limit): RESOURCE_EXHAUSTED when the queue is full, DEADLINE_EXCEEDED when time runs out."""
        if self._slots.locked() and self._waiting >= self._waiting_limit:
            raise resource_exhausted(
                f"this model is already running a trace with {self._waiting} more waiting (limit "
                f"{self._waiting_limit}); retry shortly")
        if self._slots.locked():
            self._waiting += 1
            try:
                await _acquire_within(self._slots, timeout)
            finally:
                self._waiting -= 1
        else:
            await self._slots.acquire()  # free: returns without yielding to the loop
        try:
            yield
        finally:
            self._slots.release()


async def _acquire_within(slots: asyncio.Semaphore, timeout: float | None) -> None:
    """Acquire `slots` within `timeout` seconds (None: no limit), else DEADLINE_EXCEEDED. Like
    asyncio.timeout (Python 3.11+; the server runs on 3.10 too): an acquire that wins the race
    against the timeout or the caller's cancellation gives its slot back, never leaks it."""
    acquiring = asyncio.ensure_future(slots.acquire())
    try:
        done, _ = await asyncio.wait((acquiring,), timeout=timeout)
    except BaseException:  # the caller was cancelled while waiting
        if acquiring.done() and not acquiring.cancelled() and acquiring.exception() is None:
            slots.release()
        else:
            acquiring.cancel()  # Semaphore.acquire hands a slot it was just given to the next
        raise
    if done:
        return
    acquiring.cancel()
    try:
        await acquiring
    except asyncio.CancelledError:
        pass
    else:
        slots.release()  # acquired as the time ran out
    raise deadline_exceeded("the deadline passed while the trace waited for another trace")


@dataclass
class SliceClock:
    """Model-thread seconds a trace's slices took, and how many ran."""

    total: float = 0.0
    count: int = 0


async def run_slices_on(model_thread: ModelThread, slices: Slices[Result],
                        time_remaining: Callable[[], float | None], clock: SliceClock,
                        pause_per_slice_second: float = PAUSE_PER_SLICE_SECOND) -> Result:
    """Drive `slices` to its result, one slice per model-thread call; once the slices have taken
    UNPAUSED_SECONDS, pausing after each for `pause_per_slice_second` times as long as it took.

    Before each slice the caller's deadline is checked (time_remaining: seconds left, None for
    none): past it, DEADLINE_EXCEEDED and no more slices. A cancelled caller's await is
    cancelled, so no further slice is submitted, and a queued one is never started.
    """
    while True:
        remaining = time_remaining()
        if remaining is not None and remaining <= 0:
            raise deadline_exceeded("the deadline passed during the trace; it was stopped (ask for fewer "
                                    "attributions, fewer integrated_gradients_steps or a longer deadline)")
        deadline = None if remaining is None else time.monotonic() + remaining
        before = clock.total
        finished, result = await model_thread.run(_advance, slices, clock, deadline=deadline)
        if finished:
            return result
        if pause_per_slice_second and clock.total > UNPAUSED_SECONDS:
            await asyncio.sleep((clock.total - before) * pause_per_slice_second)


def _advance(slices: Slices[Result], clock: SliceClock) -> tuple[bool, Result | None]:
    """Run one slice: (True, result) after the last one, else (False, None). On the model thread."""
    started = time.perf_counter()
    try:
        next(slices)
    except StopIteration as done:
        return True, done.value
    finally:
        clock.total += time.perf_counter() - started
        clock.count += 1
    return False, None
