"""Buffered metric updates expose exactly what direct prometheus_client updates would, after a flush."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from rnn_sentiment.server.metric_buffer import BufferedHistogram, MetricBuffer
from rnn_sentiment.server.metrics import RPC_BUCKETS, ServerMetrics

# Values on, between, below and above the bucket bounds (a value equal to a bound belongs to it).
OBSERVATIONS = (0.0, 0.00005, 0.0001, 0.00011, 0.0025, 0.003, 0.003, 1.0, 9.99, 10.0, 12.5, 1e9)


def _metrics(registry: CollectorRegistry) -> tuple[Counter, Gauge, Histogram]:
    return (
        Counter("calls", "Calls.", ("method",), registry=registry),
        Gauge("depth", "Depth.", ("model",), registry=registry),
        Histogram("seconds", "Seconds.", ("method",), buckets=RPC_BUCKETS, registry=registry),
    )


def _exposition(registry: CollectorRegistry) -> list[str]:
    # _created lines carry the time the series was made: they differ between two registries.
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


def test_a_flush_exposes_what_direct_updates_expose() -> None:
    direct_registry, buffered_registry = CollectorRegistry(), CollectorRegistry()
    counter, gauge, histogram = _metrics(direct_registry)
    b_counter, b_gauge, b_histogram = _metrics(buffered_registry)
    buffer = MetricBuffer()
    calls, depth, seconds = (buffer.counter(b_counter.labels("Predict")), buffer.gauge(b_gauge.labels("m")),
                             buffer.histogram(b_histogram.labels("Predict")))
    for value in OBSERVATIONS:
        counter.labels("Predict").inc()
        histogram.labels("Predict").observe(value)
        calls.inc()
        seconds.observe(value)
    counter.labels("Predict").inc(2.5)
    calls.inc(2.5)
    gauge.labels("m").set(7)
    depth.set(7)

    assert _exposition(buffered_registry) != _exposition(direct_registry)  # nothing written before a flush
    buffer.flush()
    assert _exposition(buffered_registry) == _exposition(direct_registry)

    # A second round adds to the first; an idle flush changes nothing.
    for value in OBSERVATIONS[:5]:
        histogram.labels("Predict").observe(value)
        seconds.observe(value)
    gauge.labels("m").set(0)
    depth.set(0)
    buffer.flush()
    buffer.flush()
    assert _exposition(buffered_registry) == _exposition(direct_registry)


def test_one_series_gets_one_buffer() -> None:
    registry = CollectorRegistry()
    counter, _, histogram = _metrics(registry)
    buffer = MetricBuffer()
    first = buffer.counter(counter.labels("Predict"))
    assert buffer.counter(counter.labels("Predict")) is first  # e.g. a model reloaded under its name
    assert buffer.counter(counter.labels("Trace")) is not first
    with pytest.raises(TypeError, match="already buffered"):
        buffer.histogram(counter.labels("Predict"))
    with pytest.raises(TypeError, match="histogram layout"):
        BufferedHistogram(counter.labels("Predict"))
    assert buffer.histogram(histogram.labels("Predict")) is buffer.histogram(histogram.labels("Predict"))


def test_flush_every_writes_periodically_and_once_more_when_cancelled() -> None:
    async def scenario() -> None:
        registry = CollectorRegistry()
        counter, _, _ = _metrics(registry)
        buffer = MetricBuffer()
        calls = buffer.counter(counter.labels("Predict"))
        flusher = asyncio.ensure_future(buffer.flush_every(0.01))
        calls.inc()
        for _ in range(500):  # bounded: 5 s
            if registry.get_sample_value("calls_total", {"method": "Predict"}) == 1:
                break
            await asyncio.sleep(0.01)
        assert registry.get_sample_value("calls_total", {"method": "Predict"}) == 1
        calls.inc(3)
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
        assert registry.get_sample_value("calls_total", {"method": "Predict"}) == 4

    asyncio.run(scenario())


def test_server_metrics_buffer_the_per_request_series() -> None:
    metrics = ServerMetrics.create()
    model = metrics.for_model("sst2-gru", ["negative", "positive"])
    model.predictions["positive"].inc()
    model.text_tokens.observe(12)
    model.queue_depth.set(3)
    assert metrics.registry.get_sample_value("rnn_sentiment_predictions_total",
                                             {"model": "sst2-gru", "label": "positive"}) == 0
    metrics.buffer.flush()
    assert metrics.registry.get_sample_value("rnn_sentiment_predictions_total",
                                             {"model": "sst2-gru", "label": "positive"}) == 1
    assert metrics.registry.get_sample_value("rnn_sentiment_text_tokens_bucket", {"model": "sst2-gru", "le": "16.0"}) == 1
    assert metrics.registry.get_sample_value("rnn_sentiment_queue_depth", {"model": "sst2-gru"}) == 3
    # The same model served again (a hot reload) shares the buffers, so nothing is lost between them.
    assert metrics.for_model("sst2-gru", ["negative", "positive"]).predictions["positive"] is model.predictions["positive"]


def test_collecting_a_servers_registry_flushes_the_buffer_on_its_loop() -> None:
    """A render off the loop (the /metrics endpoint's thread) hands the flush to the loop, and one
    on the loop flushes at once: either way the exposition holds every update made before it."""
    async def scenario() -> tuple[float | None, float | None]:
        metrics = ServerMetrics.create()  # on the loop, as bind_server makes it
        positive = metrics.for_model("sst2-gru", ["negative", "positive"]).predictions["positive"]
        labels = {"model": "sst2-gru", "label": "positive"}
        positive.inc()
        from_thread = await asyncio.get_running_loop().run_in_executor(
            None, metrics.registry.get_sample_value, "rnn_sentiment_predictions_total", labels)
        positive.inc()
        on_loop = metrics.registry.get_sample_value("rnn_sentiment_predictions_total", labels)
        return from_thread, on_loop

    assert asyncio.run(scenario()) == (1, 2)


def test_a_render_after_the_loop_closed_does_not_wait_for_it() -> None:
    async def make() -> ServerMetrics:
        return ServerMetrics.create()

    metrics = asyncio.run(make())  # the loop is closed once this returns
    metrics.for_model("sst2-gru", ["negative", "positive"]).predictions["positive"].inc()
    assert b"rnn_sentiment_predictions_total" in generate_latest(metrics.registry)


def test_a_gauge_flushed_before_any_set_reads_0() -> None:
    registry = CollectorRegistry()
    _, depth, _ = _metrics(registry)
    series = depth.labels(model="m")
    from rnn_sentiment.server.metric_buffer import BufferedGauge

    BufferedGauge(series).flush()
    assert registry.get_sample_value("depth", {"model": "m"}) == 0.0


@pytest.mark.parametrize("missing", ["_upper_bounds", "_buckets", "_sum"])
def test_a_histogram_without_the_layout_it_adds_to_is_refused_at_once(missing: str) -> None:
    """A prometheus_client release that moved any one of these must fail at start, not count wrong."""
    registry = CollectorRegistry()
    _, _, seconds = _metrics(registry)
    series = seconds.labels(method="m")

    class Moved:
        def __getattr__(self, name: str) -> object:
            if name == missing:
                raise AttributeError(name)
            return getattr(series, name)

    with pytest.raises(TypeError, match="does not have the histogram layout"):
        BufferedHistogram(Moved())
