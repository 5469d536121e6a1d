"""StreamPredict's pipeline (server/stream_predict.py) without a server: answers in request order,
the read-ahead limit docs/streaming.md promises (64 unanswered messages per stream), each failure
as the unary call's status on its own message, and the unanswered work cancelled when the caller
goes away. Predict is a plain coroutine here; the real one runs in tests/integration/test_stream_predict.py."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import grpc
import pytest

from rnn_sentiment.server.errors import FieldViolation, ServiceError, invalid_argument, not_found
from rnn_sentiment.server.instrumentation import UNPARSABLE
from rnn_sentiment.server.stream_predict import MAX_IN_FLIGHT_PER_STREAM, answer_in_order, answer_one
from rnn_sentiment.v1 import sentiment_pb2 as pb

T = TypeVar("T")
LIMIT_SECONDS = 10


def run(main: Awaitable[T]) -> T:
    # A pipeline that loses an answer hangs: fail the test instead of the run.
    return asyncio.run(asyncio.wait_for(main, LIMIT_SECONDS))


def message(text: str, id: str) -> pb.StreamPredictRequest:
    return pb.StreamPredictRequest(id=id, request=pb.PredictRequest(texts=[text]))


def answer(request: pb.PredictRequest) -> pb.PredictResponse:
    return pb.PredictResponse(model="m", predictions=[pb.Prediction(label=text) for text in request.texts])


class Source:
    """The stream's requests, counting how many the pipeline has read."""

    def __init__(self, messages: list[Any]) -> None:
        self.messages = messages
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[Any]:
        for item in self.messages:
            self.read += 1
            yield item


async def settle() -> None:
    for _ in range(50):  # enough loop turns for the reader to go as far as it is allowed
        await asyncio.sleep(0)


def test_answers_come_in_request_order_although_later_ones_finish_first() -> None:
    async def predict(request: pb.PredictRequest, time_remaining: float | None) -> pb.PredictResponse:
        await asyncio.sleep(0.001 * (10 - int(request.texts[0])))  # the first message is the slowest
        return answer(request)

    async def main() -> list[pb.StreamPredictResponse]:
        source = Source([message(str(i), id=f"m{i}") for i in range(10)])
        return [r async for r in answer_in_order(source, predict, lambda: 5.0)]

    responses = run(main())
    assert [r.id for r in responses] == [f"m{i}" for i in range(10)]
    assert [r.response.predictions[0].label for r in responses] == [str(i) for i in range(10)]


def test_each_message_gets_the_time_remaining_when_it_is_read() -> None:
    seen: list[float | None] = []

    async def predict(request: pb.PredictRequest, time_remaining: float | None) -> pb.PredictResponse:
        seen.append(time_remaining)
        return answer(request)

    remaining = iter([3.0, 2.0])

    async def main() -> list[pb.StreamPredictResponse]:
        source = Source([message("a", id="1"), message("b", id="2")])
        return [r async for r in answer_in_order(source, predict, lambda: next(remaining))]

    assert len(run(main())) == 2
    assert seen == [3.0, 2.0]


def blocked_pipeline(max_in_flight: int | None, total: int) -> tuple[int, int]:
    """(messages read while no answer can be sent, messages read after one answer is sent)."""
    gate = asyncio.Event

    async def main() -> tuple[int, int]:
        release = gate()

        async def predict(request: pb.PredictRequest, time_remaining: float | None) -> pb.PredictResponse:
            await release.wait()
            return answer(request)

        source = Source([message(str(i), id=str(i)) for i in range(total)])
        kwargs = {} if max_in_flight is None else {"max_in_flight": max_in_flight}
        responses = answer_in_order(source, predict, lambda: None, **kwargs)
        first = asyncio.ensure_future(responses.__anext__())
        await settle()
        while_blocked = source.read
        release.set()
        assert (await first).id == "0"
        await settle()
        after_one = source.read
        await responses.aclose()
        return while_blocked, after_one

    return run(main())


def test_reading_stops_at_max_in_flight_unanswered_messages_and_resumes_when_one_is_answered() -> None:
    while_blocked, after_one = blocked_pipeline(max_in_flight=3, total=10)
    assert while_blocked == 3
    # One answer sent makes room for one more; the released ones then answer and free the rest.
    assert after_one > 3


def test_the_default_read_ahead_is_the_documented_64_messages_per_stream() -> None:
    assert MAX_IN_FLIGHT_PER_STREAM == 64
    while_blocked, _ = blocked_pipeline(max_in_flight=None, total=100)
    assert while_blocked == 64


