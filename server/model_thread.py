"""A model's one thread: runs model calls in arrival order; the event loop awaits their results.

A one-thread executor with `loop.run_in_executor`: the model's work runs off the event loop,
one call at a time in the order queued, so Trace slices and Predict batches take turns. A call
whose caller has gone (its future cancelled) before the thread reaches it is never started (the
executor drops a cancelled pending call), nor is one whose deadline has passed: its answer would
be thrown away.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from .errors import deadline_exceeded

T = TypeVar("T")


class ModelThread:
    def __init__(self, name: str) -> None:
        # Named exactly `name` (not the executor's `name_0`): it is what py-spy and logs show.
        self._executor = ThreadPoolExecutor(max_workers=1, initializer=_name_this_thread, initargs=(name,))
        self._closed = False

    async def run(self, function: Callable[..., T], *args: Any, deadline: float | None = None) -> T:
        """`function(*args)` on the model thread, after the calls queued before it.

        deadline: time.monotonic() after which the call is not started (it raises the
        DEADLINE_EXCEEDED ServiceError instead); a cancelled caller's call is not started either.
        """
        if self._closed:
            raise RuntimeError("the model thread has shut down")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _call_unless_expired, deadline, function, args)

    def shutdown(self) -> None:
        """Finish the queued calls, then end the thread (blocks until it has)."""
        self._closed = True
        self._executor.shutdown(wait=True)


def _name_this_thread(name: str) -> None:
    threading.current_thread().name = name


def _call_unless_expired(deadline: float | None, function: Callable[..., T], args: tuple[Any, ...]) -> T:
    if deadline is not None and time.monotonic() >= deadline:
        raise deadline_exceeded("the deadline passed before the model thread reached this call")
    return function(*args)
