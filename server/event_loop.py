"""Which asyncio event loop runs the server: uvloop when it is installed, else asyncio's own.

uvloop answers more req/s than asyncio's loop at the same p99 (docs/performance.md). gRPC's
asyncio stack runs on any asyncio loop: it hands its completion queue to the loop through a
file descriptor, which uvloop polls like any other.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["EVENT_LOOPS", "resolve_event_loop", "run"]

EVENT_LOOPS = ("auto", "uvloop", "asyncio")

T = TypeVar("T")


def resolve_event_loop(requested: str) -> str:
    """auto -> uvloop when importable, else asyncio; uvloop without the package is an error."""
    if requested not in EVENT_LOOPS:
        raise ValueError(f"invalid event loop {requested!r}; options are {list(EVENT_LOOPS)}")
    available = importlib.util.find_spec("uvloop") is not None
    if requested == "uvloop" and not available:
        raise ValueError("event_loop=uvloop but the uvloop package is not installed (pip install uvloop)")
    if requested == "auto":
        return "uvloop" if available else "asyncio"
    return requested


def run(main: Coroutine[Any, Any, T], event_loop: str) -> T:
    """asyncio.run(main) on the resolved loop."""
    if resolve_event_loop(event_loop) == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
