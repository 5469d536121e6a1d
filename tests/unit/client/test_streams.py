"""The SDK's streams (client/streams.py, client/aio_streams.py) against a scripted stand-in server.

A stand-in SentimentService (no torch, no model) answers every StreamSentiment message with the
number of characters it has read on that stream, records what each stream received, and fails a
stream on the message the test scripts: so each test sees exactly what reached the server on
failover, and which answer the caller got. Both clients run each behaviour they share: the
asyncio one through an event loop in a thread, behind the blocking client's interface.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterable, Iterator

import grpc
import pytest

from rnn_sentiment.client import AsyncSentimentClient, SentimentClient, SentimentError
from rnn_sentiment.client.channel import RetryPolicy
from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from tests.support import LoopThread, stand_in_server

FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff_seconds=0.01, max_backoff_seconds=0.02)


@dataclass
class Failure:
    on_message: int  # the stream fails when it reads its message number `on_message` (1-based)
    code: grpc.StatusCode
    answered: bool = False  # True: the server answers that message first, then ends the stream


@dataclass
class ScriptedStreams(pb_grpc.SentimentServiceServicer):
    script: list[Failure | None] = field(default_factory=list)  # one per stream opened, in turn
    streams: list[list[pb.StreamSentimentRequest]] = field(default_factory=list)  # what each received
    ended: list[threading.Event] = field(default_factory=list)  # set when each stream's call ends
    end_without_answer: bool = False
    predict_requests: list[pb.StreamPredictRequest] = field(default_factory=list)
    predict_ended: list[threading.Event] = field(default_factory=list)  # set when each StreamPredict ends
    predict_fails_after: int = 0  # > 0: StreamPredict answers this many requests, then fails the stream
    predict_fails_when: threading.Event | None = None  # ...once this is set (the client waits for a text)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def StreamSentiment(self, requests: Iterator[pb.StreamSentimentRequest],
                        context: grpc.ServicerContext) -> Iterator[pb.StreamSentimentResponse]:
        received: list[pb.StreamSentimentRequest] = []
        ended = threading.Event()
        context.add_callback(ended.set)
        with self._lock:
            self.streams.append(received)
            self.ended.append(ended)
            failure = self.script.pop(0) if self.script else None
        read = ""
        for request in requests:
            received.append(request)
            if failure is not None and len(received) == failure.on_message and not failure.answered:
                context.abort(failure.code, f"scripted {failure.code.name}")
            if self.end_without_answer:
                return
            read += request.text
            yield pb.StreamSentimentResponse(prediction=pb.Prediction(label="positive", token_count=len(read)),
                                             model="scripted")
            if failure is not None and len(received) == failure.on_message:  # answered: ends it now
                context.abort(failure.code, f"scripted {failure.code.name}")
        yield pb.StreamSentimentResponse(prediction=pb.Prediction(label="positive", token_count=len(read)),
                                         model="scripted", final=True)

    def StreamPredict(self, requests: Iterator[pb.StreamPredictRequest],
                      context: grpc.ServicerContext) -> Iterator[pb.StreamPredictResponse]:
        ended = threading.Event()
        context.add_callback(ended.set)
        with self._lock:
            self.predict_ended.append(ended)
        for number, request in enumerate(requests, start=1):
            with self._lock:
                self.predict_requests.append(request)
            yield pb.StreamPredictResponse(id=request.id, response=pb.PredictResponse(
                predictions=[pb.Prediction(label=text, token_count=len(text)) for text in request.request.texts]))
            if number == self.predict_fails_after:
                if self.predict_fails_when is not None:
                    self.predict_fails_when.wait(10)
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "scripted RESOURCE_EXHAUSTED")


@pytest.fixture
def scripted() -> Iterator[tuple[ScriptedStreams, str]]:
    service = ScriptedStreams()
    with stand_in_server(lambda server: pb_grpc.add_SentimentServiceServicer_to_server(service, server),
                         threads=8) as target:
        yield service, target


class AwaitedStream:
    """An AsyncSentimentStream behind SentimentStream's interface."""

    def __init__(self, loop: LoopThread, stream: Any) -> None:
        self.loop, self.stream = loop, stream

    @property
    def reopened(self) -> int:
        return self.stream.reopened  # type: ignore[no-any-return]

    def send(self, chunk: str) -> Any:
        return self.loop.run(self.stream.send(chunk))

    def close(self) -> Any:
        return self.loop.run(self.stream.close())

    def __enter__(self) -> "AwaitedStream":
        self.loop.run(self.stream.__aenter__())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.loop.run(self.stream.__aexit__(*exc_info))