def test_a_caller_going_away_cancels_the_unanswered_predictions() -> None:
    async def main() -> tuple[int, int]:
        started = 0
        cancelled = 0

        async def predict(request: pb.PredictRequest, time_remaining: float | None) -> pb.PredictResponse:
            nonlocal started, cancelled
            started += 1
            if request.texts[0] == "0":
                return answer(request)
            try:
                await asyncio.Event().wait()  # never answered
            except asyncio.CancelledError:
                cancelled += 1
                raise
            raise AssertionError("unreachable")

        responses = answer_in_order(Source([message(str(i), id=str(i)) for i in range(5)]), predict, lambda: None)
        assert (await responses.__anext__()).id == "0"
        await settle()
        await responses.aclose()  # what grpc.aio does when the caller cancels the stream
        await settle()
        return started, cancelled

    started, cancelled = run(main())
    assert started == 5 and cancelled == 4


def test_a_failing_read_ends_the_stream_after_the_answers_before_it() -> None:
    async def predict(request: pb.PredictRequest, time_remaining: float | None) -> pb.PredictResponse:
        return answer(request)

    async def requests() -> AsyncIterator[Any]:
        yield message("a", id="1")
        yield message("b", id="2")
        raise ConnectionResetError("the stream broke")

    async def main() -> list[str]:
        ids = []
        with pytest.raises(ConnectionResetError):
            async for response in answer_in_order(requests(), predict, lambda: None):
                ids.append(response.id)
        return ids

    assert run(main()) == ["1", "2"]


def answered(predict: Callable[[pb.PredictRequest, float | None], Awaitable[pb.PredictResponse]],
             item: Any) -> pb.StreamPredictResponse:
    return run(answer_one(item, predict, None))


def failing(error: BaseException) -> Callable[[pb.PredictRequest, float | None], Awaitable[pb.PredictResponse]]:
    async def predict(request: pb.PredictRequest, time_remaining: float | None) -> pb.PredictResponse:
        raise error

    return predict


def test_a_service_error_becomes_that_message_s_error_with_its_code_message_and_fields() -> None:
    error = invalid_argument([FieldViolation("texts[1]", "must hold a non-whitespace character")])
    response = answered(failing(error), message("x", id="bad"))
    assert response.id == "bad" and response.WhichOneof("outcome") == "error"
    assert response.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert response.error.message == error.message
    assert [(v.field, v.description) for v in response.error.field_violations] == [
        ("request.texts[1]", "must hold a non-whitespace character")]

    missing = answered(failing(not_found("model 'x' is not served")), message("x", id="nf")).error
    assert missing.code == grpc.StatusCode.NOT_FOUND.value[0] and missing.message == "model 'x' is not served"
    assert not missing.field_violations


def test_a_message_s_field_violations_are_bounded_as_the_unary_status_bounds_them() -> None:
    violations = [FieldViolation(f"texts[{i}]" + "f" * 200, "d" * 1000) for i in range(50)]
    error = answered(failing(ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "bad", violations)),
                     message("x", id="many")).error
    assert len(error.field_violations) == 20  # errors.MAX_VIOLATIONS, as in the unary BadRequest
    assert error.field_violations[0].field.startswith("request.texts[0]fff")
    assert [len(v.field) for v in error.field_violations] == [120] * 20
    assert [len(v.description) for v in error.field_violations] == [300] * 20
    assert all(v.field.endswith("…") and v.description.endswith("…") for v in error.field_violations)


def test_an_unexpected_exception_is_internal_without_its_text_and_the_id_is_kept() -> None:
    response = answered(failing(KeyError("secret internals /srv/app.py")), message("x", id="boom"))
    assert response.id == "boom"
    assert response.error.code == grpc.StatusCode.INTERNAL.value[0]
    assert response.error.message == "internal error; the server logged the details"
    assert "secret" not in str(response) and not response.error.field_violations


def test_undecodable_bytes_are_invalid_argument_naming_the_request() -> None:
    async def predict(request: pb.PredictRequest, time_remaining: float | None) -> pb.PredictResponse:
        raise AssertionError("an unparsable message never reaches Predict")

    error = answered(predict, UNPARSABLE).error
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "could not parse" in error.message
    assert [v.field for v in error.field_violations] == ["request.request"]


def test_an_unexpected_exception_is_logged_with_the_method_and_a_bounded_message_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The id is the caller's: the log carries at most 64 characters of it, with the stack trace.
    with caplog.at_level("ERROR", logger="rnn_sentiment.server.stream_predict"):
        answered(failing(KeyError("boom")), message("x", id="i" * 1000))
    (record,) = [r for r in caplog.records if r.name == "rnn_sentiment.server.stream_predict"]
    assert record.fields == {"method": "StreamPredict", "id": "i" * 64}
    assert record.exc_info is not None and record.exc_info[0] is KeyError
