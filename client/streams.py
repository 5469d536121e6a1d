"""The blocking SDK's streams: a StreamSentiment session with failover, and predict_stream.

Built by SentimentClient.stream() and SentimentClient.predict_stream(); see client/stream_core.py
for what they share with the asyncio client.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Iterable, Iterator, Sequence

import grpc

from rnn_sentiment.v1 import sentiment_pb2 as pb

from .errors import SentimentError
from .results import Prediction, StreamUpdate
from .stream_core import MAX_IN_FLIGHT, Backoff, SentText, can_retry, ended_early, error_of, predict_requests

_HALF_CLOSE = None  # put in a call's outbox: no more messages


class _OpenCall:
    """One StreamSentiment call: messages go in through a queue that gRPC's sender thread reads."""

    def __init__(self, method: grpc.StreamStreamMultiCallable, metadata: Sequence[tuple[str, str]],
                 timeout: float | None) -> None:
        self._outbox: queue.Queue[pb.StreamSentimentRequest | None] = queue.Queue()
        self._responses = method(iter(self._outbox.get, _HALF_CLOSE), metadata=metadata, timeout=timeout)

    def exchange(self, request: pb.StreamSentimentRequest | None) -> pb.StreamSentimentResponse:
        """Send one message (None: half-close) and wait for its answer."""
        self._outbox.put(request)
        try:
            return next(self._responses)  # type: ignore[no-any-return]
        except StopIteration:
            raise ended_early() from None

    def abandon(self) -> None:
        self._outbox.put(_HALF_CLOSE)  # gRPC's sender thread stops waiting for messages
        self._responses.cancel()


class SentimentStream:
    """A live StreamSentiment session: send text as it arrives, get the running sentiment.

    >>> with client.stream() as stream:                     # doctest: +SKIP
    ...     stream.send("the plot is dull ").prediction.label
    ...     stream.send("but the acting is wonderful").prediction.label
    ...     stream.close().prediction.label
    'negative'
    'positive'
    'positive'

    When the stream fails with UNAVAILABLE (the server drains or restarts) or the server ended it
    as idle, the next send opens a new one (on any replica behind the balancer), replays the text
    sent so far and carries on: the caller sees no error and the same predictions. Other failures
    raise SentimentError.
    """

    def __init__(self, method: grpc.StreamStreamMultiCallable, *, model: str, include_steps: bool,
                 metadata: Sequence[tuple[str, str]], timeout: float | None, backoff: Backoff | None) -> None:
        self._method = method
        self._metadata = metadata
        self._timeout = timeout
        self._backoff = backoff
        self._sent = SentText(model, include_steps)
        self._call: _OpenCall | None = None
        self._closed = False
        self.reopened = 0  # how many times a failed stream was replaced

    def send(self, chunk: str) -> StreamUpdate:
        """Send the next piece of text (it may end mid-word); returns the prediction so far."""
        if self._closed:
            raise ValueError("the stream is closed")
        update = self._exchange(chunk)
        self._sent.acknowledge(chunk)
        return update

    def close(self) -> StreamUpdate:
        """End the text: the held unfinished word is read; returns the whole text's prediction."""
        if self._closed:
            raise ValueError("the stream is closed")
        self._closed = True
        try:
            return self._exchange(None)
        finally:
            self._drop_call()

    def __enter__(self) -> "SentimentStream":
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._closed:
            self._closed = True
            self._drop_call()  # leaving early (or on an error) cancels the stream

    def _exchange(self, chunk: str | None) -> StreamUpdate:
        retries = 0
        while True:
            try:
                call = self._call or self._open()
                first = not self._sent.chunks and self._call is None
                self._call = call
                if chunk is None:
                    if first:  # an empty text: the model and options still come first
                        call.exchange(self._sent.request("", first=True))
                    return StreamUpdate.from_message(call.exchange(None))
                return StreamUpdate.from_message(call.exchange(self._sent.request(chunk, first=first)))
            except grpc.RpcError as error:
                self._drop_call()
                if not can_retry(error, self._backoff, retries, has_deadline=self._timeout is not None):
                    raise SentimentError.from_rpc_error(error) from None
                assert self._backoff is not None
                time.sleep(self._backoff.delay(retries))
                retries += 1
                self.reopened += 1

    def _open(self) -> _OpenCall:
        """A new call, brought up to the text acknowledged so far (its answers are not shown again)."""
        call = _OpenCall(self._method, self._metadata, self._timeout)
        try:
            for message in self._sent.replay():
                call.exchange(message)
        except BaseException:
            call.abandon()
            raise
        return call

    def _drop_call(self) -> None:
        if self._call is not None:
            self._call.abandon()
            self._call = None


def predict_stream(
    method: grpc.StreamStreamMultiCallable, texts: Iterable[str], *, model: str, batch: int,
    metadata: Sequence[tuple[str, str]], timeout: float | None, max_in_flight: int = MAX_IN_FLIGHT,
) -> Iterator[Prediction]:
    """Predictions of `texts` in order over one StreamPredict stream (SentimentClient.predict_stream)."""
    requests = predict_requests(texts, model, batch)
    slots = threading.Semaphore(max_in_flight)
    stop = threading.Event()
    failed: list[BaseException] = []  # what the caller's iterable raised, re-raised here

    def sent() -> Iterator[pb.StreamPredictRequest]:
        # gRPC's sender thread runs this: at most max_in_flight requests ahead of the answers.
        try:
            for request in requests:
                while not slots.acquire(timeout=0.1):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                yield request
        except Exception as error:
            failed.append(error)
            stop.set()

    responses: Any = method(sent(), metadata=metadata, timeout=timeout)
    try:
        for response in responses:
            slots.release()
            error = error_of(response)
            if error is not None:
                raise error
            for prediction in response.response.predictions:
                yield Prediction.from_message(prediction)
        if failed:
            raise failed[0]
    except grpc.RpcError as error:
        if failed:
            raise failed[0] from None
        raise SentimentError.from_rpc_error(error) from None
    finally:
        stop.set()
        responses.cancel()

