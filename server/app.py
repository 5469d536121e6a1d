"""Process lifecycle: bind, load models, serve, drain on SIGTERM/SIGINT.

The port opens first with health NOT_SERVING (so probes and balancers can see the process is
alive but not ready); health turns SERVING only once every model is loaded and warmed up.
Signals follow one state machine in every phase (lifecycle.py). The drain loses nothing a
client would not retry: see `RunningServer.drain`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Collection, TypeVar

import torch
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rnn_sentiment.inference import grpc_service_pb2_grpc as oip_grpc
from rnn_sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc

from .admission import AdmissionLimit, core_backlog_options
from .affinity import pin_from_environment
from .auth import auth_interceptors
from .config import ServerConfig
from .connections import grpc_server_options
from .health_service import DrainingHealthServicer
from .instrumentation import MetricsInterceptor
from .lifecycle import Lifecycle
from .metrics import ServerMetrics
from .metrics_http import MetricsEndpoint, start_metrics_endpoint
from .oip_servicer import SERVICE_NAME as OIP_SERVICE_NAME
from .oip_servicer import OipServicer
from .reloader import ModelReloader, directory_signatures
from .repository import ModelRepository
from .servicer import SentimentServicer, ServingState
from .stream_sentiment import StreamExecutor, StreamSentimentService
from .stream_sessions import StreamLimits, StreamRegistry
from .supervisor import SUPERVISOR_METRICS_ENV
from .tls import add_grpc_port, tls_files
from .validation import RequestLimits

log = logging.getLogger("rnn_sentiment.server")

SERVICE_NAME = sentiment_pb2.DESCRIPTOR.services_by_name["SentimentService"].full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# The overall server health ("") and our service's health move together.
HEALTH_NAMES = ("", SERVICE_NAME)

# The drain ends its UNAVAILABLE window once no call has been refused for this long: nobody is
# sending any more, so closing the port cancels nothing.
DRAIN_QUIET_SECONDS = 0.2
# Then refusals are parked until none has come for this long (every caller that waits on its
# previous call is holding a parked one), at most PARK_SECONDS. Generous: on a busy machine the
# loop can take tens of milliseconds to pick up the next call that gRPC has already received.
PARK_QUIET_SECONDS = 0.25
PARK_SECONDS = 2.0
QUIET_TURNS = 5

T = TypeVar("T")


def split_address(address: str) -> tuple[str, int]:
    """"127.0.0.1:50051" -> ("127.0.0.1", 50051); "[::1]:0" -> ("::1", 0)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass
class RunningServer:
    """A bound server and the handles needed to load models into it and stop it."""

    config: ServerConfig
    server: aio.Server
    port: int
    metrics_port: int | None
    health: DrainingHealthServicer
    state: ServingState
    metrics: ServerMetrics
    metrics_flusher: asyncio.Task  # writes the buffered metric updates every FLUSH_SECONDS
    metrics_endpoint: MetricsEndpoint | None = None
    streams: StreamRegistry | None = None  # open StreamSentiment streams: the drain ends them after the grace

    async def load_models(self) -> ModelRepository:
        """Load and warm every model off the event loop, then turn SERVING."""
        repository = await _in_daemon_thread(ModelRepository.load, self.config, self.metrics)
        # Models, vocabularies and modules live as long as the process: move them out of the
        # garbage collector's way so its passes stay short while serving (docs/performance.md).
        gc.freeze()
        repository.start()
        self.state.repository = repository
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self.metrics.ready.set(1)
        return repository

    async def drain(self, abandon: Collection[asyncio.Future] = ()) -> None:
        """Stop so that no caller sees a status it would not retry.

        1. NOT_SERVING (health watchers are told, then their streams end) and every new call
           UNAVAILABLE with RetryInfo; the tasks in `abandon` (a reload, polling) are cancelled.
        2. Keep the port open answering UNAVAILABLE until no call has come for
           DRAIN_QUIET_SECONDS, at most `drain_seconds`: balancers and clients move away.
        3. Park new calls (held, unanswered) until none has come for PARK_QUIET_SECONDS. gRPC's
           shutdown cancels every call it has received but not yet handed to a handler
           (CANCELLED, which retry policies do not retry); a caller waiting on a parked call
           sends nothing that could be caught so.
        4. Shut down (GOAWAY: the clients' next calls go elsewhere), then answer the parked
           calls UNAVAILABLE; calls already accepted finish within `grace_seconds`.
        """
        self.state.draining = True
        self.metrics.ready.set(0)
        if self.streams is not None:
            # Open streams go on for the grace period, then end UNAVAILABLE (clients reopen them
            # elsewhere); timed from now, so before the shutdown below would cancel them.
            self.streams.end_all_after(self.config.grace_seconds)
        await self.health.drain()
        for task in abandon:
            task.cancel()
        await asyncio.gather(*abandon, return_exceptions=True)
        started = time.monotonic()
        refused_before = self.state.refused
        await self._wait_until_quiet(DRAIN_QUIET_SECONDS, self.config.drain_seconds)
        parked = self.state.refused
        self.state.park_refusals()
        await self._wait_until_quiet(PARK_QUIET_SECONDS, PARK_SECONDS)
        parked = self.state.refused - parked
        stopping = asyncio.ensure_future(self.server.stop(self.config.grace_seconds))
        await asyncio.sleep(0)  # the shutdown has begun: no call is accepted after this one
        self.state.release_refusals()
        await stopping
        log.info("drained", extra={"fields": {
            "refused": self.state.refused - refused_before, "parked": parked,
            "seconds": round(time.monotonic() - started, 2),
        }})
        if self.streams is not None:
            await self.streams.stop()
        if self.state.repository is not None:
            await self.state.repository.close()
        await self.stop_metrics()

    async def _wait_until_quiet(self, quiet: float, at_most: float) -> None:
        """Until no call has been refused for `quiet` seconds and QUIET_TURNS turns of the event
        loop, or `at_most` seconds. The turns matter on a starved machine: calls gRPC has received
        reach a handler only when the loop runs, so wall time alone could pass with calls waiting."""
        deadline = time.monotonic() + at_most
        since = time.monotonic()
        turns, refused = 0, self.state.refused
        while (now := time.monotonic()) < deadline:
            if self.state.refused != refused:
                turns, refused = 0, self.state.refused
            if turns >= QUIET_TURNS and now - max(self.state.last_refused, since) >= quiet:
                return
            await asyncio.sleep(min(quiet / QUIET_TURNS, deadline - now))
            turns += 1

    async def stop_metrics(self) -> None:
        """End the periodic flush, which flushes once more (the last calls' updates are written),
        then close the /metrics endpoint."""
        self.metrics_flusher.cancel()
        await asyncio.gather(self.metrics_flusher, return_exceptions=True)
        if self.metrics_endpoint is not None:
            await self.metrics_endpoint.close()

    async def _set_health(self, status: int) -> None:
        for name in HEALTH_NAMES:
            await self.health.set(name, status)