class AwaitedClient:
    """An AsyncSentimentClient behind SentimentClient's interface (stream, predict_stream)."""

    def __init__(self, target: str, **options: Any) -> None:
        self.loop = LoopThread()

        async def opened() -> AsyncSentimentClient:
            return AsyncSentimentClient(target, **options)

        self.client = self.loop.run(opened())

    def stream(self, **options: Any) -> AwaitedStream:
        return AwaitedStream(self.loop, self.client.stream(**options))

    def predict_stream(self, texts: Any, **options: Any) -> Iterator[Any]:
        predictions = self.client.predict_stream(texts, **options)
        try:
            while True:
                try:
                    yield self.loop.run(predictions.__anext__(), 60)
                except StopAsyncIteration:
                    return
        finally:
            self.loop.run(predictions.aclose())

    def __enter__(self) -> "AwaitedClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.loop.run(self.client.close())
        self.loop.close()


CLIENTS: dict[str, Callable[..., Any]] = {"blocking": SentimentClient, "asyncio": AwaitedClient}
each_client = pytest.mark.parametrize("client_class", list(CLIENTS.values()), ids=list(CLIENTS))


@each_client
def test_a_stream_failed_unavailable_is_reopened_with_the_acknowledged_text_replayed(
    client_class: Callable[..., Any], scripted: tuple[ScriptedStreams, str],
) -> None:
    service, target = scripted
    service.script = [Failure(2, grpc.StatusCode.UNAVAILABLE)]  # the first stream fails on its second chunk
    with client_class(target, retry=FAST_RETRY) as client, \
            client.stream(model="m", include_steps=True) as stream:
        assert stream.send("the plot is du").prediction.token_count == 14
        update = stream.send("ll but ")
        final = stream.close()
    assert stream.reopened == 1
    assert update.prediction.token_count == 21 and not update.final  # the chunk's answer, not the replay's
    assert final.final and final.prediction.token_count == 21
    opening = pb.StreamSentimentRequest(text="the plot is du", model="m", include_steps=True)
    assert service.streams == [[opening, pb.StreamSentimentRequest(text="ll but ")],
                               [opening, pb.StreamSentimentRequest(text="ll but ")]]


@each_client
def test_an_idle_stream_is_reopened_but_not_one_past_its_own_deadline(
    client_class: Callable[..., Any], scripted: tuple[ScriptedStreams, str],
) -> None:
    service, target = scripted
    service.script = [Failure(2, grpc.StatusCode.DEADLINE_EXCEEDED)]  # the server's idle timeout
    with client_class(target, retry=FAST_RETRY) as client:
        with client.stream() as stream:
            stream.send("good ")
            assert stream.send("film").prediction.token_count == 9
        assert stream.reopened == 1
        service.script = [Failure(2, grpc.StatusCode.DEADLINE_EXCEEDED)]
        with pytest.raises(SentimentError) as raised, client.stream(timeout=30) as bounded:
            bounded.send("good ")
            bounded.send("film")
    assert raised.value.code == "DEADLINE_EXCEEDED" and bounded.reopened == 0
    assert len(service.streams) == 3


@each_client
def test_reopening_stops_after_the_retry_policys_attempts(
    client_class: Callable[..., Any], scripted: tuple[ScriptedStreams, str],
) -> None:
    service, target = scripted
    service.script = [Failure(2, grpc.StatusCode.UNAVAILABLE)] * 10
    with client_class(target, retry=FAST_RETRY) as client, client.stream() as stream:
        stream.send("good ")
        with pytest.raises(SentimentError) as raised:
            stream.send("film")
    assert raised.value.code == "UNAVAILABLE"
    assert len(service.streams) == FAST_RETRY.max_attempts == 3 and stream.reopened == 2


