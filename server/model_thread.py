"""A model's one thread: runs model calls in arrival order; the event loop awaits their results.

It does what a one-thread ThreadPoolExecutor with `loop.run_in_executor` does, with less per
call: one asyncio future and one `call_soon_threadsafe` instead of a concurrent future, a
wrapping asyncio future and the callbacks chaining them (31 to 22 µs of CPU per round trip,
measured in isolation on uvloop). Every Predict batch and every Trace slice pays it.

A call whose caller has gone (its future cancelled) or whose deadline has passed by the time
the thread reaches it is skipped, not run: its answer would be thrown away.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import Any, Callable, TypeVar

from .errors import deadline_exceeded

T = TypeVar("T")


class ModelThread:
    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    async def run(self, function: Callable[..., T], *args: Any, deadline: float | None = None) -> T:
        """`function(*args)` on the model thread, after the calls queued before it.

        deadline: time.monotonic() after which the call is not started (it raises the
        DEADLINE_EXCEEDED ServiceError instead); a cancelled caller's call is not started either.
        """
        if self._closed:
            raise RuntimeError("the model thread has shut down")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._jobs.put((loop, future, function, args, deadline))
        return await future

    def shutdown(self) -> None:
        """Finish the queued calls, then end the thread (blocks until it has)."""
        self._closed = True
        self._jobs.put(None)
        self._thread.join()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, function, args, deadline = job
            # Read across threads without a lock: a cancellation this check misses only means
            # the call runs, as it always did; one it sees is never undone.
            if future.cancelled():
                del job, loop, future, function, args
                continue
            outcome: tuple[Any, BaseException | None]
            if deadline is not None and time.monotonic() >= deadline:
                outcome = (None, deadline_exceeded("the deadline passed before the model thread reached this call"))
            else:
                try:
                    outcome = (function(*args), None)
                except BaseException as error:  # handed to the caller, as run_in_executor does
                    outcome = (None, error)
            try:
                loop.call_soon_threadsafe(_resolve, future, *outcome)
            except RuntimeError:
                pass  # the event loop closed meanwhile: nobody is waiting any more
            del job, loop, future, function, args, outcome  # hold no result between calls


def _resolve(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.cancelled():  # the caller gave up while its call ran
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
