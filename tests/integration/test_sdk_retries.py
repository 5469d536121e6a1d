"""The SDK's opt-in retry of RESOURCE_EXHAUSTED, waiting the server's RetryInfo delay, and the
asyncio client's wait_until_serving and several-target channels against a real server.

The overload test uses a stand-in servicer that refuses with the server's own error
(server/errors.py `resource_exhausted`, RetryInfo and its `grpc-retry-pushback-ms` trailer), so
the refusal on the wire is exactly the real one without having to overload a model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from typing import Iterator

import grpc
import pytest

from rnn_sentiment.client import (
    OVERLOAD_RETRY_POLICY, AsyncSentimentClient, SentimentClient, SentimentError,
)
from rnn_sentiment.server.errors import resource_exhausted
from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from tests.support import ServerProcess, stand_in_server


class OverloadedOnce(pb_grpc.SentimentServiceServicer):
    """Predict refuses its first call as an overloaded server does, then answers."""

    def __init__(self) -> None:
        self.call_times: list[float] = []
        self._lock = threading.Lock()

    def Predict(self, request: pb.PredictRequest, context: grpc.ServicerContext) -> pb.PredictResponse:
        with self._lock:
            self.call_times.append(time.monotonic())
            first = len(self.call_times) == 1
        if first:
            error = resource_exhausted("the queue is full")
            context.abort_with_status(_Status(error.code, error.message, error.trailing_metadata()))
        return pb.PredictResponse(predictions=[pb.Prediction(label="positive") for _ in request.texts])


class _Status(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: tuple) -> None:
        self.code, self.details, self.trailing_metadata = code, details, trailing_metadata


@pytest.fixture
def overloaded() -> Iterator[tuple[OverloadedOnce, str]]:
    service = OverloadedOnce()
    with stand_in_server(lambda server: pb_grpc.add_SentimentServiceServicer_to_server(service, server),
                         threads=2) as target:
        yield service, target


def test_resource_exhausted_reaches_the_caller_by_default(overloaded: tuple[OverloadedOnce, str]) -> None:
    service, target = overloaded
    with SentimentClient(target) as client:
        with pytest.raises(SentimentError) as refused:
            client.predict("good")
    assert refused.value.code == "RESOURCE_EXHAUSTED" and len(service.call_times) == 1


def test_the_overload_policy_retries_after_the_servers_delay(overloaded: tuple[OverloadedOnce, str]) -> None:
    service, target = overloaded
    # The policy's own backoff made negligible: a retry waiting 0.1 s can only be the server's delay.
    policy = dataclasses.replace(OVERLOAD_RETRY_POLICY, initial_backoff_seconds=0.001, max_backoff_seconds=0.001)
    with SentimentClient(target, retry=policy) as client:
        assert client.predict("good").predictions[0].label == "positive"
    first, second = service.call_times
    assert second - first >= 0.1  # resource_exhausted's RetryInfo delay, honoured through gRPC's pushback


def test_the_asyncio_client_waits_until_serving_and_spreads_over_several_targets(server: ServerProcess) -> None:
    second = ServerProcess().start(wait=False)
    try:
        async def run() -> list[str]:
            async with AsyncSentimentClient(second.target, timeout=30) as alone:
                await alone.wait_until_serving(timeout=120)  # the fresh replica, through Watch
            async with AsyncSentimentClient([server.target, second.target], timeout=30) as client:
                return [p.label async for p in client.predict_many(["a warm , funny film"] * 20, batch_size=1)]

        before = _predict_calls(server)
        assert asyncio.run(run()) == ["positive"] * 20
        # Round robin over both READY replicas: each served some of the 20 calls.
        assert _predict_calls(second) > 0 and _predict_calls(server) > before, second.log()
    finally:
        second.stop()


def _predict_calls(replica: ServerProcess) -> float:
    """The replica's grpc_server_handled_total for OK Predict calls, from its metrics endpoint."""
    import urllib.request

    with urllib.request.urlopen(replica.metrics_url, timeout=10) as response:
        lines = response.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines
               if line.startswith("grpc_server_handled_total{") and 'grpc_method="Predict"' in line
               and 'grpc_code="OK"' in line and "SentimentService" in line)
