"""The calls both clients share: requests built and checked once, the same API in both clients."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from rnn_sentiment.client import AsyncSentimentClient, SentimentClient, SentimentError
from rnn_sentiment.client.calls import (
    Stubs, UnaryCall, health_call, list_models_call, model_info_call, predict_call, trace_call,
)
from rnn_sentiment.v1 import sentiment_pb2 as pb
from tests.support import free_port, stand_in_server

UNARY_METHODS = ("predict", "trace", "model_info", "list_models", "health")


def _trace(**overrides: Any) -> UnaryCall[Any]:
    arguments: dict[str, Any] = dict(
        model="", include_hidden_states=True, attributions=(), integrated_gradients_steps=0,
        all_layers=False, top_k_units=0, include_memory_profile=False,
    )
    return trace_call("a fine film", **{**arguments, **overrides})


@pytest.fixture
def stubs() -> Iterator[Stubs]:
    # A channel connects lazily: nothing listens on port 1 and nothing is sent.
    channel = grpc.insecure_channel("127.0.0.1:1")
    yield Stubs.on(channel)
    channel.close()


@pytest.mark.parametrize("name", UNARY_METHODS)
def test_both_clients_offer_each_call_with_one_signature_and_one_docstring(name: str) -> None:
    blocking, awaited = getattr(SentimentClient, name), getattr(AsyncSentimentClient, name)
    assert inspect.signature(blocking) == inspect.signature(awaited)
    assert blocking.__doc__ and blocking.__doc__ == awaited.__doc__
    assert not inspect.iscoroutinefunction(blocking) and inspect.iscoroutinefunction(awaited)


def test_every_call_names_a_method_its_stub_has(stubs: Stubs) -> None:
    calls = [predict_call("good", model=""), _trace(), model_info_call(""), list_models_call(), health_call("")]
    for call in calls:
        assert callable(call.bound_to(stubs)), call.method


def test_a_bare_string_is_one_text_not_a_list_of_characters() -> None:
    assert list(predict_call("good", model="m").request.texts) == ["good"]
    assert list(predict_call(["good", "bad"], model="m").request.texts) == ["good", "bad"]


def test_attribution_names_are_sent_as_the_contracts_enum_values() -> None:
    request = _trace(attributions=["integrated_gradients", "ATTRIBUTION_METHOD_PREFIX"]).request
    assert list(request.attributions) == [
        pb.ATTRIBUTION_METHOD_INTEGRATED_GRADIENTS, pb.ATTRIBUTION_METHOD_PREFIX,
    ]


def test_every_attribution_method_of_the_contract_can_be_asked_for_by_name() -> None:
    named = [name.removeprefix("ATTRIBUTION_METHOD_").lower() for name in pb.AttributionMethod.keys()]
    methods = [name for name in named if name != "unspecified"]
    assert list(_trace(attributions=methods).request.attributions) == [
        pb.AttributionMethod.Value("ATTRIBUTION_METHOD_" + name.upper()) for name in methods
    ]
    with pytest.raises(ValueError, match="invalid attribution 'unspecified'"):
        _trace(attributions=["unspecified"])


def test_an_unknown_attribution_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(ValueError, match="invalid attribution 'saliency'.*occlusion"):
        _trace(attributions=["saliency"])


def test_responses_become_typed_results() -> None:
    models = list_models_call().to_result(pb.ListModelsResponse(models=[pb.ModelInfo(name="a"), pb.ModelInfo(name="b")]))
    assert [m.name for m in models] == ["a", "b"]
    serving = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
    assert health_call("").to_result(serving) == "SERVING"


class DeadlineRecordingHealth(health_pb2_grpc.HealthServicer):
    """A stand-in health service that notes the deadline each Check arrived with."""

    def __init__(self) -> None:
        self.time_remaining: list[float | None] = []

    def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext,
    ) -> health_pb2.HealthCheckResponse:
        self.time_remaining.append(context.time_remaining())
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


@pytest.fixture
def deadline_server() -> Iterator[tuple[DeadlineRecordingHealth, str]]:
    service = DeadlineRecordingHealth()
    with stand_in_server(lambda server: health_pb2_grpc.add_HealthServicer_to_server(service, server),
                         threads=2) as target:
        yield service, target


def test_a_call_without_a_timeout_reaches_the_server_with_the_documented_10_s_deadline(
    deadline_server: tuple[DeadlineRecordingHealth, str],
) -> None:
    # docs/sdk.md: `timeout` defaults to 10.0 s, the deadline of every unary call of both clients.
    service, target = deadline_server
    with SentimentClient(target) as client:
        assert client.health() == "SERVING"

    async def awaited() -> str:
        async with AsyncSentimentClient(target) as client:
            return await client.health()

    assert asyncio.run(awaited()) == "SERVING"
    assert len(service.time_remaining) == 2
    for remaining in service.time_remaining:
        # Within half a second of 10 s: the time in flight on loopback is far less, and the deadline
        # travels as a grpc-timeout header whose units can round it up a little (10.1 s seen in CI);
        # 9 s or 11 s would be a different default.
        assert remaining is not None and 9.5 < remaining <= 10.5, service.time_remaining


def test_both_clients_are_opened_with_the_same_keyword_arguments_and_defaults() -> None:
    # docs/sdk.md documents one table of constructor arguments for both clients; everything after
    # the target is keyword-only, so a future reordering can never rebind a caller's argument.
    blocking = inspect.signature(SentimentClient.__init__).parameters
    awaited = inspect.signature(AsyncSentimentClient.__init__).parameters
    assert [(p.name, p.kind, p.default) for p in blocking.values()] == \
        [(p.name, p.kind, p.default) for p in awaited.values()]
    options = [p for name, p in blocking.items() if name not in ("self", "target")]
    assert options and all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in options)
    assert blocking["wait_for_ready"].default is False


@pytest.mark.parametrize("name", ["stream", "predict_stream", "predict_many", "wait_until_serving"])
def test_both_clients_take_the_same_arguments_and_defaults_for_streams_and_waits(name: str) -> None:
    # The asyncio client documents these as SentimentClient's (its texts may also be an async iterable).
    def shape(method: Any) -> list[tuple[str, Any, Any]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(method).parameters.values()]

    assert shape(getattr(SentimentClient, name)) == shape(getattr(AsyncSentimentClient, name))


@pytest.mark.parametrize("name", ["predict_many", "wait_until_serving"])
def test_the_asyncio_clients_help_is_the_blocking_clients(name: str) -> None:
    # help(AsyncSentimentClient.wait_until_serving) reads as SentimentClient's: one text, kept once.
    blocking = getattr(SentimentClient, name).__doc__
    assert blocking and getattr(AsyncSentimentClient, name).__doc__ == blocking


def _health_code(client_class: type, target: str, **options: Any) -> tuple[str, float]:
    """The SentimentError code of a health call, and how long the call took."""
    async def awaited() -> None:
        async with client_class(target, retry=False, **options) as client:
            await client.health()

    started = time.monotonic()
    with pytest.raises(SentimentError) as raised:
        if client_class is AsyncSentimentClient:
            asyncio.run(awaited())
        else:
            with client_class(target, retry=False, **options) as client:
                client.health()
    return raised.value.code, time.monotonic() - started


@pytest.mark.parametrize("client_class", [SentimentClient, AsyncSentimentClient])
def test_a_call_to_an_address_nobody_listens_on_fails_unavailable_at_once_unless_told_to_wait(
    client_class: type,
) -> None:
    # docs/sdk.md: wait_for_ready is off by default "so a wrong address or TLS setting fails fast".
    target = f"127.0.0.1:{free_port()}"
    code, seconds = _health_code(client_class, target, timeout=5.0)
    assert code == "UNAVAILABLE" and seconds < 4.0
    code, _ = _health_code(client_class, target, timeout=0.5, wait_for_ready=True)
    assert code == "DEADLINE_EXCEEDED"  # waited for a server up to the deadline


@pytest.fixture
def health_server() -> Iterator[tuple[health.HealthServicer, str]]:
    """grpc's own health service, NOT_SERVING until a test says otherwise."""
    service = health.HealthServicer()
    service.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    with stand_in_server(lambda server: health_pb2_grpc.add_HealthServicer_to_server(service, server)) as target:
        yield service, target


