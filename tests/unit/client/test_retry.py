"""The SDK's default retry policy against a real gRPC server on loopback that fails on purpose.

A stand-in SentimentService (no torch, no model) answers a scripted status for its first calls
and OK after, and counts the calls it received: so the test sees what reached the server.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Iterator

import grpc
import pytest

from rnn_sentiment.client import AsyncSentimentClient, SentimentClient, SentimentError
from rnn_sentiment.client.channel import DEFAULT_RETRY_POLICY
from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from tests.support import stand_in_server


class ScriptedSentimentService(pb_grpc.SentimentServiceServicer):
    """Predict fails with `failures` codes in turn, then answers a fixed prediction."""

    def __init__(self) -> None:
        self.failures: list[grpc.StatusCode] = []
        self.calls = 0
        self._lock = threading.Lock()

    def Predict(self, request: pb.PredictRequest, context: grpc.ServicerContext) -> pb.PredictResponse:
        with self._lock:
            self.calls += 1
            failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            context.abort(failure, f"scripted {failure.name}")
        return pb.PredictResponse(
            predictions=[pb.Prediction(label="positive", score=0.9) for _ in request.texts], model="scripted",
        )


@pytest.fixture
def scripted() -> Iterator[tuple[ScriptedSentimentService, str]]:
    service = ScriptedSentimentService()
    with stand_in_server(lambda server: pb_grpc.add_SentimentServiceServicer_to_server(service, server)) as target:
        yield service, target


def test_a_call_succeeds_across_one_unavailable(scripted: tuple[ScriptedSentimentService, str]) -> None:
    service, target = scripted
    service.failures = [grpc.StatusCode.UNAVAILABLE]
    with SentimentClient(target, timeout=10) as client:
        assert client.predict("good").predictions[0].label == "positive"
    assert service.calls == 2


def test_the_async_client_retries_too(scripted: tuple[ScriptedSentimentService, str]) -> None:
    service, target = scripted
    service.failures = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]

    async def call() -> str:
        async with AsyncSentimentClient(target, timeout=10) as client:
            return (await client.predict("good")).predictions[0].label

    assert asyncio.run(call()) == "positive"
    assert service.calls == 3


def test_retries_give_up_after_max_attempts(scripted: tuple[ScriptedSentimentService, str]) -> None:
    service, target = scripted
    service.failures = [grpc.StatusCode.UNAVAILABLE] * 10
    with SentimentClient(target, timeout=10) as client:
        with pytest.raises(SentimentError) as failed:
            client.predict("good")
    assert failed.value.code == "UNAVAILABLE" and service.calls == DEFAULT_RETRY_POLICY.max_attempts == 5


def test_resource_exhausted_and_retry_off_are_not_retried(scripted: tuple[ScriptedSentimentService, str]) -> None:
    service, target = scripted
    service.failures = [grpc.StatusCode.RESOURCE_EXHAUSTED]
    with SentimentClient(target, timeout=10) as client:
        with pytest.raises(SentimentError) as overloaded:
            client.predict("good")
    assert overloaded.value.code == "RESOURCE_EXHAUSTED" and service.calls == 1
    service.failures = [grpc.StatusCode.UNAVAILABLE]
    with SentimentClient(target, timeout=10, retry=False) as client:
        with pytest.raises(SentimentError) as unavailable:
            client.predict("good")
    assert unavailable.value.code == "UNAVAILABLE" and service.calls == 2