@dataclass(frozen=True)
class Services:
    """What serves the calls, whatever front end carries them (bench/sync_server.py builds them too)."""

    metrics: ServerMetrics
    state: ServingState
    health: DrainingHealthServicer  # NOT_SERVING until the models are loaded
    interceptor: MetricsInterceptor  # counts every call; admission sits in it (server/admission.py)
    limits: RequestLimits
    streams: StreamRegistry
    sentiment: SentimentServicer


async def build_services(config: ServerConfig) -> Services:
    metrics = ServerMetrics.create()
    state = ServingState()
    health = DrainingHealthServicer()
    for name in HEALTH_NAMES:
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    admission = AdmissionLimit(config.max_concurrent_rpcs) if config.max_concurrent_rpcs else None
    limits = RequestLimits(config.max_texts_per_request, config.max_text_chars)
    streams = StreamRegistry(StreamLimits(config.max_streams, config.stream_idle_seconds, config.max_stream_tokens,
                                          config.max_text_chars), metrics)
    stream_service = StreamSentimentService(
        streams, StreamExecutor(config.backend, config.resolved_torch_threads))
    return Services(metrics, state, health, MetricsInterceptor(metrics, admission), limits, streams,
                    SentimentServicer(state, limits, stream_service))


async def bind_server(config: ServerConfig) -> RunningServer:
    """Start gRPC (health NOT_SERVING, every call UNAVAILABLE) and the metrics endpoint."""
    services = await build_services(config)
    metrics, state, health_servicer, limits = services.metrics, services.state, services.health, services.limits
    # The auth check runs inside what the metrics interceptor wraps, so refusals are counted.
    server = aio.server(options=grpc_server_options(config) + core_backlog_options(config.max_pending_rpcs),
                        interceptors=[
        services.interceptor, *auth_interceptors(config.auth_tokens, config.auth_token_file),
    ])
    sentiment_servicer = services.sentiment
    sentiment_pb2_grpc.add_SentimentServiceServicer_to_server(sentiment_servicer, server)
    # The Open Inference Protocol v2 beside it: ModelInfer takes Predict's own path, the work that
    # StreamPredict shares too (oip_servicer.py).
    oip_servicer = OipServicer(state, limits, sentiment_servicer.predict_message)
    oip_grpc.add_GRPCInferenceServiceServicer_to_server(oip_servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.resolved_reflection:
        reflection.enable_server_reflection(
            (SERVICE_NAME, OIP_SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = add_grpc_port(server, config.address, tls_files(config.tls_cert, config.tls_key, config.tls_client_ca))
    log.info("gRPC security", extra={"fields": {
        "tls": "mutual" if config.tls_client_ca else "on" if config.tls_enabled else "off",
        "bearer_tokens": "on" if config.auth_enabled else "off", "reflection": config.resolved_reflection,
    }})

    metrics_endpoint = None
    if config.metrics_address:
        # On this event loop, not a thread per connection (server/metrics_http.py).
        metrics_endpoint = await start_metrics_endpoint(
            split_address(config.metrics_address), lambda: generate_latest(metrics.registry), CONTENT_TYPE_LATEST
        )
    await server.start()
    flusher = asyncio.ensure_future(metrics.buffer.flush_every())
    return RunningServer(config, server, port, metrics_endpoint.port if metrics_endpoint else None, health_servicer,
                         state, metrics, flusher, metrics_endpoint, services.streams)


def _metrics_fields(config: ServerConfig, metrics_port: int | None) -> dict[str, str]:
    """Where this process's metrics can be read, for its "serving" line."""
    if metrics_port:
        return {"metrics_address": f"{split_address(config.metrics_address)[0]}:{metrics_port}"}
    # A worker of `--workers N` serves none itself: its supervisor serves the sum of all workers.
    supervisor_address = os.environ.get(SUPERVISOR_METRICS_ENV, "")
    if supervisor_address:
        return {"metrics_address": supervisor_address, "metrics_served_by": "supervisor"}
    return {"metrics_address": "off"}


async def serve(config: ServerConfig) -> int:
    """Serve until SIGTERM/SIGINT, then drain and return the exit code (0; 1 if models fail to load)."""
    lifecycle = Lifecycle("server")
    # Before anything else: from here on no signal takes its default action (SIGHUP's is death).
    lifecycle.install(asyncio.get_running_loop())
    try:
        return await _serve(config, lifecycle)
    finally:
        lifecycle.stopped()


async def _serve(config: ServerConfig, lifecycle: Lifecycle) -> int:
    cpu = pin_from_environment()  # a worker of `--workers N`: before the model's threads start
    running = await bind_server(config)
    host, _ = split_address(config.address)
    log.info("listening, loading models", extra={"fields": {"grpc_address": f"{host}:{running.port}"}})
    # What the models are loaded from, before they are: the reloader's baseline (a change made
    # from here on is reloaded, however late the reloader starts).
    loaded_signatures = await asyncio.to_thread(directory_signatures, config.resolved_model_dir)
    loading = asyncio.ensure_future(running.load_models())
    drain_requested = asyncio.ensure_future(lifecycle.drain_requested.wait())
    await asyncio.wait((loading, drain_requested), return_when=asyncio.FIRST_COMPLETED)
    background: set[asyncio.Future] = set()
    if loading.done():
        try:
            repository = loading.result()
        except Exception:
            log.exception("could not load the models; exiting")
            drain_requested.cancel()
            await running.server.stop(0)
            await running.stop_metrics()
            return 1
        log.info(
            "serving",
            extra={"fields": {
                "grpc_address": f"{host}:{running.port}",
                **_metrics_fields(config, running.metrics_port),
                "models": ",".join(f"{s.name}@{s.loaded.version}" for s in repository.all()),
                "default_model": repository.default_name,
                "device": repository.resolve("").device,
                "torch_threads": torch.get_num_threads(),
                "cpu": "any" if cpu is None else cpu,
                "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
                "max_batch_size": config.max_batch_size,
                "max_batch_delay_ms": config.max_batch_delay_ms,
                "max_texts_per_request": config.max_texts_per_request,
                "max_text_chars": config.max_text_chars,
            }},
        )
        reloader = ModelReloader(repository, running.metrics, config.resolved_model_dir, loaded_signatures)

        def reload_now() -> None:
            task = asyncio.ensure_future(reloader.reload_all("SIGHUP"))
            background.add(task)
            task.add_done_callback(background.discard)

        lifecycle.serving(on_hangup=reload_now)
        if config.model_poll_seconds:
            background.add(asyncio.ensure_future(reloader.watch(config.model_poll_seconds)))
        await drain_requested
    else:
        loading.cancel()  # the loading thread runs on (nothing can stop it inside torch): see below
    log.info("draining", extra={"fields": {
        "drain_seconds": config.drain_seconds, "grace_seconds": config.grace_seconds,
    }})
    # A running reload is abandoned, not awaited: the drain starts now, whatever it was loading.
    await running.drain(abandon=tuple(background))
    log.info("stopped")
    if not loading.done() or loading.cancelled():
        # The abandoned loading thread is still inside torch or ONNX Runtime: waiting for it could
        # take as long as the loading, and finalizing the interpreter under it aborts the process
        # (C++ `terminate`). The drain is complete and metric files are written as they change,
        # so only the log is left to flush.
        logging.shutdown()
        os._exit(0)
    return 0


async def _in_daemon_thread(function: Callable[..., T], *args: object) -> T:
    """`function(*args)` on a daemon thread of its own. Unlike asyncio.to_thread's executor,
    whose threads the interpreter joins at exit, an abandoned call (SIGTERM while models load)
    does not keep the process alive until it returns."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.cancelled():
            return
        if error is None:
            future.set_result(result)  # type: ignore[arg-type]
        else:
            future.set_exception(error)

    def work() -> None:
        try:
            outcome: tuple[T | None, BaseException | None] = (function(*args), None)
        except BaseException as error:
            outcome = (None, error)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:
            pass  # the loop has closed: the caller is gone

    threading.Thread(target=work, name=getattr(function, "__name__", "work"), daemon=True).start()
    return await future
