"""The calls both clients share: requests built and checked once, the same API in both clients."""

from __future__ import annotations

import asyncio
import inspect
from concurrent import futures
from typing import Any, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rnn_sentiment.client import AsyncSentimentClient, SentimentClient
from rnn_sentiment.client.calls import (
    Stubs, UnaryCall, health_call, list_models_call, model_info_call, predict_call, trace_call,
)
from rnn_sentiment.v1 import sentiment_pb2 as pb

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
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield service, f"127.0.0.1:{port}"
    server.stop(0)


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