@each_client
def test_with_retries_off_or_for_other_codes_the_first_failure_is_raised(
    client_class: Callable[..., Any], scripted: tuple[ScriptedStreams, str],
) -> None:
    service, target = scripted
    service.script = [Failure(2, grpc.StatusCode.UNAVAILABLE)]
    with client_class(target, retry=False) as client, client.stream() as stream:
        stream.send("good ")
        with pytest.raises(SentimentError) as unavailable:
            stream.send("film")
    service.script = [Failure(2, grpc.StatusCode.RESOURCE_EXHAUSTED)]
    with client_class(target, retry=FAST_RETRY) as client, client.stream() as stream:
        stream.send("good ")
        with pytest.raises(SentimentError) as exhausted:
            stream.send("film")
    assert (unavailable.value.code, exhausted.value.code) == ("UNAVAILABLE", "RESOURCE_EXHAUSTED")
    assert len(service.streams) == 2  # neither was reopened


@each_client
def test_a_stream_the_server_ends_without_an_answer_raises_unavailable(
    client_class: Callable[..., Any], scripted: tuple[ScriptedStreams, str],
) -> None:
    service, target = scripted
    service.end_without_answer = True
    with client_class(target, retry=FAST_RETRY) as client, client.stream() as stream:
        with pytest.raises(SentimentError) as raised:
            stream.send("good")
    assert raised.value.code == "UNAVAILABLE" and "ended before the server answered" in raised.value.message


@each_client
def test_closing_an_empty_stream_still_names_the_model(
    client_class: Callable[..., Any], scripted: tuple[ScriptedStreams, str],
) -> None:
    service, target = scripted
    with client_class(target) as client:
        final = client.stream(model="m", include_steps=True).close()
    assert final.final and final.prediction.token_count == 0
    assert service.streams == [[pb.StreamSentimentRequest(text="", model="m", include_steps=True)]]


@each_client
def test_a_closed_stream_refuses_more_and_leaving_early_cancels_the_call(
    client_class: Callable[..., Any], scripted: tuple[ScriptedStreams, str],
) -> None:
    service, target = scripted
    with client_class(target) as client:
        with client.stream() as closed:
            closed.send("good")
            closed.close()
            with pytest.raises(ValueError, match="closed"):
                closed.send("more")
            with pytest.raises(ValueError, match="closed"):
                closed.close()
        with client.stream() as left:
            left.send("good")
        # Left without close(): the server's call ends now, not when the client's channel closes.
        assert service.ended[1].wait(10)
        with pytest.raises(ValueError, match="closed"):
            left.send("more")
    assert len(service.streams) == 2


@each_client
def test_predict_stream_sends_batches_with_ids_and_a_short_last_one(
    client_class: Callable[..., Any], scripted: tuple[ScriptedStreams, str],
) -> None:
    service, target = scripted
    texts = ["a", "bb", "ccc", "dddd", "eeeee"]
    with client_class(target) as client:
        labels = [p.label for p in client.predict_stream(texts, batch=2, model="m")]
        with pytest.raises(ValueError, match="batch"):
            list(client.predict_stream(texts, batch=0))
    assert labels == texts
    assert [(r.id, list(r.request.texts), r.request.model) for r in service.predict_requests] == [
        ("0", ["a", "bb"], "m"), ("1", ["ccc", "dddd"], "m"), ("2", ["eeeee"], "m")]


@each_client
def test_predict_stream_of_batch_1_sends_one_text_per_request(
    client_class: Callable[..., Any], scripted: tuple[ScriptedStreams, str],
) -> None:
    service, target = scripted
    with client_class(target) as client:
        labels = [p.label for p in client.predict_stream(["a", "bb"], batch=1)]
    assert labels == ["a", "bb"]
    assert [(r.id, list(r.request.texts)) for r in service.predict_requests] == [("0", ["a"]), ("1", ["bb"])]


def test_the_async_predict_stream_takes_an_async_iterable_too(scripted: tuple[ScriptedStreams, str]) -> None:
    _, target = scripted

    async def texts() -> AsyncIterator[str]:
        for text in ["a", "bb", "ccc"]:
            yield text

    async def run() -> list[str]:
        async with AsyncSentimentClient(target) as client:
            return [p.label async for p in client.predict_stream(texts(), batch=2)]

    assert asyncio.run(run()) == ["a", "bb", "ccc"]


