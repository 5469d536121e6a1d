"""server/stream_predict.py: answers in request order, several in flight, never more than the bound."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import grpc

from rnn_sentiment.server.errors import FieldViolation, invalid_argument
from rnn_sentiment.server.instrumentation import UNPARSABLE
from rnn_sentiment.server.stream_predict import answer_in_order
from rnn_sentiment.v1 import sentiment_pb2 as pb


async def messages(count: int) -> AsyncIterator[pb.StreamPredictRequest]:
    for i in range(count):
        yield pb.StreamPredictRequest(id=str(i), request=pb.PredictRequest(texts=[f"text {i}"]))


def test_answers_come_in_order_with_at_most_the_bound_in_flight() -> None:
    in_flight = 0
    most_in_flight = 0
    release: dict[str, asyncio.Event] = {}

    async def predict(request: pb.PredictRequest, time_remaining: float | None) -> pb.PredictResponse:
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        await release.setdefault(request.texts[0], asyncio.Event()).wait()
        in_flight -= 1
        return pb.PredictResponse(model=request.texts[0])

    async def finish_in_reverse_order() -> None:
        # Until every text is answered: release the newest waiting text first, so answers
        # complete out of order and only the handler can put them back in order.
        while True:
            await asyncio.sleep(0)
            waiting = [e for e in release.values() if not e.is_set()]
            if waiting:
                waiting[-1].set()

    async def run() -> list[pb.StreamPredictResponse]:
        releaser = asyncio.ensure_future(finish_in_reverse_order())
        answers = [a async for a in answer_in_order(messages(100), predict, lambda: None, max_in_flight=8)]
        releaser.cancel()
        return answers

    answers = asyncio.run(run())
    assert [a.id for a in answers] == [str(i) for i in range(100)]
    assert [a.response.model for a in answers] == [f"text {i}" for i in range(100)]
    assert most_in_flight == 8  # pipelined up to the bound, never past it


def test_errors_are_answers_with_the_unary_code_and_prefixed_fields() -> None:
    async def predict(request: pb.PredictRequest, time_remaining: float | None) -> pb.PredictResponse:
        if request.texts[0] == "text 1":
            raise invalid_argument([FieldViolation("texts[0]", "is bad")])
        if request.texts[0] == "text 2":
            raise RuntimeError("a bug, with a secret")
        return pb.PredictResponse(model="m")

    async def with_garbage() -> AsyncIterator[object]:
        async for m in messages(3):
            yield m
        yield UNPARSABLE

    async def run() -> list[pb.StreamPredictResponse]:
        return [a async for a in answer_in_order(with_garbage(), predict, lambda: None)]

    ok, bad, bug, garbage = asyncio.run(run())
    assert ok.WhichOneof("outcome") == "response"
    assert bad.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert [(v.field, v.description) for v in bad.error.field_violations] == [("request.texts[0]", "is bad")]
    assert bug.id == "2" and bug.error.code == grpc.StatusCode.INTERNAL.value[0]
    assert "secret" not in bug.error.message
    assert garbage.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "could not parse" in garbage.error.message


def test_a_caller_that_goes_away_leaves_nothing_running() -> None:
    started: list[asyncio.Future] = []

    async def predict(request: pb.PredictRequest, time_remaining: float | None) -> pb.PredictResponse:
        started.append(asyncio.get_running_loop().create_future())
        await started[-1]
        return pb.PredictResponse()

    async def run() -> None:
        answers = answer_in_order(messages(10), predict, lambda: None, max_in_flight=4)
        first = asyncio.ensure_future(answers.__anext__())
        while len(started) < 4:
            await asyncio.sleep(0)
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await answers.aclose()
        await asyncio.sleep(0)

    asyncio.run(run())
    assert len(started) == 4
    assert all(f.cancelled() for f in started)
