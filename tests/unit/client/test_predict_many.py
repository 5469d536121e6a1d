"""predict_many against a real gRPC server on loopback that records what it receives.

A stand-in SentimentService (no torch) reports a small max_texts_per_request, answers each text
with a label naming it, and counts calls and concurrency: so the test sees the chunks sent.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import AsyncIterator, Callable, Iterator

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
        self.reported_limit = LIMIT  # 0: a server too old to report its limit
        self.answer_after = 0.0  # seconds each Predict holds its call (less if its caller goes), so calls overlap
        self.held = 0  # calls held answer_after seconds
        self.cancelled = 0  # held calls whose caller had gone by the time they were answered
        self.answer_at_once = ""  # a call holding this text is not held...
        self.at_once_waits_for_held = 0  # ...but waits (10 s at most) until this many calls are held
        self._lock = threading.Lock()
        self._held_changed = threading.Condition(self._lock)

    def GetModelInfo(self, request: pb.GetModelInfoRequest, context: grpc.ServicerContext) -> pb.ModelInfo:
        with self._lock:
            self.info_calls += 1
        return pb.ModelInfo(name="recorded", max_texts_per_request=self.reported_limit)

    def Predict(self, request: pb.PredictRequest, context: grpc.ServicerContext) -> pb.PredictResponse:
        with self._lock:
            self.chunk_sizes.append(len(request.texts))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if len(request.texts) > (self.reported_limit or 64):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "too many texts")
            if self.answer_after and self.answer_at_once not in request.texts:
                with self._lock:
                    self.held += 1
                    self._held_changed.notify_all()
                # Held until answer_after, or until the call ends first (its caller cancelled it):
                # however late a cancellation arrives within the hold, it is counted.
                ended = threading.Event()
                if not context.add_callback(ended.set):
                    ended.set()  # the call had ended already
                ended.wait(self.answer_after)
                if not context.is_active():
                    with self._lock:
                        self.cancelled += 1
            elif self.at_once_waits_for_held and self.answer_at_once in request.texts:
                with self._held_changed:
                    self._held_changed.wait_for(lambda: self.held >= self.at_once_waits_for_held, timeout=10)
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

    async def run() -> tuple[list[str], int, list[str]]:
        async with AsyncSentimentClient(target) as client:
            from_async = [p.label async for p in client.predict_many(texts(), in_flight=2)]
            most_in_flight = service.most_in_flight  # the next call keeps the default 4 going
            from_list = [p.label async for p in client.predict_many(TEXTS[:20], batch_size=5)]
            return from_async, most_in_flight, from_list

    from_async, most_in_flight, from_list = asyncio.run(run())
    assert from_async == TEXTS and from_list == TEXTS[:20]
    assert service.info_calls == 1 and max(service.chunk_sizes) == LIMIT and service.chunk_sizes[-4:] == [5] * 4
    assert most_in_flight <= 2


def poll(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def labels_of(client_kind: str, target: str, texts: list[str], **options: object) -> list[str]:
    """predict_many's labels through the blocking or the asyncio client."""
    if client_kind == "blocking":
        with SentimentClient(target) as client:
            return [p.label for p in client.predict_many(texts, **options)]

    async def run() -> list[str]:
        async with AsyncSentimentClient(target) as client:
            return [p.label async for p in client.predict_many(texts, **options)]

    return asyncio.run(run())


@pytest.mark.parametrize("client_kind", ["blocking", "asyncio"])
@pytest.mark.parametrize("in_flight", [1, 3, None])
def test_exactly_in_flight_calls_overlap_and_4_by_default(recorded, client_kind: str, in_flight: int | None) -> None:
    """docs/sdk.md: "Keeps `in_flight` requests (default 4) going at once": with calls the server
    holds a moment, that many overlap, never more."""
    service, target = recorded
    service.answer_after = 0.05
    options = {} if in_flight is None else {"in_flight": in_flight}
    assert labels_of(client_kind, target, TEXTS[:70], **options) == TEXTS[:70]  # 10 calls of 7
    assert service.most_in_flight == (4 if in_flight is None else in_flight)


@pytest.mark.parametrize("client_kind", ["blocking", "asyncio"])
def test_one_text_per_call_and_one_call_at_a_time_are_allowed_zero_is_refused(recorded, client_kind: str) -> None:
    service, target = recorded
    assert labels_of(client_kind, target, TEXTS[:5], batch_size=1, in_flight=1) == TEXTS[:5]
    assert service.chunk_sizes == [1] * 5 and service.most_in_flight == 1
    for bad in ({"batch_size": 0}, {"in_flight": 0}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be at least 1, got 0"):
            labels_of(client_kind, target, TEXTS[:5], **bad)


@pytest.mark.parametrize("client_kind", ["blocking", "asyncio"])
def test_a_server_that_reports_no_limit_is_sent_64_texts_per_call(recorded, client_kind: str) -> None:
    """docs/sdk.md: a server too old to report max_texts_per_request is assumed to take 64."""
    service, target = recorded
    service.reported_limit = 0
    assert labels_of(client_kind, target, TEXTS, in_flight=1) == TEXTS
    assert service.chunk_sizes == [64, 36]


@pytest.mark.parametrize("client_kind", ["blocking", "asyncio"])
def test_a_caller_that_stops_early_cancels_the_calls_still_in_flight(recorded, client_kind: str) -> None:
    """docs/sdk.md: "stopping early cancels the rest": the server sees the calls started ahead
    cancelled, not answered to no one."""
    service, target = recorded
    service.answer_after = 30.0  # the calls behind the first: answered only if never cancelled
    service.answer_at_once = TEXTS[0]
    # The first call is answered once the 3 started behind it are in the server, so the caller
    # stops while they are held there (on a loaded machine they could otherwise still be on
    # their way, and be cancelled before the server saw them).
    service.at_once_waits_for_held = 3

    def all_held_calls_seen_cancelled() -> bool:
        return service.held == 3 and service.cancelled == service.held

    if client_kind == "blocking":
        with SentimentClient(target) as client:  # open while the server looks: closing it cancels too
            predictions = client.predict_many(TEXTS, in_flight=4)
            assert next(predictions).label == TEXTS[0]
            predictions.close()  # type: ignore[attr-defined]
            seen = poll(all_held_calls_seen_cancelled)
    else:
        async def first_then_stop() -> bool:
            async with AsyncSentimentClient(target) as client:
                predictions = client.predict_many(TEXTS, in_flight=4)
                assert (await predictions.__anext__()).label == TEXTS[0]
                await predictions.aclose()  # type: ignore[attr-defined]
                return await asyncio.to_thread(poll, all_held_calls_seen_cancelled)

        seen = asyncio.run(first_then_stop())
    # The 3 calls started behind the first reached the server, and each was cancelled there.
    assert seen, (service.held, service.cancelled)
