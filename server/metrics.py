"""Prometheus metrics: the gRPC ecosystem's names for RPCs, `rnn_sentiment_*` for model work.

Everything lives in one `ServerMetrics` with its own registry, so two servers in one process
(tests) never share counters, and the exposition holds only what this server records.
Under `--workers N` (PROMETHEUS_MULTIPROC_DIR set) values go to shared files instead and the
supervisor serves their aggregate; the gauges say how to combine workers.

The series every Predict updates are buffered (metric_buffer.py): the request path adds to
plain Python totals, flushed to these series every FLUSH_SECONDS by the server's event loop,
and also whenever the registry is collected (`FlushBeforeCollect`), so a scrape counts every call
that returned before it. Under `--workers N` the supervisor renders the workers' files and
cannot reach their buffers: there a scrape lags by up to FLUSH_SECONDS (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import dataclass
from typing import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric

from .metric_buffer import BufferedCounter, BufferedGauge, BufferedHistogram, MetricBuffer

# 100 µs to 10 s, roughly ×2.5 per bucket: a cached-tokenizer Predict lands near the bottom,
# a long integrated-gradients Trace near the top.
RPC_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOKEN_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# A render waits this long for the event loop to flush. The loop answers within a turn unless it
# is stalled; then a scrape as it stands (at most FLUSH_SECONDS old) beats a scrape that hangs.
FLUSH_WAIT_SECONDS = 1.0

log = logging.getLogger(__name__)


class FlushBeforeCollect:
    """A collector with no series of its own, registered before all others: collecting the
    registry (rendering /metrics) first writes the buffered updates to their series.

    The buffer is only ever touched on the event loop's thread (metric_buffer.py), so the request
    path needs no lock; the /metrics endpoint renders on a thread of its own (metrics_http.py), so
    from there the flush is handed to the loop and waited for. Without a loop (a registry used
    outside a server, as unit tests do) flushing stays the caller's job.
    """

    def __init__(self, buffer: MetricBuffer, loop: asyncio.AbstractEventLoop | None) -> None:
        self._buffer = buffer
        self._loop = loop

    def describe(self) -> Iterable[Metric]:
        return []  # no names of its own: without this, registering would collect (and flush)

    def collect(self) -> Iterable[Metric]:
        loop = self._loop
        if loop is None:
            return []
        if _running_loop() is loop:
            self._buffer.flush()
            return []
        flushed: concurrent.futures.Future[None] = concurrent.futures.Future()

        def flush() -> None:
            try:
                self._buffer.flush()
                flushed.set_result(None)
            except BaseException as error:  # the render reports it; the loop goes on
                flushed.set_exception(error)

        try:
            loop.call_soon_threadsafe(flush)
        except RuntimeError:
            return []  # the loop is closed: its flusher's last flush has run
        try:
            flushed.result(FLUSH_WAIT_SECONDS)
        except concurrent.futures.TimeoutError:
            log.warning("event loop did not flush the metric buffer within %s s: scrape may lag", FLUSH_WAIT_SECONDS)
        return []


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


@dataclass(frozen=True)
class ModelMetrics:
    """One model's labelled series, looked up once when the model is served, and buffered.

    `metric.labels(...)` takes a lock and a dict lookup each call, and an update of the series
    costs far more than adding to a buffer; these sit on every request's path (about a dozen
    updates per text).
    """

    queue_seconds: BufferedHistogram
    batch_size: BufferedHistogram
    predict_seconds: BufferedHistogram
    queue_depth: BufferedGauge
    tokens: BufferedCounter
    unknown_tokens: BufferedCounter
    text_tokens: BufferedHistogram
    predictions: dict[str, BufferedCounter]  # label -> its series


@dataclass
class ServerMetrics:
    registry: CollectorRegistry
    rpc_started: Counter
    rpc_handled: Counter
    rpc_handling_seconds: Histogram
    model_seconds: Histogram
    queue_seconds: Histogram
    batch_size: Histogram
    queue_depth: Gauge
    tokens: Counter
    unknown_tokens: Counter
    text_tokens: Histogram
    predictions: Counter
    model_info: Gauge
    model_reloads: Counter
    model_reload_failures: Counter
    model_directory_missing: Gauge
    ready: Gauge
    streams_active: Gauge  # StreamSentiment (server/stream_sessions.py), by model
    stream_chunks: Counter
    stream_tokens: Counter
    stream_update_seconds: Histogram
    stream_session_bytes: Gauge
    buffer: MetricBuffer  # the buffered series' updates; flushed on the event loop, periodically and on collect

    def for_model(self, name: str, labels: Sequence[str]) -> ModelMetrics:
        """The buffered series of model `name`, whose predictions carry `labels`."""
        buffer = self.buffer
        return ModelMetrics(
            queue_seconds=buffer.histogram(self.queue_seconds.labels(name)),
            batch_size=buffer.histogram(self.batch_size.labels(name)),
            predict_seconds=buffer.histogram(self.model_seconds.labels(name, "predict")),
            queue_depth=buffer.gauge(self.queue_depth.labels(name)),
            tokens=buffer.counter(self.tokens.labels(name)),
            unknown_tokens=buffer.counter(self.unknown_tokens.labels(name)),
            text_tokens=buffer.histogram(self.text_tokens.labels(name)),
            predictions={label: buffer.counter(self.predictions.labels(name, label)) for label in labels},
        )

    @classmethod
    def create(cls) -> "ServerMetrics":
        """The metrics of one server; called on the event loop that will make the updates
        (bind_server), which collecting the registry then asks to flush the buffer."""
        registry = CollectorRegistry()
        buffer = MetricBuffer()
        # First in the registry, so the flush lands before any series is read.
        registry.register(FlushBeforeCollect(buffer, _running_loop()))
        rpc_labels = ("grpc_type", "grpc_service", "grpc_method")
        return cls(
            registry=registry,
            buffer=buffer,
            rpc_started=Counter(
                "grpc_server_started", "RPCs started on the server.", rpc_labels, registry=registry
            ),
            rpc_handled=Counter(
                "grpc_server_handled", "RPCs completed on the server, by status code.",
                (*rpc_labels, "grpc_code"), registry=registry,
            ),
            rpc_handling_seconds=Histogram(
                "grpc_server_handling_seconds",
                "Time from receiving an RPC to sending its status, in seconds.",
                rpc_labels, buckets=RPC_BUCKETS, registry=registry,
            ),
            model_seconds=Histogram(
                "rnn_sentiment_model_seconds", "Time of one model call (a batch or a trace), in seconds.",
                ("model", "kind"), buckets=RPC_BUCKETS, registry=registry,
            ),
            queue_seconds=Histogram(
                "rnn_sentiment_queue_seconds", "Time a text waited for the model, in seconds.",
                ("model",), buckets=RPC_BUCKETS, registry=registry,
            ),
            batch_size=Histogram(
                "rnn_sentiment_batch_size", "Texts per model forward pass.",
                ("model",), buckets=BATCH_SIZE_BUCKETS, registry=registry,
            ),
            queue_depth=Gauge(
                "rnn_sentiment_queue_depth", "Texts waiting for the model now.",
                ("model",), registry=registry, multiprocess_mode="livesum",
            ),
            tokens=Counter(
                "rnn_sentiment_tokens", "Tokens read by the model.", ("model",), registry=registry
            ),
            unknown_tokens=Counter(
                "rnn_sentiment_unknown_tokens", "Tokens not in the model's vocabulary.",
                ("model",), registry=registry,
            ),
            text_tokens=Histogram(
                "rnn_sentiment_text_tokens", "Tokens per text scored.",
                ("model",), buckets=TOKEN_BUCKETS, registry=registry,
            ),
            predictions=Counter(
                "rnn_sentiment_predictions", "Predictions returned, by label.",
                ("model", "label"), registry=registry,
            ),
            model_info=Gauge(
                "rnn_sentiment_model_info", "Served models (value 1), with version, hash and device.",
                ("model", "version", "sha256", "device", "default"), registry=registry,
                multiprocess_mode="livemax",
            ),
            ready=Gauge(
                "rnn_sentiment_ready", "1 while this server (or each worker, summed) is SERVING.",
                registry=registry, multiprocess_mode="livesum",
            ),
            model_reloads=Counter(
                "rnn_sentiment_model_reload", "Hot-reload attempts, by result (success, unchanged, failure).",
                ("model", "result"), registry=registry,
            ),
            model_reload_failures=Counter(
                "rnn_sentiment_model_reload_failures",
                "Hot-reload failures, by reason (name_mismatch, invalid_checkpoint, unreadable, unexpected).",
                ("model", "reason"), registry=registry,
            ),
            model_directory_missing=Gauge(
                "rnn_sentiment_model_directory_missing",
                "1 while a served model's checkpoint directory is gone (the loaded version keeps serving).",
                ("model",), registry=registry, multiprocess_mode="livemax",
            ),
            streams_active=Gauge(
                "rnn_sentiment_streams_active", "StreamSentiment streams open now.",
                ("model",), registry=registry, multiprocess_mode="livesum",
            ),
            stream_chunks=Counter(
                "rnn_sentiment_stream_chunks", "StreamSentiment messages (chunks of text) answered.",
                ("model",), registry=registry,
            ),
            stream_tokens=Counter(
                "rnn_sentiment_stream_tokens", "Tokens completed on StreamSentiment streams (read or dropped).",
                ("model",), registry=registry,
            ),
            stream_update_seconds=Histogram(
                "rnn_sentiment_stream_update_seconds",
                "Time from a StreamSentiment chunk's arrival to its answer being ready, in seconds.",
                ("model",), buckets=RPC_BUCKETS, registry=registry,
            ),
            stream_session_bytes=Gauge(
                "rnn_sentiment_stream_session_bytes",
                "Bytes the open StreamSentiment streams hold: model state (hidden state, pooling) and held text.",
                ("model",), registry=registry, multiprocess_mode="livesum",
            ),
        )
