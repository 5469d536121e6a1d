"""Our full server behind the sync (thread-pool) `grpc.server` instead of grpc.aio: a bake-off variant.

    python -m bench.sync_server --address 127.0.0.1:PORT --threads N [--workers W]
                                [--event-loop auto|uvloop|asyncio]

Everything behind the front door is the aio server's own code, built from the same
`ServerConfig` as `rnn-sentiment serve` (its `RNN_SENTIMENT_*` variables apply): one asyncio event
loop thread owns the models, the micro-batchers and the model threads, loaded by
`RunningServer.load_models`. Each gRPC pool thread hands its call to that loop
(`asyncio.run_coroutine_threadsafe(...).result()`) and runs there exactly what grpc.aio would
run for it: the generated stubs' handlers for SentimentServicer and the health service, wrapped
by the `MetricsInterceptor` (request ids, admission, tolerant parsing, grpc_server_* metrics),
then `guarded()` and `predict_message`. So statuses, messages, `google.rpc` details and metric
updates are the aio server's, and only the transport and one thread hop differ.

`--workers W` starts W such processes on one port (SO_REUSEPORT, gRPC's default); this parent
serves nothing, prints "serving on port N" once every worker's health says SERVING (polled on a
private loopback port each worker also binds) and stops them all on SIGTERM/SIGINT. With one
worker the process serves itself and prints the same line once its models are loaded.

A bench prototype; what differs from `rnn-sentiment serve`:
- Unary methods only (Predict, GetModelInfo, ListModels, Trace, Health.Check): no streams (so no
  Health.Watch: poll Check), no Open Inference Protocol, no reflection; no TLS or bearer tokens
  (refused at start).
- No /metrics endpoint: the metric updates are made and flushed as in an aio worker of
  `--workers N` (whose supervisor serves them), but nobody reads them, and they are never
  written to multiprocess files.
- Deadlines: gRPC ends the call DEADLINE_EXCEEDED when its deadline passes; the loop's task for
  it is cancelled then (as grpc.aio cancels its handler), so the batcher drops the text. A
  client's cancellation cancels the task the same way.
- Drain: SIGTERM turns health NOT_SERVING and refuses new calls UNAVAILABLE at once, then
  `grpc.server.stop(grace_seconds)`; no drain window, no parked refusals, no restarts of
  crashed workers, no CPU pinning, no hot reload.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Awaitable, Callable, Sequence

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rnn_sentiment.server.admission import core_backlog_options
from rnn_sentiment.server.app import RunningServer, build_services
from rnn_sentiment.server.config import ServerConfig, config_from
from rnn_sentiment.server.connections import grpc_server_options
from rnn_sentiment.server.event_loop import EVENT_LOOPS, run
from rnn_sentiment.server.logging_setup import configure_logging
from rnn_sentiment.v1 import sentiment_pb2_grpc

log = logging.getLogger("bench.sync_server")

# The sync server reports "no deadline" as a remaining time of centuries; grpc.aio as None.
NO_DEADLINE_SECONDS = 1e9
# How long the parent of `--workers W` waits for every worker to turn SERVING.
WORKERS_READY_SECONDS = 300.0
WORKER_PORT_LINE = "worker port "

Behavior = Callable[[Any, "LoopCallContext"], Awaitable[Any]]


@dataclass(frozen=True)
class _CallDetails:
    """What MetricsInterceptor reads of grpc.HandlerCallDetails: the method's full name."""

    method: str
    invocation_metadata: tuple = ()


