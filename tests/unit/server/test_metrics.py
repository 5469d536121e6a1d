"""ServerMetrics as a scrape sees it: the histograms' bucket bounds, and the flush before a render.

The `le` labels are part of the contract. Prometheus stores one series per `le`; the dashboard's
`histogram_quantile` panels interpolate between these boundaries and the latency alert
(deploy/prometheus/alerts.yml, p99 > 0.5 s) is only exact at one. A moved boundary silently shifts
every quantile an operator reads and breaks the continuity of the stored series across a deploy,
so each histogram's boundaries are asserted as exposed by a real registry.
"""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rnn_sentiment.server.metrics import FLUSH_WAIT_SECONDS, ServerMetrics

# README: grpc_server_handling_seconds is a histogram from 100 µs to 10 s, about ×2.5 per bucket.
SECONDS_BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                  2.5, 5.0, 10.0, float("inf"))
# Batch sizes and text lengths: powers of two, so a full batch of a power-of-two size is on a bound.
BATCH_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, float("inf"))
TOKEN_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, float("inf"))


def exposed_bounds(metrics: ServerMetrics, name: str) -> tuple[float, ...]:
    """The `le` boundaries of histogram `name` in the registry's text exposition."""
    text = generate_latest(metrics.registry).decode()
    bounds = [float(sample.labels["le"]) for family in text_string_to_metric_families(text)
              for sample in family.samples if sample.name == f"{name}_bucket"]
    assert bounds, f"no {name}_bucket series in:\n{text}"
    return tuple(bounds)


@pytest.fixture()
def observed() -> ServerMetrics:
    """A server's metrics with one observation in every histogram, so each has its series."""
    metrics = ServerMetrics.create()
    metrics.rpc_handling_seconds.labels("unary", "rnn_sentiment.v1.SentimentService", "Predict").observe(0.003)
    metrics.model_seconds.labels("m", "predict").observe(0.003)
    metrics.queue_seconds.labels("m").observe(0.003)
    metrics.stream_update_seconds.labels("m").observe(0.003)
    metrics.batch_size.labels("m").observe(2)
    metrics.text_tokens.labels("m").observe(12)
    return metrics


@pytest.mark.parametrize(
    ("name", "bounds"),
    [
        ("grpc_server_handling_seconds", SECONDS_BOUNDS),
        ("rnn_sentiment_model_seconds", SECONDS_BOUNDS),
        ("rnn_sentiment_queue_seconds", SECONDS_BOUNDS),
        ("rnn_sentiment_stream_update_seconds", SECONDS_BOUNDS),
        ("rnn_sentiment_batch_size", BATCH_BOUNDS),
        ("rnn_sentiment_text_tokens", TOKEN_BOUNDS),
    ],
)
def test_each_histogram_exposes_its_documented_bucket_bounds(observed: ServerMetrics, name: str,
                                                             bounds: tuple[float, ...]) -> None:
    assert exposed_bounds(observed, name) == bounds



@contextmanager
def loop_in_a_thread() -> Iterator[asyncio.AbstractEventLoop]:
    """A server's event loop on its own thread, so /metrics renders from another one, as it does."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def metrics_on(loop: asyncio.AbstractEventLoop, amount: float = 1.0) -> ServerMetrics:
    """A server's metrics made on `loop`, with one buffered (not yet flushed) prediction of `amount`."""
    async def make() -> ServerMetrics:
        metrics = ServerMetrics.create()
        metrics.for_model("m", ["positive"]).predictions["positive"].inc(amount)
        return metrics

    return asyncio.run_coroutine_threadsafe(make(), loop).result(10)


def test_a_flush_that_fails_on_the_loop_fails_the_scrape_at_once_and_the_loop_goes_on() -> None:
    """A render must not pass off stale values after a wait: the flush's error reaches the render
    (the endpoint answers 500 and logs it), and the loop keeps serving."""
    with loop_in_a_thread() as loop:
        metrics = metrics_on(loop, amount=-1)  # a counter refuses a negative increment when flushed
        start = time.monotonic()
        with pytest.raises(ValueError):
            generate_latest(metrics.registry)
        assert time.monotonic() - start < FLUSH_WAIT_SECONDS / 2
        assert asyncio.run_coroutine_threadsafe(asyncio.sleep(0, "alive"), loop).result(5) == "alive"


def test_a_scrape_while_the_event_loop_is_stalled_answers_within_the_flush_wait() -> None:
    """/metrics renders on its own thread and asks the loop to flush; a stalled loop (a long
    synchronous call on it) costs the scrape about a second (FLUSH_WAIT_SECONDS), never an error
    or a hang as long as the stall, and the next scrape after the stall counts what was buffered."""
    with loop_in_a_thread() as loop:
        metrics = metrics_on(loop)
        loop.call_soon_threadsafe(time.sleep, 2.5)  # the stall, longer than any wait a scrape may make
        time.sleep(0.05)
        start = time.monotonic()
        text = generate_latest(metrics.registry).decode()
        elapsed = time.monotonic() - start
        assert "# TYPE rnn_sentiment_predictions_total counter" in text
        assert elapsed < 2.2  # the flush wait and a render, with room for a loaded machine; a hang would be the stall (2.45 s)
        labels = {"model": "m", "label": "positive"}
        deadline = time.monotonic() + 10
        while metrics.registry.get_sample_value("rnn_sentiment_predictions_total", labels) != 1:
            assert time.monotonic() < deadline, "the buffered update never reached the exposition"
            time.sleep(0.05)
