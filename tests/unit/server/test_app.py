"""The process lifecycle of server/app.py, in this process on loopback ports with a tiny untrained
model: binding (a free port reported, a taken one refused), health NOT_SERVING until the models
load, the drain (new calls UNAVAILABLE, background work abandoned, open streams ended UNAVAILABLE
after the grace period, the metrics endpoint and model threads released, what it refused
logged), `serve`'s exit codes, the "serving" line an operator reads, and the daemon thread the
models load on. The same behaviour through a real `rnn-sentiment serve` process and real signals
is in tests/integration/test_lifecycle.py and test_signals.py; this file holds it in seconds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, AsyncIterator, Coroutine, Iterator, TypeVar

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from rnn_sentiment.server import app
from rnn_sentiment.server.affinity import WORKER_CPU_ENV
from rnn_sentiment.server.app import (
    HEALTH_SERVICE_NAME,
    SERVICE_NAME,
    RunningServer,
    _in_daemon_thread,
    _metrics_fields,
    bind_server,
    serve,
    split_address,
)
from rnn_sentiment.server.config import ServerConfig
from rnn_sentiment.server.oip_servicer import SERVICE_NAME as OIP_SERVICE_NAME
from rnn_sentiment.server.repository import ModelRepository
from rnn_sentiment.server.supervisor import SUPERVISOR_METRICS_ENV
from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from tests.support import REPO_ROOT, write_untrained_checkpoint

T = TypeVar("T")
LIMIT_SECONDS = 20.0  # far above any scenario here: a hang fails the test instead of holding the run
MODEL = "tiny"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def run_limited(main: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(main, LIMIT_SECONDS))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_untrained_checkpoint(tmp_path_factory.mktemp("app-models") / MODEL, MODEL, "1")


@pytest.fixture(scope="module")
def broken_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint whose weights file is not safetensors: loading it fails."""
    directory = write_untrained_checkpoint(tmp_path_factory.mktemp("broken-models") / MODEL, MODEL, "1")
    weights = list(directory.glob("*.safetensors"))
    assert weights, "the checkpoint layout changed: corrupt its weights some other way"
    for path in weights:
        path.write_bytes(b"not a safetensors file")
    return directory


@pytest.fixture
def signal_dispositions() -> Iterator[None]:
    """`serve` ignores SIGTERM/SIGINT/SIGHUP at the OS level once it stops (server/lifecycle.py):
    give this test process its own dispositions back afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def config_for(models: Path, **overrides: Any) -> ServerConfig:
    """Free loopback ports for gRPC and /metrics, the torch backend on one thread, and no UNAVAILABLE
    window in the drain (it ends every test: only the tests about the window open one)."""
    options: dict[str, Any] = dict(address="127.0.0.1:0", metrics_address="127.0.0.1:0", model_dir=str(models),
                                   backend="torch", torch_threads=1, drain_seconds=0.0, grace_seconds=5.0)
    return ServerConfig(**{**options, **overrides})


@contextlib.asynccontextmanager
async def bound(config: ServerConfig) -> AsyncIterator[tuple[RunningServer, aio.Channel]]:
    """bind_server(config) and a channel to it; drained at the end unless the test drained it."""
    running = await bind_server(config)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield running, channel
    finally:
        if not running.state.draining:
            await running.drain()


async def health_of(channel: aio.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return (await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)).status


async def predict_code(channel: aio.Channel, text: str = "a good film") -> grpc.StatusCode:
    """The status a Predict call ends with."""
    try:
        await pb_grpc.SentimentServiceStub(channel).Predict(pb.PredictRequest(texts=[text]), timeout=10)
    except aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def metrics_text(port: int) -> str:
    """GET /metrics (from a thread: the endpoint answers on this event loop)."""
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            return response.read().decode()
    return await asyncio.to_thread(get)


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def retry_delay_seconds(error: aio.AioRpcError) -> float:
    """The RetryInfo delay in the error's google.rpc.Status details (0 without one)."""
    status = status_pb2.Status()
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status.ParseFromString(value)
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    return 0.0


def ready_gauge(running: RunningServer) -> float | None:
    return running.metrics.registry.get_sample_value("rnn_sentiment_ready")


def fields_of(caplog: pytest.LogCaptureFixture, message: str) -> dict[str, Any]:
    """The structured fields of the one log record with this message."""
    found = [r for r in caplog.records if r.getMessage() == message]
    assert len(found) == 1, [r.getMessage() for r in caplog.records]
    return dict(getattr(found[0], "fields", {}))