@pytest.mark.parametrize("client_class", [SentimentClient, AsyncSentimentClient])
def test_wait_until_serving_returns_once_health_says_serving_and_not_before(
    client_class: type, health_server: tuple[health.HealthServicer, str],
) -> None:
    service, target = health_server

    def wait(timeout: float) -> None:
        if client_class is SentimentClient:
            with SentimentClient(target) as client:
                client.wait_until_serving(timeout=timeout)
            return

        async def awaited() -> None:
            async with AsyncSentimentClient(target) as client:
                await client.wait_until_serving(timeout=timeout)

        asyncio.run(awaited())

    with pytest.raises(SentimentError) as raised:
        wait(0.5)  # NOT_SERVING throughout: waits out its deadline
    assert raised.value.code == "DEADLINE_EXCEEDED"
    timer = threading.Timer(0.3, service.set, ("", health_pb2.HealthCheckResponse.SERVING))
    timer.start()
    started = time.monotonic()
    wait(30)
    assert 0.2 < time.monotonic() - started < 20  # returned when SERVING came, not before
    timer.join()


@pytest.mark.parametrize("client_class", [SentimentClient, AsyncSentimentClient])
def test_wait_until_serving_waits_for_a_server_that_is_not_listening_yet(client_class: type) -> None:
    # Documented: it suits freshly started servers (wait_for_ready), so a refused connection is
    # not an answer; the server here starts listening half a second after the wait began. Retries
    # off: the wait alone must bridge the gap, not gRPC's retries of a refused call.
    target = f"127.0.0.1:{free_port()}"
    service = health.HealthServicer()
    service.set("", health_pb2.HealthCheckResponse.SERVING)
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(service, server)

    def listen() -> None:  # binding the port already accepts connections: bind it only now
        server.add_insecure_port(target)
        server.start()

    timer = threading.Timer(0.5, listen)

    async def awaited() -> None:
        async with AsyncSentimentClient(target, retry=False) as client:
            await client.wait_until_serving(timeout=30)

    timer.start()
    started = time.monotonic()
    try:
        if client_class is AsyncSentimentClient:
            asyncio.run(awaited())
        else:
            with SentimentClient(target, retry=False) as client:
                client.wait_until_serving(timeout=30)
        assert time.monotonic() - started >= 0.4  # returned once the server was up, not before
    finally:
        timer.join()
        server.stop(0)