@each_client
def test_predict_stream_raises_what_the_callers_texts_raised(
    client_class: Callable[..., Any], scripted: tuple[ScriptedStreams, str],
) -> None:
    _, target = scripted

    class SourceFailed(Exception):
        pass

    def texts() -> Iterable[str]:
        yield "a"
        yield "bb"
        raise SourceFailed("the caller's source failed")

    with client_class(target) as client:
        with pytest.raises(SourceFailed, match="source failed"):
            list(client.predict_stream(texts()))


@each_client
def test_predict_stream_keeps_64_requests_ahead_of_the_answers_and_no_more(
    client_class: Callable[..., Any], scripted: tuple[ScriptedStreams, str],
) -> None:
    _, target = scripted
    pulled = 0

    def texts() -> Iterator[str]:
        nonlocal pulled
        for i in range(200):
            pulled += 1
            yield str(i)

    with client_class(target) as client:
        predictions = client.predict_stream(texts())
        assert next(predictions).label == "0"  # one answer taken: 65 requests may be sent, the 66th text waits
        deadline = time.monotonic() + 30
        while pulled < 66 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # time enough to read further, were it allowed to
        assert pulled == 66
        # A caller slower than the answers loses nothing: the stream goes on once it reads again.
        assert [p.label for p in predictions] == [str(i) for i in range(1, 200)]


def test_stream_texts_gives_one_update_per_chunk_then_the_final_one(scripted: tuple[ScriptedStreams, str]) -> None:
    service, target = scripted

    async def chunks() -> AsyncIterator[str]:
        for chunk in ["the plot ", "is du", "ll"]:
            yield chunk

    async def run() -> list[Any]:
        async with AsyncSentimentClient(target) as client:
            return [update async for update in client.stream_texts(chunks(), model="m")]

    updates = asyncio.run(run())
    assert [(u.prediction.token_count, u.final) for u in updates] == [(9, False), (14, False), (16, False), (16, True)]
    # The model by keyword; steps only when asked for.
    assert service.streams[0][0] == pb.StreamSentimentRequest(text="the plot ", model="m", include_steps=False)



@each_client
def test_a_stream_the_server_ended_between_chunks_is_reopened_on_the_next_one(
    client_class: Callable[..., Any], scripted: tuple[ScriptedStreams, str],
) -> None:
    service, target = scripted
    # As a draining server does: it answers the chunk, then ends the stream UNAVAILABLE.
    service.script = [Failure(1, grpc.StatusCode.UNAVAILABLE, answered=True)]
    with client_class(target, retry=FAST_RETRY) as client, client.stream() as stream:
        assert stream.send("good ").prediction.token_count == 5
        assert _ended(service.ended, 0)
        time.sleep(0.2)  # the client has seen the stream end before it sends the next chunk
        assert stream.send("film").prediction.token_count == 9
    assert stream.reopened == 1 and len(service.streams) == 2


def _ended(events: list[threading.Event], number: int) -> bool:
    """Whether call `number` (0-based) of the stand-in server has ended, waiting up to 10 s."""
    deadline = time.monotonic() + 10
    while len(events) <= number and time.monotonic() < deadline:
        time.sleep(0.02)
    return len(events) > number and events[number].wait(max(0.0, deadline - time.monotonic()))


@each_client
def test_predict_stream_raises_the_status_of_a_stream_the_server_ended(
    client_class: Callable[..., Any], scripted: tuple[ScriptedStreams, str],
) -> None:
    service, target = scripted
    service.predict_fails_after = 1
    service.predict_fails_when = waiting = threading.Event()
    second_sent = threading.Event()

    def texts() -> Iterator[str]:
        yield "a"
        waiting.set()  # the client waits for the next text when the server ends the stream
        _ended(service.predict_ended, 0)  # the next text comes after the server ended the stream
        time.sleep(0.2)
        second_sent.set()
        yield "bb"

    async def async_texts() -> AsyncIterator[str]:
        yield "a"
        waiting.set()
        await asyncio.to_thread(_ended, service.predict_ended, 0)
        await asyncio.sleep(0.2)
        second_sent.set()
        yield "bb"

    with client_class(target) as client:
        predictions = client.predict_stream(async_texts() if client_class is AwaitedClient else texts())
        assert next(predictions).label == "a"
        assert second_sent.wait(10)
        time.sleep(0.3)  # the caller reads on only after the client tried to send the next text
        with pytest.raises(SentimentError) as raised:
            next(predictions)
    assert raised.value.code == "RESOURCE_EXHAUSTED"