# --- addresses ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("address", "expected"), [
    ("127.0.0.1:50051", ("127.0.0.1", 50051)),
    ("0.0.0.0:0", ("0.0.0.0", 0)),
    ("[::1]:9464", ("::1", 9464)),
    ("[::]:0", ("::", 0)),
    ("localhost:8080", ("localhost", 8080)),
])
def test_split_address_reads_the_host_and_port_of_ipv4_ipv6_and_named_hosts(address: str,
                                                                             expected: tuple[str, int]) -> None:
    assert split_address(address) == expected


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:http", "[::1]:"])
def test_split_address_without_a_numeric_port_is_an_error(address: str) -> None:
    with pytest.raises(ValueError):
        split_address(address)


def test_the_metrics_address_logged_is_the_configured_host_with_the_bound_port(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SUPERVISOR_METRICS_ENV, raising=False)
    assert _metrics_fields(ServerConfig(metrics_address="[::1]:0"), 43210) == {"metrics_address": "::1:43210"}
    assert _metrics_fields(ServerConfig(metrics_address="127.0.0.1:0"), 9464) == {"metrics_address": "127.0.0.1:9464"}


def test_a_worker_without_a_metrics_port_points_at_its_supervisor_and_otherwise_says_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker of `--workers N` serves no /metrics: its "serving" line says where the sum is."""
    monkeypatch.setenv(SUPERVISOR_METRICS_ENV, "127.0.0.1:9464")
    assert _metrics_fields(ServerConfig(metrics_address=""), None) == {
        "metrics_address": "127.0.0.1:9464", "metrics_served_by": "supervisor"}
    monkeypatch.delenv(SUPERVISOR_METRICS_ENV)
    assert _metrics_fields(ServerConfig(metrics_address=""), None) == {"metrics_address": "off"}


# --- binding -----------------------------------------------------------------------------------

def test_bind_server_opens_free_ports_with_health_not_serving_and_every_call_unavailable(models: Path) -> None:
    """The port opens before the models load: probes see the process alive but not ready."""
    async def scenario() -> None:
        async with bound(config_for(models)) as (running, channel):
            assert running.port > 0 and running.metrics_port is not None and running.metrics_port > 0
            assert await health_of(channel, "") == NOT_SERVING
            assert await health_of(channel, SERVICE_NAME) == NOT_SERVING
            assert await predict_code(channel) == grpc.StatusCode.UNAVAILABLE
            assert re.search(r"^rnn_sentiment_ready 0\.0$", await metrics_text(running.metrics_port), re.M)

    run_limited(scenario())


def test_without_a_metrics_address_no_metrics_endpoint_is_opened(models: Path) -> None:
    async def scenario() -> None:
        async with bound(config_for(models, metrics_address="")) as (running, channel):
            assert running.metrics_port is None and running.metrics_endpoint is None
            assert await health_of(channel, "") == NOT_SERVING

    run_limited(scenario())


def test_a_port_already_taken_is_refused_with_an_error_naming_the_address(models: Path) -> None:
    """A second server on a taken port must fail at start, saying which address, not serve nothing."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"

        async def scenario() -> None:
            with pytest.raises(RuntimeError, match=re.escape(address)):
                await bind_server(config_for(models, address=address, metrics_address=""))

        run_limited(scenario())


