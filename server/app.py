"""Process lifecycle: bind, load models, serve, drain on SIGTERM/SIGINT.

The port opens first with health NOT_SERVING (so probes and balancers can see the process is
alive but not ready); health turns SERVING only once every model is loaded and warmed up.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from dataclasses import dataclass

import torch
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from rnn_sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc

from .affinity import pin_from_environment
from .config import ServerConfig
from .instrumentation import MetricsInterceptor
from .metrics import ServerMetrics
from .reloader import ModelReloader
from .repository import ModelRepository
from .servicer import SentimentServicer, ServingState
from .validation import RequestLimits

log = logging.getLogger("rnn_sentiment.server")

SERVICE_NAME = sentiment_pb2.DESCRIPTOR.services_by_name["SentimentService"].full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# The overall server health ("") and our service's health move together.
HEALTH_NAMES = ("", SERVICE_NAME)


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
    health: health.aio.HealthServicer
    state: ServingState
    metrics: ServerMetrics
    metrics_flusher: asyncio.Task  # writes the buffered metric updates every FLUSH_SECONDS

    async def load_models(self) -> ModelRepository:
        """Load and warm every model off the event loop, then turn SERVING."""
        repository = await asyncio.to_thread(ModelRepository.load, self.config, self.metrics)
        # Models, vocabularies and modules live as long as the process: move them out of the
        # garbage collector's way so its passes stay short while serving (py-spy: ~5% of samples).
        gc.freeze()
        repository.start()
        self.state.repository = repository
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self.metrics.ready.set(1)
        return repository

    async def drain(self) -> None:
        """NOT_SERVING first (so balancers move away), then let in-flight calls finish."""
        self.state.draining = True
        self.metrics.ready.set(0)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(self.config.grace_seconds)
        if self.state.repository is not None:
            await self.state.repository.close()
        await self.stop_metrics()

    async def stop_metrics(self) -> None:
        """End the periodic flush, which flushes once more: the last calls' updates are written."""
        self.metrics_flusher.cancel()
        await asyncio.gather(self.metrics_flusher, return_exceptions=True)

    async def _set_health(self, status: int) -> None:
        for name in HEALTH_NAMES:
            await self.health.set(name, status)


async def bind_server(config: ServerConfig) -> RunningServer:
    """Start gRPC (health NOT_SERVING, every call UNAVAILABLE) and the metrics endpoint."""
    metrics = ServerMetrics.create()
    state = ServingState()
    health_servicer = health.aio.HealthServicer()
    for name in HEALTH_NAMES:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    server = aio.server(interceptors=[MetricsInterceptor(metrics)])
    limits = RequestLimits(config.max_texts_per_request, config.max_text_chars)
    sentiment_pb2_grpc.add_SentimentServiceServicer_to_server(SentimentServicer(state, limits), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.reflection:
        reflection.enable_server_reflection((SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(config.address)

    metrics_port = None
    if config.metrics_address:
        host, requested = split_address(config.metrics_address)
        http_server, _ = start_http_server(requested, addr=host, registry=metrics.registry)
        metrics_port = http_server.server_port
    await server.start()
    flusher = asyncio.ensure_future(metrics.buffer.flush_every())
    return RunningServer(config, server, port, metrics_port, health_servicer, state, metrics, flusher)


async def serve(config: ServerConfig) -> int:
    """Serve until SIGTERM/SIGINT, then drain and return the exit code (0)."""
    cpu = pin_from_environment()  # a worker of `--workers N`: before the model's threads start
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    running = await bind_server(config)
    host, _ = split_address(config.address)
    log.info("listening, loading models", extra={"fields": {"grpc_address": f"{host}:{running.port}"}})
    loading = asyncio.ensure_future(running.load_models())
    await asyncio.wait((loading, asyncio.ensure_future(stop.wait())), return_when=asyncio.FIRST_COMPLETED)
    if loading.done():
        try:
            repository = loading.result()
        except Exception:
            log.exception("could not load the models; exiting")
            await running.server.stop(0)
            await running.stop_metrics()
            return 1
        log.info(
            "serving",
            extra={"fields": {
                "grpc_address": f"{host}:{running.port}",
                "metrics_address": f"{split_address(config.metrics_address)[0]}:{running.metrics_port}" if running.metrics_port else "",
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
        reloader = ModelReloader(repository, running.metrics, config.resolved_model_dir)
        background: set[asyncio.Task] = set()

        def reload_now() -> None:
            task = asyncio.ensure_future(reloader.reload_all("SIGHUP"))
            background.add(task)
            task.add_done_callback(background.discard)

        loop.add_signal_handler(signal.SIGHUP, reload_now)
        watcher = asyncio.ensure_future(reloader.watch(config.model_poll_seconds)) if config.model_poll_seconds else None
        await stop.wait()
        if watcher is not None:
            watcher.cancel()
        loop.remove_signal_handler(signal.SIGHUP)
        await asyncio.gather(*background, return_exceptions=True)
    else:
        loading.cancel()
    log.info("draining", extra={"fields": {"grace_seconds": config.grace_seconds}})
    await running.drain()
    log.info("stopped")
    return 0