@each_client
def test_leaving_predict_stream_early_ends_the_call(
    client_class: Callable[..., Any], scripted: tuple[ScriptedStreams, str],
) -> None:
    service, target = scripted
    with client_class(target) as client:
        predictions = client.predict_stream(str(i) for i in itertools.count())
        assert next(predictions).label == "0"
        predictions.close()  # type: ignore[attr-defined]
        assert _ended(service.predict_ended, 0)  # now, not when the client's channel closes


def test_cancelling_a_task_that_reads_the_async_predict_stream_cancels_it(
    scripted: tuple[ScriptedStreams, str],
) -> None:
    service, target = scripted

    async def texts() -> AsyncIterator[str]:
        yield "a"
        await asyncio.Event().wait()  # the caller's source has nothing more for now

    async def run() -> bool:
        async with AsyncSentimentClient(target) as client:
            first = asyncio.Event()

            async def read() -> None:
                async for _ in client.predict_stream(texts()):
                    first.set()

            task = asyncio.create_task(read())
            await asyncio.wait([asyncio.ensure_future(first.wait()), task], timeout=30,
                               return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()  # the stream failed before its first prediction: raise its error, not hang
            assert first.is_set()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return await asyncio.to_thread(_ended, service.predict_ended, 0)

    assert asyncio.run(run())


@each_client
def test_predict_stream_raises_the_callers_error_even_after_the_stream_failed(
    client_class: Callable[..., Any], scripted: tuple[ScriptedStreams, str],
) -> None:
    service, target = scripted
    service.predict_fails_after = 1
    service.predict_fails_when = waiting = threading.Event()
    took_first, raised_it = threading.Event(), threading.Event()

    class SourceFailed(Exception):
        pass

    def texts() -> Iterator[str]:
        yield "a"
        waiting.set()
        _ended(service.predict_ended, 0)  # the stream has failed when the caller's source fails
        took_first.wait(10)
        raised_it.set()
        raise SourceFailed("the caller's source failed")

    async def async_texts() -> AsyncIterator[str]:
        yield "a"
        waiting.set()
        await asyncio.to_thread(_ended, service.predict_ended, 0)
        await asyncio.to_thread(took_first.wait, 10)
        raised_it.set()
        raise SourceFailed("the caller's source failed")

    with client_class(target) as client:
        predictions = client.predict_stream(async_texts() if client_class is AwaitedClient else texts())
        assert next(predictions).label == "a"
        took_first.set()
        assert raised_it.wait(10)
        time.sleep(0.3)
        with pytest.raises(SourceFailed):  # the caller's own error says more than the stream's end
            next(predictions)


def test_predict_stream_waiting_for_answers_costs_the_caller_no_cpu(scripted: tuple[ScriptedStreams, str]) -> None:
    """A caller that reads slowly holds the sender 64 requests ahead; the sender then sleeps on its
    slots, waking only to look for the end of the call: it must not spin a core meanwhile."""
    service, target = scripted
    with SentimentClient(target) as client:
        predictions = client.predict_stream(str(i) for i in range(200))
        assert next(predictions).label == "0"
        deadline = time.monotonic() + 30
        while len(service.predict_requests) < 65 and time.monotonic() < deadline:  # 64 ahead of the one read
            time.sleep(0.01)
        assert len(service.predict_requests) == 65  # the sender now waits for a slot
        cpu_before = time.process_time()
        time.sleep(1.0)
        waited_cpu = time.process_time() - cpu_before
        assert [p.label for p in predictions] == [str(i) for i in range(1, 200)]
    # Measured: 0.003 s; a sender polling without sleeping burnt 0.4 s under a load average of 8.
    assert waited_cpu < 0.1, f"{waited_cpu:.2f} s of CPU while waiting 1 s for the caller"
