"""The asyncio SDK's streams: AsyncSentimentStream (with failover), stream_texts, predict_stream.

Built by AsyncSentimentClient; the same behaviour as client/streams.py, awaited.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterable, AsyncIterator, Iterable, Sequence

import grpc
from grpc import aio

from rnn_sentiment.v1 import sentiment_pb2 as pb

from .errors import SentimentError
from .results import Prediction, StreamUpdate
from .stream_core import MAX_IN_FLIGHT, Backoff, SentText, can_retry, ended_early, error_of


class _OpenCall:
    """One StreamSentiment call on a grpc.aio channel."""

    def __init__(self, method: Any, metadata: Sequence[tuple[str, str]], timeout: float | None) -> None:
        self._call = method(metadata=metadata, timeout=timeout)

    async def exchange(self, request: pb.StreamSentimentRequest | None) -> pb.StreamSentimentResponse:
        """Send one message (None: half-close) and wait for its answer."""
        try:
            if request is None:
                await self._call.done_writing()
            else:
                await self._call.write(request)
        except asyncio.InvalidStateError:
            pass  # the call has ended already (a drained server): the read below raises its status
        response = await self._call.read()
        if response is aio.EOF:
            raise ended_early()
        return response  # type: ignore[no-any-return]

    def abandon(self) -> None:
        self._call.cancel()


class AsyncSentimentStream:
    """A live StreamSentiment session, awaited: `await send(chunk)`, `await close()`.

    >>> async with client.stream() as stream:                   # doctest: +SKIP
    ...     (await stream.send("the plot is dull ")).prediction.label
    ...     (await stream.close()).prediction.label
    'negative'
    'negative'

    Failover as SentimentStream: a stream that fails with UNAVAILABLE, or that the server ended as
    idle, is reopened and the text sent so far replayed before the next chunk; no error is seen.
    """

    def __init__(self, method: Any, *, model: str, include_steps: bool, metadata: Sequence[tuple[str, str]],
                 timeout: float | None, backoff: Backoff | None) -> None:
        self._method = method
        self._metadata = metadata
        self._timeout = timeout
        self._backoff = backoff
        self._sent = SentText(model, include_steps)
        self._call: _OpenCall | None = None
        self._closed = False
        self.reopened = 0  # how many times a failed stream was replaced

    async def send(self, chunk: str) -> StreamUpdate:
        """Send the next piece of text (it may end mid-word); returns the prediction so far."""
        if self._closed:
            raise ValueError("the stream is closed")
        update = await self._exchange(chunk)
        self._sent.acknowledge(chunk)
        return update

    async def close(self) -> StreamUpdate:
        """End the text: the held unfinished word is read; returns the whole text's prediction."""
        if self._closed:
            raise ValueError("the stream is closed")
        self._closed = True
        try:
            return await self._exchange(None)
        finally:
            self._drop_call()

    async def __aenter__(self) -> "AsyncSentimentStream":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if not self._closed:
            self._closed = True
            self._drop_call()

    async def _exchange(self, chunk: str | None) -> StreamUpdate:
        retries = 0
        while True:
            try:
                call = self._call or await self._open()
                first = not self._sent.chunks and self._call is None
                self._call = call
                if chunk is None:
                    if first:  # an empty text: the model and options still come first
                        await call.exchange(self._sent.request("", first=True))
                    return StreamUpdate.from_message(await call.exchange(None))
                return StreamUpdate.from_message(await call.exchange(self._sent.request(chunk, first=first)))
            except grpc.RpcError as error:
                self._drop_call()
                if not can_retry(error, self._backoff, retries, has_deadline=self._timeout is not None):
                    raise SentimentError.from_rpc_error(error) from None
                assert self._backoff is not None
                await asyncio.sleep(self._backoff.delay(retries))
                retries += 1
                self.reopened += 1

    async def _open(self) -> _OpenCall:
        call = _OpenCall(self._method, self._metadata, self._timeout)
        try:
            for message in self._sent.replay():
                await call.exchange(message)
        except BaseException:
            call.abandon()
            raise
        return call

    def _drop_call(self) -> None:
        if self._call is not None:
            self._call.abandon()
            self._call = None


async def stream_updates(stream: AsyncSentimentStream, chunks: AsyncIterable[str]) -> AsyncIterator[StreamUpdate]:
    """One update per chunk of `chunks`, then close()'s final one (AsyncSentimentClient.stream_texts)."""
    async with stream:
        async for chunk in chunks:
            yield await stream.send(chunk)
        yield await stream.close()


async def predict_stream(
    method: Any, texts: Iterable[str] | AsyncIterable[str], *, model: str, batch: int,
    metadata: Sequence[tuple[str, str]], timeout: float | None, max_in_flight: int = MAX_IN_FLIGHT,
) -> AsyncIterator[Prediction]:
    """Predictions of `texts` in order over one StreamPredict stream (AsyncSentimentClient.predict_stream)."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    call = method(metadata=metadata, timeout=timeout)
    slots = asyncio.Semaphore(max_in_flight)  # requests sent and not yet answered

    async def write() -> None:
        number = 0
        try:
            async for group in _batched(texts, batch):
                await slots.acquire()
                await call.write(pb.StreamPredictRequest(id=str(number),
                                                         request=pb.PredictRequest(texts=group, model=model)))
                number += 1
            await call.done_writing()
        except asyncio.InvalidStateError:
            pass  # the call has ended (the server ended it): the read raises its status

    writer = asyncio.ensure_future(write())
    # When the caller's iterable fails, the call is cancelled so that the read below stops waiting.
    writer.add_done_callback(lambda done: call.cancel() if not done.cancelled() and done.exception() else None)
    try:
        while (response := await call.read()) is not aio.EOF:
            slots.release()
            error = error_of(response)
            if error is not None:
                raise error
            for prediction in response.response.predictions:
                yield Prediction.from_message(prediction)
        await writer
    except (grpc.RpcError, asyncio.CancelledError) as error:
        if writer.done() and not writer.cancelled() and writer.exception() is not None:
            raise writer.exception() from None  # type: ignore[misc]
        if isinstance(error, asyncio.CancelledError):
            raise
        raise SentimentError.from_rpc_error(error) from None
    finally:
        writer.cancel()
        call.cancel()


async def _batched(texts: Iterable[str] | AsyncIterable[str], batch: int) -> AsyncIterator[list[str]]:
    group: list[str] = []
    async for text in _aiterate(texts):
        group.append(text)
        if len(group) == batch:
            yield group
            group = []
    if group:
        yield group


async def _aiterate(texts: Iterable[str] | AsyncIterable[str]) -> AsyncIterator[str]:
    if isinstance(texts, AsyncIterable):
        async for text in texts:
            yield text
    else:
        for text in texts:
            yield text
