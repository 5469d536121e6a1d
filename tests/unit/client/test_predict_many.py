"""predict_many against a real gRPC server on loopback that records what it receives.

A stand-in SentimentService (no torch) reports a small max_texts_per_request, answers each text
with a label naming it, and counts calls and concurrency: so the test sees the chunks sent.
"""

from __future__ import annotations

import asyncio
import threading
from typing import AsyncIterator, Iterator

import grpc
import pytest

from rnn_sentiment.client import AsyncSentimentClient, SentimentClient, SentimentError
from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from tests.support import stand_in_server

LIMIT = 7


class RecordingSentimentService(pb_grpc.SentimentServiceServicer):
    def __init__(self) -> None:
        self.chunk_sizes: list[int] = []
        self.info_calls = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.refuse_text = ""
        self._lock = threading.Lock()

    def GetModelInfo(self, request: pb.GetModelInfoRequest, context: grpc.ServicerContext) -> pb.ModelInfo:
        with self._lock:
            self.info_calls += 1
        return pb.ModelInfo(name="recorded", max_texts_per_request=LIMIT)

    def Predict(self, request: pb.PredictRequest, context: grpc.ServicerContext) -> pb.PredictResponse:
        with self._lock:
            self.chunk_sizes.append(len(request.texts))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if len(request.texts) > LIMIT:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "too many texts")
            if self.refuse_text in request.texts:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "refused")
            return pb.PredictResponse(predictions=[pb.Prediction(label=t) for t in request.texts], model="recorded")
        finally:
            with self._lock:
                self.in_flight -= 1


@pytest.fixture
def recorded() -> Iterator[tuple[RecordingSentimentService, str]]:
    service = RecordingSentimentService()
    with stand_in_server(lambda server: pb_grpc.add_SentimentServiceServicer_to_server(service, server),
                         threads=8) as target:
        yield service, target


TEXTS = [f"text {i}" for i in range(100)]


def test_predictions_come_back_in_order_in_chunks_under_the_servers_limit(recorded) -> None:
    service, target = recorded
    with SentimentClient(target) as client:
        labels = [p.label for p in client.predict_many(iter(TEXTS), in_flight=3)]
        again = [p.label for p in client.predict_many(TEXTS[:10])]
    assert labels == TEXTS and again == TEXTS[:10]
    assert sum(service.chunk_sizes) == 110 and max(service.chunk_sizes) == LIMIT
    assert service.info_calls == 1  # the limit is read once per model
    assert service.most_in_flight <= 3


def test_batch_size_is_capped_by_the_limit(recorded) -> None:
    service, target = recorded
    with SentimentClient(target) as client:
        assert len(list(client.predict_many(TEXTS[:9], batch_size=3))) == 9
        assert service.chunk_sizes == [3, 3, 3]
        assert len(list(client.predict_many(TEXTS[:9], batch_size=1000))) == 9
    # The two chunks are in flight together: the server may see either first.
    assert sorted(service.chunk_sizes[3:]) == sorted([LIMIT, 2])


def test_bad_arguments_and_refused_texts_raise(recorded) -> None:
    service, target = recorded
    service.refuse_text = "text 50"
    with SentimentClient(target) as client:
        with pytest.raises(ValueError, match="batch_size"):
            list(client.predict_many(TEXTS, batch_size=0))
        with pytest.raises(TypeError, match="texts"):
            list(client.predict_many([b"bytes"]))  # type: ignore[list-item]
        seen = []
        with pytest.raises(SentimentError) as refused:
            for prediction in client.predict_many(TEXTS):
                seen.append(prediction.label)
    assert refused.value.code == "INVALID_ARGUMENT"
    assert seen == TEXTS[:49]  # every chunk before the refused one was delivered, in order


def test_the_asyncio_client_does_the_same(recorded) -> None:
    service, target = recorded

    async def texts() -> AsyncIterator[str]:
        for text in TEXTS:
            yield text

    async def run() -> tuple[list[str], list[str]]:
        async with AsyncSentimentClient(target) as client:
            from_async = [p.label async for p in client.predict_many(texts(), in_flight=2)]
            from_list = [p.label async for p in client.predict_many(TEXTS[:20], batch_size=5)]
            return from_async, from_list

    from_async, from_list = asyncio.run(run())
    assert from_async == TEXTS and from_list == TEXTS[:20]
    assert service.info_calls == 1 and max(service.chunk_sizes) == LIMIT and service.chunk_sizes[-4:] == [5] * 4
    assert service.most_in_flight <= 2
