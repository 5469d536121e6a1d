"""Hot-path metric updates kept in plain Python, written to prometheus_client on each flush.

A Predict makes about a dozen metric updates (RPC counters and timings, queue time, tokens,
predictions, batch size, queue depth). Through prometheus_client each one is a chain of Python
calls, a lock and, under `--workers N`, a write to a memory-mapped file; the whole server answers
measurably more requests with them buffered (docs/performance.md, "Speed code, measured").

So the request path adds to a counter here (an attribute increment; a bisect for a
histogram's bucket) and `MetricBuffer.flush`, on the event loop every FLUSH_SECONDS, adds the
totals to the prometheus_client series: /metrics lags by at most that much. Every update and
every flush run on the event loop thread, so a total is never read while it is being added to.
Series are registered when a model is served, at startup from the thread that loads the models
(`ModelRepository.load`), which is why `flush` walks a copy of the registry.
"""

from __future__ import annotations

import asyncio
import bisect
from typing import Any

__all__ = ["FLUSH_SECONDS", "BufferedCounter", "BufferedGauge", "BufferedHistogram", "MetricBuffer"]

# Scrapes come every 5-60 s; a flush of a few dozen series costs tens of microseconds.
FLUSH_SECONDS = 0.5


class BufferedCounter:
    """`inc` adds to a local total; `flush` adds the total to the prometheus_client counter."""

    __slots__ = ("_series", "_pending")

    def __init__(self, series: Any) -> None:
        self._series = series  # a Counter with its labels applied
        self._pending = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self._pending += amount

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, 0.0
            self._series.inc(pending)


class BufferedGauge:
    """`set` keeps the latest value; `flush` writes it when it changed."""

    __slots__ = ("_series", "_value", "_written")

    def __init__(self, series: Any) -> None:
        self._series = series  # a Gauge with its labels applied
        self._value = 0.0
        self._written: float | None = None

    def set(self, value: float) -> None:
        self._value = value

    def flush(self) -> None:
        if self._value != self._written:
            self._series.set(self._value)
            self._written = self._value


class BufferedHistogram:
    """`observe` counts into a local copy of the buckets; `flush` adds them to the histogram.

    prometheus_client has no public way to add many observations at once, so the flush adds to
    the series' bucket and sum values (`_buckets`, `_sum`, `_upper_bounds`, as in 0.26). The
    constructor checks they are there, and a unit test checks that a flush exposes exactly what
    the same observations made one by one would, so an upgrade that moves them fails the tests.
    """

    __slots__ = ("_series", "_bounds", "_counts", "_sum", "_pending")

    def __init__(self, series: Any) -> None:
        bounds = getattr(series, "_upper_bounds", None)
        buckets = getattr(series, "_buckets", None)
        if not bounds or buckets is None or len(buckets) != len(bounds) or not hasattr(series, "_sum"):
            raise TypeError(f"{type(series).__name__} does not have the histogram layout BufferedHistogram "
                            "adds to; this prometheus_client version needs metric_buffer.py updated")
        self._series = series  # a Histogram with its labels applied
        self._bounds: list[float] = list(bounds)  # ascending, the last one +Inf
        self._counts = [0] * len(bounds)
        self._sum = 0.0
        self._pending = False

    def observe(self, value: float) -> None:
        # bisect_left finds the first bound >= value: the bucket prometheus_client's own
        # `value <= bound` scan picks.
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value
        self._pending = True

    def flush(self) -> None:
        if not self._pending:
            return
        counts, self._counts = self._counts, [0] * len(self._bounds)
        total, self._sum = self._sum, 0.0
        self._pending = False
        for bucket, count in zip(self._series._buckets, counts):
            if count:
                bucket.inc(count)
        self._series._sum.inc(total)


Buffered = BufferedCounter | BufferedGauge | BufferedHistogram


class MetricBuffer:
    """The buffered series of one server: one buffer per prometheus_client series, flushed together."""

    def __init__(self) -> None:
        self._buffers: dict[int, Buffered] = {}  # id(series) -> its buffer; the series are kept alive by it

    def counter(self, series: Any) -> BufferedCounter:
        return self._buffer(series, BufferedCounter)

    def gauge(self, series: Any) -> BufferedGauge:
        return self._buffer(series, BufferedGauge)

    def histogram(self, series: Any) -> BufferedHistogram:
        return self._buffer(series, BufferedHistogram)

    def flush(self) -> None:
        """Write every buffered update to its series (on the thread that makes the updates)."""
        for buffer in list(self._buffers.values()):  # a copy: a model loading meanwhile may add series
            buffer.flush()

    async def flush_every(self, seconds: float = FLUSH_SECONDS) -> None:
        """Flush every `seconds` until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(seconds)
                self.flush()
        finally:
            self.flush()

    def _buffer(self, series: Any, kind: type) -> Any:
        # One buffer per series: a model reloaded under the same name keeps its buffers, and
        # two holders of one series never flush over each other.
        buffer = self._buffers.get(id(series))
        if buffer is None:
            buffer = self._buffers[id(series)] = kind(series)
        elif not isinstance(buffer, kind):
            raise TypeError(f"series already buffered as {type(buffer).__name__}, not {kind.__name__}")
        return buffer