class _HandlerCollector:
    """Stands in for a server in the generated `add_*_to_server` functions, keeping their handlers."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}  # "/package.Service/Method" -> handler

    def add_generic_rpc_handlers(self, generic_handlers: Sequence[object]) -> None:
        pass  # the same handlers come again, by name, through add_registered_method_handlers

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        for method, handler in handlers.items():
            self.handlers[f"/{service}/{method}"] = handler


@dataclass
class LoopCallContext:
    """The part of aio.ServicerContext our handlers and interceptor use, for a call of the sync
    server run on the event loop. What must reach the wire (initial metadata, the abort's status)
    is recorded here and applied by the pool thread (`finish`), which owns the sync context."""

    metadata: tuple
    deadline: float | None  # time.monotonic()
    initial_metadata: tuple | None = None
    status: tuple[grpc.StatusCode, str] | None = None
    trailing_metadata: tuple = field(default_factory=tuple)

    def invocation_metadata(self) -> tuple:
        return self.metadata

    def time_remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    async def send_initial_metadata(self, metadata: tuple) -> None:
        self.initial_metadata = metadata

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: tuple = ()) -> None:
        self.status = (code, details)
        self.trailing_metadata = tuple(trailing_metadata)
        raise aio.AbortError()

    def code(self) -> grpc.StatusCode | None:
        return None if self.status is None else self.status[0]

    def finish(self, context: grpc.ServicerContext) -> None:
        """Send what the handler set on the sync context; abort it with the recorded status, if any."""
        if self.initial_metadata:
            context.send_initial_metadata(self.initial_metadata)
        if self.status is not None:
            if self.trailing_metadata:
                context.set_trailing_metadata(self.trailing_metadata)
            context.abort(*self.status)


def bridged(behavior: Behavior, loop: asyncio.AbstractEventLoop) -> Callable[[Any, grpc.ServicerContext], Any]:
    """A sync unary handler that runs the aio `behavior` on `loop` and waits for its answer."""

    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        remaining = context.time_remaining()
        call = LoopCallContext(tuple(context.invocation_metadata() or ()),
                               None if remaining > NO_DEADLINE_SECONDS else time.monotonic() + remaining)
        future = asyncio.run_coroutine_threadsafe(behavior(request, call), loop)
        # When the call ends early (deadline, the client cancels) its task is cancelled, as
        # grpc.aio cancels its handler: the batcher drops the text. After an answer: a no-op.
        if not context.add_callback(future.cancel):
            future.cancel()  # the call has ended already
        try:
            response = future.result()
        except aio.AbortError:
            call.finish(context)
            raise AssertionError("unreachable: finish aborts") from None
        except concurrent.futures.CancelledError:
            # The call is over: nobody reads this status.
            context.abort(grpc.StatusCode.CANCELLED, "the call ended before its answer")
        call.finish(context)
        return response

    return handle


@dataclass
class LoopBackend:
    """The aio server's services, composed as `bind_server` does, on an event loop of their own."""

    config: ServerConfig
    running: RunningServer
    handlers: dict[str, grpc.RpcMethodHandler]  # the interceptor-wrapped aio handlers, by full method

    @classmethod
    async def build(cls, config: ServerConfig) -> "LoopBackend":
        services = await build_services(config)
        metrics, state, health, interceptor = services.metrics, services.state, services.health, services.interceptor
        collector = _HandlerCollector()
        sentiment_pb2_grpc.add_SentimentServiceServicer_to_server(services.sentiment, collector)
        health_pb2_grpc.add_HealthServicer_to_server(health, collector)
        handlers = {}
        for method, handler in collector.handlers.items():
            if handler.unary_unary is None:
                continue  # streams are not served (module docstring)

            async def continuation(details: object, handler: grpc.RpcMethodHandler = handler) -> grpc.RpcMethodHandler:
                return handler

            handlers[method] = await interceptor.intercept_service(continuation, _CallDetails(method))
        flusher = asyncio.ensure_future(metrics.buffer.flush_every())
        # RunningServer for its load_models and stop_metrics, which never touch the aio server.
        running = RunningServer(config, None, 0, None, health, state, metrics,  # type: ignore[arg-type]
                                flusher, None, services.streams)
        return cls(config, running, handlers)

    async def close(self) -> None:
        """Refuse new calls (UNAVAILABLE) and turn health NOT_SERVING."""
        self.running.state.draining = True
        await self.running.health.drain()

    async def stop(self) -> None:
        """Finish the models' queued work, stop their threads and flush the metrics once more."""
        if self.running.state.repository is not None:
            await self.running.state.repository.close()
        await self.running.stop_metrics()


class LoopThread:
    """One thread running an asyncio loop (uvloop or asyncio's, as `--event-loop` says) until stopped."""

    def __init__(self, event_loop: str) -> None:
        self._started = threading.Event()
        self._stopping: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=run, args=(self._main(), event_loop), name="event-loop", daemon=True)
        self._thread.start()
        self._started.wait()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._started.set()
        await self._stopping.wait()

    def call(self, coroutine: Awaitable[Any]) -> Any:
        """Run `coroutine` on the loop; block until it returns."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()  # type: ignore[arg-type]

    def stop(self) -> None:
        assert self.loop is not None and self._stopping is not None
        self.loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join()


def worker_config(address: str, event_loop: str) -> ServerConfig:
    """The config `rnn-sentiment serve` builds (flags over `RNN_SENTIMENT_*` over defaults), as
    one worker of `--workers N` gets it: one process, no /metrics endpoint of its own."""
    config = config_from(argparse.Namespace(address=address, event_loop=event_loop))
    config = replace(config, workers=1, metrics_address="")
    if config.tls_enabled or config.auth_enabled:
        raise ValueError("bench.sync_server serves plaintext without bearer tokens: unset the TLS and auth settings")
    config.validate()
    return config


def serve_one(address: str, threads: int, event_loop: str, child: bool) -> int:
    """Serve in this process until SIGTERM/SIGINT."""
    config = worker_config(address, event_loop)
    configure_logging(config.log_format, "WARNING" if child else config.log_level)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    loop_thread = LoopThread(config.event_loop)
    backend: LoopBackend = loop_thread.call(LoopBackend.build(config))
    assert loop_thread.loop is not None
    handlers = {
        method: grpc.unary_unary_rpc_method_handler(bridged(handler.unary_unary, loop_thread.loop),
                                                    request_deserializer=handler.request_deserializer,
                                                    response_serializer=handler.response_serializer)
        for method, handler in backend.handlers.items()
    }
    server = grpc.server(ThreadPoolExecutor(threads, thread_name_prefix="grpc-pool"),
                         handlers=[_ByMethod(handlers)],
                         options=grpc_server_options(config) + core_backlog_options(config.max_pending_rpcs))
    port = server.add_insecure_port(config.address)
    if child:
        # The parent polls this worker's health here: on the shared port it cannot choose the worker.
        print(f"{WORKER_PORT_LINE}{server.add_insecure_port('127.0.0.1:0')}", flush=True)
        _silence_stdout()  # the parent stops reading: a later print must neither block nor fail
    server.start()
    loading = asyncio.run_coroutine_threadsafe(backend.running.load_models(), loop_thread.loop)
    while not stop.is_set() and not loading.done():
        stop.wait(0.1)
    if loading.done() and not loading.cancelled() and loading.exception() is not None:
        log.error("could not load the models", exc_info=loading.exception())
        server.stop(0).wait()
        return 1
    if not stop.is_set() and not child:
        print(f"serving on port {port}", flush=True)
    stop.wait()
    loop_thread.call(backend.close())
    server.stop(config.grace_seconds).wait()
    if not loading.done():
        # The loading thread is still inside torch: finalizing the interpreter under it aborts the
        # process (as in app.py's serve).
        logging.shutdown()
        os._exit(0)
    loop_thread.call(backend.stop())
    loop_thread.stop()
    return 0


def _silence_stdout() -> None:
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


class _ByMethod(grpc.GenericRpcHandler):
    """Handlers by full method name (the sync server's generic-handler interface)."""

    def __init__(self, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self._handlers = handlers

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method)


def supervise(address: str, threads: int, event_loop: str, workers: int) -> int:
    """Start `workers` serving processes on `address`; print the serving line once all are SERVING."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    command = [sys.executable, "-m", "bench.sync_server", "--address", address, "--threads", str(threads),
               "--event-loop", event_loop, "--workers", "1", "--child"]
    children = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(workers)]
    try:
        private_ports = []
        for child in children:
            line = child.stdout.readline() if child.stdout else ""
            if not line.startswith(WORKER_PORT_LINE):
                print(f"error: a worker exited before binding (exit {child.wait()})", file=sys.stderr)
                return 1
            private_ports.append(int(line[len(WORKER_PORT_LINE):]))
            child.stdout.close()  # type: ignore[union-attr]
        if not _all_serving(private_ports, children, stop):
            return 0 if stop.is_set() else 1
        print(f"serving on port {address.rpartition(':')[2]}", flush=True)
        while not stop.is_set() and all(child.poll() is None for child in children):
            stop.wait(0.2)
        return 0 if stop.is_set() else 1
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            child.wait()


def _all_serving(ports: list[int], children: list[subprocess.Popen], stop: threading.Event) -> bool:
    """Poll each worker's health on its private port until all say SERVING (False: stopped or failed)."""
    deadline = time.monotonic() + WORKERS_READY_SECONDS
    waiting = list(ports)
    while waiting:
        if stop.is_set() or any(child.poll() is not None for child in children) or time.monotonic() > deadline:
            if not stop.is_set():
                print("error: a worker exited or never turned SERVING", file=sys.stderr)
            return False
        with grpc.insecure_channel(f"127.0.0.1:{waiting[0]}") as channel:
            try:
                status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1).status
            except grpc.RpcError:
                status = None
        if status == health_pb2.HealthCheckResponse.SERVING:
            waiting.pop(0)
        else:
            stop.wait(0.2)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sync_server", description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:0")
    parser.add_argument("--threads", type=int, required=True, help="the gRPC thread pool's size, per worker")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the port (needs a fixed port)")
    parser.add_argument("--event-loop", default="auto", choices=EVENT_LOOPS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # a worker of --workers W
    args = parser.parse_args(argv)
    if args.threads < 1 or args.workers < 1:
        parser.error("--threads and --workers must be at least 1")
    if args.workers > 1 and args.address.endswith(":0"):
        parser.error("--workers > 1 needs a fixed port: each process binds the same one")
    try:
        if args.workers > 1:
            return supervise(args.address, args.threads, args.event_loop, args.workers)
        return serve_one(args.address, args.threads, args.event_loop, args.child)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