def test_the_security_line_says_plaintext_no_tokens_and_reflection_on_by_default(
        models: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Operators read TLS and bearer-token status from this line: it must not claim more than is on."""
    async def scenario() -> None:
        async with bound(config_for(models, metrics_address="")):
            pass

    with caplog.at_level(logging.INFO, logger="rnn_sentiment.server"):
        run_limited(scenario())
    assert fields_of(caplog, "gRPC security") == {"tls": "off", "bearer_tokens": "off", "reflection": True}


async def reflected_services(channel: aio.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    async for response in call:
        return {service.name for service in response.list_services_response.service}
    return set()


def test_reflection_lists_every_service_when_on_and_is_unimplemented_when_off(models: Path) -> None:
    """grpcurl-style tools find our service, the Open Inference Protocol and health without the .proto."""
    async def scenario() -> None:
        async with bound(config_for(models, metrics_address="")) as (_, channel):
            assert await reflected_services(channel) == {
                SERVICE_NAME, OIP_SERVICE_NAME, HEALTH_SERVICE_NAME, "grpc.reflection.v1alpha.ServerReflection"}
        async with bound(config_for(models, metrics_address="", reflection=False)) as (_, channel):
            with pytest.raises(aio.AioRpcError) as off:
                await reflected_services(channel)
            assert off.value.code() == grpc.StatusCode.UNIMPLEMENTED

    run_limited(scenario())


# --- loading and admission ---------------------------------------------------------------------

def test_loading_the_models_turns_every_health_name_serving_and_ready_to_one(models: Path) -> None:
    """Probes and balancers (health) and alerts (rnn_sentiment_ready) see readiness only once the
    models are loaded and warm."""
    async def scenario() -> None:
        async with bound(config_for(models)) as (running, channel):
            assert ready_gauge(running) == 0
            repository = await running.load_models()
            assert repository.default_name == MODEL
            assert await health_of(channel, "") == SERVING
            assert await health_of(channel, SERVICE_NAME) == SERVING
            assert ready_gauge(running) == 1
            assert await predict_code(channel) == grpc.StatusCode.OK

    run_limited(scenario())


async def an_answered_stream(channel: aio.Channel) -> Any:
    """A StreamSentiment stream that has sent one chunk and read its answer: open on the server."""
    stream = pb_grpc.SentimentServiceStub(channel).StreamSentiment(timeout=LIMIT_SECONDS)
    await stream.write(pb.StreamSentimentRequest(text="a good"))
    await stream.read()
    return stream


def test_max_concurrent_rpcs_refuses_the_call_beyond_the_limit_with_resource_exhausted(models: Path) -> None:
    """An open StreamSentiment stream holds one of --max-concurrent-rpcs for its lifetime."""
    async def scenario() -> None:
        async with bound(config_for(models, metrics_address="", max_concurrent_rpcs=1)) as (running, channel):
            await running.load_models()
            stream = await an_answered_stream(channel)
            assert await predict_code(channel) == grpc.StatusCode.RESOURCE_EXHAUSTED
            await stream.done_writing()
            while await stream.read() is not aio.EOF:
                pass
            assert await predict_code(channel) == grpc.StatusCode.OK

    run_limited(scenario())


# --- the drain ---------------------------------------------------------------------------------

def model_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"model-{MODEL}"]


def test_the_drain_refuses_new_calls_abandons_background_work_releases_everything_and_logs_its_refusals(
        models: Path, caplog: pytest.LogCaptureFixture) -> None:
    """What SIGTERM sets off (RunningServer.drain): new calls UNAVAILABLE at once (retried elsewhere),
    a reload in progress cancelled rather than awaited, ready 0, the gRPC and /metrics ports closed,
    the model threads ended and no task left on the loop (the process can exit), and the "drained"
    line counting only the drain's own refusals."""
    async def scenario() -> float:
        tasks_before = asyncio.all_tasks()
        async with bound(config_for(models, drain_seconds=5.0)) as (running, channel):
            assert await predict_code(channel) == grpc.StatusCode.UNAVAILABLE  # before loading: not the drain's
            await running.load_models()
            assert await predict_code(channel) == grpc.StatusCode.OK
            assert model_threads(), "the model thread should be running while serving"
            reloading = asyncio.ensure_future(asyncio.sleep(3_600))  # a reload that would never end
            started = time.monotonic()
            draining = asyncio.ensure_future(running.drain(abandon=(reloading,)))
            await asyncio.sleep(0)  # the drain has begun
            assert await predict_code(channel) == grpc.StatusCode.UNAVAILABLE
            await draining
            took = time.monotonic() - started
            assert reloading.cancelled()
            assert ready_gauge(running) == 0
            assert running.metrics_port is not None and refuses_connections(running.metrics_port)
            assert refuses_connections(running.port)
        assert not model_threads(), "the drain should release the model threads"
        await asyncio.sleep(0)
        assert asyncio.all_tasks() - tasks_before == set(), "the drain should leave nothing running"
        return took

    with caplog.at_level(logging.INFO, logger="rnn_sentiment.server"):
        took = run_limited(scenario())
    drained = fields_of(caplog, "drained")
    assert drained["refused"] == 1  # the call during the drain, not the one before loading
    assert 0 <= drained["parked"] <= drained["refused"]
    assert 0 <= drained["seconds"] <= took + 0.01


def test_an_open_stream_is_ended_unavailable_once_the_grace_period_is_over_telling_the_client_to_reopen_it(
        models: Path) -> None:
    """docs/streaming.md ("Drain"): after the grace period an open stream ends UNAVAILABLE with RetryInfo,
    "reopen it on another replica and resend the text so far" (the SDK replays the text), not the bare
    UNAVAILABLE of gRPC cancelling every call at the shutdown."""
    async def scenario() -> None:
        async with bound(config_for(models, metrics_address="", grace_seconds=0.5)) as (running, channel):
            await running.load_models()
            stream = await an_answered_stream(channel)
            await running.drain()
            with pytest.raises(aio.AioRpcError) as ended:
                await stream.read()
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "reopen it on another replica and resend the text so far" in (ended.value.details() or "")
            assert retry_delay_seconds(ended.value) > 0

    run_limited(scenario())


def test_a_call_parked_at_the_end_of_the_drain_is_answered_by_the_server_within_a_short_grace_period(
        models: Path) -> None:
    """Drain steps 3 and 4: a call parked just before the port closes is released as soon as the
    shutdown has begun, so even a grace period under a second does not let gRPC cancel it: its
    caller gets the drain's own UNAVAILABLE with RetryInfo. (--drain-seconds 0: parking at once.)"""
    async def scenario() -> None:
        config = config_for(models, metrics_address="", drain_seconds=0.0, grace_seconds=0.6)
        async with bound(config) as (running, channel):
            await running.load_models()
            draining = asyncio.ensure_future(running.drain())
            await asyncio.sleep(0)  # the drain has begun, and with no window, parks refusals
            with pytest.raises(aio.AioRpcError) as refused:
                await pb_grpc.SentimentServiceStub(channel).Predict(pb.PredictRequest(texts=["good"]), timeout=10)
            await draining
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "the server is not serving" in (refused.value.details() or "")
            assert retry_delay_seconds(refused.value) > 0

    run_limited(scenario())


async def refuse_every(running: RunningServer, seconds: float, count: int) -> None:
    """A caller refused `count` times, `seconds` apart (the state's own refusal path)."""
    for _ in range(count):
        await running.state.before_refusal(None)
        await asyncio.sleep(seconds)


def test_the_unavailable_window_lasts_until_no_call_has_come_for_the_quiet_time(models: Path) -> None:
    """Drain step 2: while callers keep calling they keep being told UNAVAILABLE; the port closes only
    once they have stopped for the quiet time (docs/reliability.md, "Drain.")."""
    async def scenario() -> None:
        async with bound(config_for(models, metrics_address="")) as (running, _):
            # Polled every quiet / QUIET_TURNS: it closes within a few tenths of a second, far from at_most.
            quiet, at_most = 0.15, 3.0
            caller = asyncio.ensure_future(refuse_every(running, quiet / 3, 6))
            started = time.monotonic()
            await running._wait_until_quiet(quiet, at_most)
            ended = time.monotonic()
            assert caller.done() and running.state.refused == 6
            assert ended - running.state.last_refused >= quiet
            assert ended - started < at_most, "it should end on the quiet time, not at the deadline"

    run_limited(scenario())


def test_the_quiet_time_counts_event_loop_turns_so_a_starved_loop_does_not_end_it_early(models: Path) -> None:
    """After the loop was blocked longer than the quiet time, a call gRPC already received reaches its
    handler a few turns later: the window must still be open for it."""
    async def scenario() -> None:
        async with bound(config_for(models, metrics_address="")) as (running, _):
            quiet = 0.1

            async def starve_then_call() -> None:
                await asyncio.sleep(0)
                time.sleep(2 * quiet)  # the loop is blocked: nothing is handled meanwhile
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                await running.state.before_refusal(None)

            caller = asyncio.ensure_future(starve_then_call())
            await running._wait_until_quiet(quiet, 10.0)
            assert caller.done() and running.state.refused == 1
            assert time.monotonic() - running.state.last_refused >= quiet

    run_limited(scenario())


@pytest.mark.parametrize("refused_on_turn", [None, 3], ids=["no call", "a call on turn 3"])
def test_with_no_quiet_time_the_window_closes_quiet_turns_loop_turns_after_the_last_call(
        models: Path, refused_on_turn: int | None) -> None:
    """The turns alone, turn by turn: a coroutine that yields once a turn counts them beside the wait
    (with a zero quiet time each of the wait's sleeps is exactly one turn too)."""
    async def scenario() -> int:
        async with bound(config_for(models, metrics_address="")) as (running, _):
            turns, done = 0, False

            async def count_turns() -> None:
                nonlocal turns
                while not done:
                    await asyncio.sleep(0)
                    turns += 1
                    if turns == refused_on_turn:
                        await running.state.before_refusal(None)

            counter = asyncio.ensure_future(count_turns())
            await asyncio.sleep(0)
            await running._wait_until_quiet(0.0, 10.0)
            closed_on, done = turns, True
            await counter
            return closed_on

    assert run_limited(scenario()) == (refused_on_turn or 0) + app.QUIET_TURNS


def test_the_unavailable_window_never_outlasts_drain_seconds(models: Path) -> None:
    """--drain-seconds bounds the window even while callers never stop (an operator's stop timeout
    is sized from it)."""
    async def scenario() -> None:
        async with bound(config_for(models, metrics_address="")) as (running, _):
            caller = asyncio.ensure_future(refuse_every(running, 0.01, 10_000))  # never quiet
            started = time.monotonic()
            await running._wait_until_quiet(30.0, 0.2)
            # Sleeping in steps of quiet / QUIET_TURNS (6 s here) would overshoot the deadline by seconds.
            assert time.monotonic() - started < 3.0
            caller.cancel()

    run_limited(scenario())


def test_the_drain_quiet_times_are_the_documented_ones() -> None:
    """docs/reliability.md ("Drain.") and docs/configuration.md tell operators these numbers."""
    reliability = (REPO_ROOT / "docs" / "reliability.md").read_text()
    configuration = (REPO_ROOT / "docs" / "configuration.md").read_text()
    window = re.search(r"ending early once no call has come for ([\d.]+) s", reliability)
    parking = re.search(r"parked\* \(held, unanswered\) until none has come for ([\d.]+) s \(at most ([\d.]+) s\)",
                        reliability)
    assert window and parking
    assert float(window.group(1)) == app.DRAIN_QUIET_SECONDS
    assert (float(parking.group(1)), float(parking.group(2))) == (app.PARK_QUIET_SECONDS, app.PARK_SECONDS)
    assert f"ends early once no call has come for {app.DRAIN_QUIET_SECONDS:g} s" in configuration


# --- serve -------------------------------------------------------------------------------------

class ProcessExit(BaseException):
    """Raised by the stand-in for os._exit: the real one would end this test process."""


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    codes: list[int] = []

    def record(code: int) -> None:
        codes.append(code)
        raise ProcessExit(code)

    monkeypatch.setattr(app.os, "_exit", record)
    return codes


async def until_health(port: int, status: int) -> None:
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            with contextlib.suppress(aio.AioRpcError):
                response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5, wait_for_ready=True)
                if response.status == status:
                    return
            await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.usefixtures("signal_dispositions")
def test_serve_exits_1_when_the_models_fail_to_load_and_closes_its_ports(
        broken_models: Path, exits: list[int], caplog: pytest.LogCaptureFixture) -> None:
    """A broken checkpoint: an ERROR line and exit code 1 (the orchestrator restarts or alerts)."""
    config = config_for(broken_models, address=f"127.0.0.1:{free_port()}", metrics_address=f"127.0.0.1:{free_port()}")
    with caplog.at_level(logging.INFO, logger="rnn_sentiment.server"):
        assert run_limited(serve(config)) == 1
    assert exits == []
    assert [r.levelname for r in caplog.records if r.getMessage() == "could not load the models; exiting"] == ["ERROR"]
    assert refuses_connections(split_address(config.address)[1])
    assert refuses_connections(split_address(config.metrics_address)[1])


@pytest.mark.usefixtures("signal_dispositions")
def test_serve_logs_where_it_serves_and_exits_0_after_sigterm(
        models: Path, exits: list[int], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The "serving" line operators read (addresses, models, CPU, event loop), then a drain on SIGTERM
    and exit code 0, returned (not os._exit: the models loaded, nothing is left running)."""
    monkeypatch.delenv(SUPERVISOR_METRICS_ENV, raising=False)
    monkeypatch.delenv(WORKER_CPU_ENV, raising=False)
    port, metrics_port = free_port(), free_port()
    config = config_for(models, address=f"127.0.0.1:{port}", metrics_address=f"127.0.0.1:{metrics_port}")

    async def scenario() -> int:
        serving = asyncio.ensure_future(serve(config))
        await until_health(port, SERVING)
        os.kill(os.getpid(), signal.SIGTERM)
        return await serving

    with caplog.at_level(logging.INFO, logger="rnn_sentiment.server"):
        assert run_limited(scenario()) == 0
    assert exits == []
    fields = fields_of(caplog, "serving")
    assert fields["grpc_address"] == f"127.0.0.1:{port}"
    assert fields["metrics_address"] == f"127.0.0.1:{metrics_port}"
    assert (fields["models"], fields["default_model"]) == (f"{MODEL}@1", MODEL)
    assert (fields["cpu"], fields["event_loop"]) == ("any", "asyncio")
    assert "drained" in [r.getMessage() for r in caplog.records]


@pytest.mark.usefixtures("signal_dispositions")
def test_sigterm_while_the_models_load_exits_0_at_once_without_waiting_for_the_loading_thread(
        models: Path, exits: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """The loading thread cannot be stopped inside torch: the process leaves it behind (os._exit)."""
    release = threading.Event()
    real_load = ModelRepository.load

    def held_load(*args: Any) -> ModelRepository:  # a load that lasts until the test ends it
        release.wait(LIMIT_SECONDS)
        return real_load(*args)

    monkeypatch.setattr(ModelRepository, "load", held_load)
    port = free_port()
    config = config_for(models, address=f"127.0.0.1:{port}", metrics_address="")

    async def scenario() -> None:
        serving = asyncio.ensure_future(serve(config))
        await until_health(port, NOT_SERVING)
        os.kill(os.getpid(), signal.SIGTERM)
        await serving

    try:
        with pytest.raises(ProcessExit):
            run_limited(scenario())
    finally:
        release.set()
    assert exits == [0]


def test_serve_watches_the_model_directory_when_polling_is_on(models: Path, tmp_path: Path,
                                                             signal_dispositions: None) -> None:
    """--model-poll-seconds: a new checkpoint version on disk is served without a signal."""
    write_untrained_checkpoint(tmp_path / MODEL, MODEL, "1")
    port = free_port()
    config = config_for(tmp_path, address=f"127.0.0.1:{port}", metrics_address="", model_poll_seconds=0.05)

    async def scenario() -> int:
        serving = asyncio.ensure_future(serve(config))
        await until_health(port, SERVING)
        await asyncio.to_thread(write_untrained_checkpoint, tmp_path / MODEL, MODEL, "2", "gru", 1)
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SentimentServiceStub(channel)
            while (await stub.Predict(pb.PredictRequest(texts=["good"]), timeout=10)).model_version != "2":
                await asyncio.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)
        return await serving

    assert run_limited(scenario()) == 0


# --- the loading thread ------------------------------------------------------------------------

def test_in_daemon_thread_returns_the_result_and_raises_the_error_of_the_function() -> None:
    """A checkpoint that fails to load must reach serve as its error (exit 1), not hang it."""
    def fail() -> None:
        raise KeyError("missing")

    async def scenario() -> None:
        assert await _in_daemon_thread(pow, 2, 10) == 1024
        with pytest.raises(KeyError, match="missing"):
            await _in_daemon_thread(fail)

    run_limited(scenario())


def test_an_abandoned_call_runs_on_a_daemon_thread_and_ends_quietly_after_its_loop_closed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM while models load: the process must be able to exit without joining the thread, and
    the thread's late result must go nowhere without an error."""
    release, finished = threading.Event(), threading.Event()
    unhandled: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: unhandled.append(args.exc_value))

    def held_work() -> str:
        release.wait(LIMIT_SECONDS)
        finished.set()
        return "late"

    async def abandon() -> threading.Thread:
        call = asyncio.ensure_future(_in_daemon_thread(held_work))
        await asyncio.sleep(0)
        (thread,) = [t for t in threading.enumerate() if t.name == "held_work"]
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        return thread

    thread = run_limited(abandon())
    assert thread.daemon
    release.set()
    thread.join(LIMIT_SECONDS)
    assert finished.is_set() and unhandled == []


def test_a_result_that_comes_after_its_caller_cancelled_is_dropped_without_an_error() -> None:
    """SIGTERM while loading abandons the load; its late result must not raise on the event loop."""
    release = threading.Event()
    errors: list[dict] = []

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
        call = asyncio.ensure_future(_in_daemon_thread(release.wait, LIMIT_SECONDS))
        await asyncio.sleep(0)
        call.cancel()
        release.set()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        await asyncio.sleep(0.1)  # the thread's settle callback runs on this loop

    run_limited(scenario())
    assert errors == []
