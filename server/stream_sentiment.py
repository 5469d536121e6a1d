"""StreamSentiment: the running sentiment of a text that arrives in chunks, one stream per text.

The first message chooses the model (and whether steps are wanted); every message's chunk is
tokenized incrementally (model/stream_tokenizer.py), its completed tokens advance the stream's
recurrent state through the model's StreamBatcher, and the answer is the prediction after them.
After the caller half-closes, the held unfinished word is read and a `final` response sent.

A stream keeps its model version for its lifetime (`ServedModel.hold()`): a hot reload serves
new streams, the open ones finish on the version they started with.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
import weakref
from dataclasses import dataclass
from typing import AsyncIterator

import grpc
from grpc import aio

from rnn_sentiment.model.inference import PredictionResult
from rnn_sentiment.model.stream_tokenizer import HeldTextTooLong, StreamTokenizer
from rnn_sentiment.model.streaming import (
    StreamState, StreamStepResult, StreamTokenStep, make_stream_stepper, stream_refusal,
)
from rnn_sentiment.model.truncation import TokenLimit
from rnn_sentiment.v1 import sentiment_pb2 as pb

from .errors import FieldViolation, ServiceError, invalid_argument, quoted_name, resource_exhausted
from .messages import prediction_message
from .model_thread import ModelThread
from .repository import ModelRepository, ServedModel
from .stream_batcher import StreamBatcher
from .stream_sessions import StreamLimits, StreamRegistry, StreamSession

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamExecutor:
    """How a model's stream stepper is built (ServerConfig's backend and threads).

    Not Predict's --onnx-max-batch: a stream batch is a word or two per session, so one ONNX
    Runtime run per chunk length (model/backends.py's DEFAULT_STREAM_MAX_BATCH) costs less per
    update than Predict's runs of 16 texts (docs/performance.md, "Streaming")."""

    backend: str = "auto"
    threads: int = 1


class StreamSentimentService:
    """Serves StreamSentiment calls: the servicer hands each one to `serve`."""

    def __init__(self, registry: StreamRegistry, executor: StreamExecutor) -> None:
        self.registry = registry
        self._executor = executor
        # Per model thread (so per model version; a batcher refers to its thread weakly, so the
        # entry goes with a retired version): its batcher, built on the version's first stream.
        self._batchers: weakref.WeakKeyDictionary[ModelThread, asyncio.Future[StreamBatcher]] = (
            weakref.WeakKeyDictionary())

    @property
    def limits(self) -> StreamLimits:
        return self.registry.limits

    async def serve(self, requests: AsyncIterator[pb.StreamSentimentRequest], context: aio.ServicerContext,
                    repository: ModelRepository) -> AsyncIterator[pb.StreamSentimentResponse]:
        """The responses of one stream; it ends with the status of a ServiceError when one is raised."""
        try:
            with self.registry.session() as session:
                async for response in self._serve(session, requests, repository):
                    yield response
        except ServiceError as error:
            await context.abort(error.code, error.message, trailing_metadata=error.trailing_metadata())
        except (aio.AbortError, asyncio.CancelledError, GeneratorExit):
            raise
        except Exception:
            log.exception("internal error in a stream")  # the stack trace stays in our log
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; the server logged the details")

    async def _serve(self, session: StreamSession, requests: AsyncIterator[pb.StreamSentimentRequest],
                     repository: ModelRepository) -> AsyncIterator[pb.StreamSentimentResponse]:
        idle = self.limits.idle_seconds
        first = await session.next_message(requests, idle)
        received = time.perf_counter()
        served = repository.resolve(first.model if first is not None else "")
        refusal = stream_refusal(served.loaded.config)
        if refusal is not None:
            streamable = [s.name for s in repository.all() if stream_refusal(s.loaded.config) is None]
            raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, (
                f"model {quoted_name(served.name)} cannot stream ({refusal}); models that can: "
                f"{', '.join(streamable) if streamable else 'none on this server'}"))
        self.registry.bind_model(session, served.name)
        async with served.hold():  # this version's model thread stays until the stream ends
            batcher = await self._batcher(served)
            stream = _Stream(served, batcher, session, self.registry, self.limits,
                             include_steps=first.include_steps if first is not None else False)
            message = first
            while message is not None:
                yield await stream.answer(message, received)
                message = await session.next_message(requests, idle)
                received = time.perf_counter()
            yield await stream.finish(time.perf_counter())

    async def _batcher(self, served: ServedModel) -> StreamBatcher:
        """The model version's StreamBatcher, its stepper built off the event loop on first use."""
        building = self._batchers.get(served.model_thread)
        if building is None:
            building = asyncio.ensure_future(self._build_batcher(served))
            self._batchers[served.model_thread] = building
        try:
            return await asyncio.shield(building)
        except Exception:
            self._batchers.pop(served.model_thread, None)  # the next stream tries again
            raise

    async def _build_batcher(self, served: ServedModel) -> StreamBatcher:
        executor = self._executor
        # Predict's ONNX Runtime session of this model, where it has one, is the streams' too.
        stepper = await asyncio.to_thread(make_stream_stepper, served.loaded, executor.backend, executor.threads,
                                          served.max_tokens, served.predictor.onnx)
        log.info("model %s %s: streams run on %s", served.name, served.loaded.version, stepper.description)
        metrics = served.metrics
        model_seconds = metrics.buffer.histogram(metrics.model_seconds.labels(served.name, "stream"))
        return StreamBatcher(stepper, served.model_thread, model_seconds)


class _Stream:
    """One open stream: its tokenizer, its model state and its counts."""

    def __init__(self, served: ServedModel, batcher: StreamBatcher, session: StreamSession,
                 registry: StreamRegistry, limits: StreamLimits, include_steps: bool) -> None:
        self.served = served
        self.batcher = batcher
        self.session = session
        self.registry = registry
        self.limits = limits
        self.include_steps = include_steps
        self.tokenizer = StreamTokenizer(limits.max_chunk_chars)
        self.state: StreamState = batcher.start_state()
        self.tokens_sent = 0  # completed tokens, read or dropped past the model's limit
        self.limit = TokenLimit(served.max_tokens, served.truncation)
        # head_tail truncation reads a long text's first head_tokens and its last ones. A stream
        # keeps the state after the head and the tokens after it, at most the tail's worth; past
        # the limit each update reads the tail again from the head's state (at most max_tokens
        # steps), which is Predict's reading of the text so far.
        tail = self.limit.max_tokens - self.limit.head_tokens
        self._tail: collections.deque[str] | None = collections.deque(maxlen=tail) if tail else None
        self._head_state: StreamState | None = (
            self.state if self._tail is not None and not self.limit.head_tokens else None)
        # Buffered (server/metric_buffer.py), as Predict's series are: every update touches these,
        # and a prometheus_client update is a lock and a memory-mapped write under --workers N.
        metrics = served.metrics
        buffer = metrics.buffer
        self._chunks = buffer.counter(metrics.stream_chunks.labels(served.name))
        self._tokens = buffer.counter(metrics.stream_tokens.labels(served.name))
        self._update_seconds = buffer.histogram(metrics.stream_update_seconds.labels(served.name))

    async def answer(self, message: pb.StreamSentimentRequest, received: float) -> pb.StreamSentimentResponse:
        if message.model and message.model != self.served.name:
            raise invalid_argument([FieldViolation("model", (
                f"names {quoted_name(message.model)} but this stream reads with {quoted_name(self.served.name)}: "
                "a later message must leave model empty or name the stream's model"))])
        if len(message.text) > self.limits.max_chunk_chars:
            raise invalid_argument([FieldViolation(
                "text", f"has {len(message.text)} characters; the limit is {self.limits.max_chunk_chars} per chunk")])
        try:
            tokens = self.tokenizer.feed(message.text)
        except HeldTextTooLong as error:
            raise invalid_argument([FieldViolation("text", str(error))]) from None
        return await self._read(tokens, received, final=False)

    async def finish(self, received: float) -> pb.StreamSentimentResponse:
        """After half-close: the held word is read, the answer is the whole text's."""
        return await self._read(self.tokenizer.finish(), received, final=True)

    async def _read(self, tokens: list[str], received: float, final: bool) -> pb.StreamSentimentResponse:
        self.tokens_sent += len(tokens)
        if self.tokens_sent > self.limits.max_stream_tokens:
            raise resource_exhausted(
                f"this stream has sent {self.tokens_sent} tokens; the limit is {self.limits.max_stream_tokens} per "
                "stream (--max-stream-tokens): open a new stream for more text")
        result: StreamStepResult | None = None
        if tokens:
            result = await self._advance(tokens)
            self._tokens.inc(len(tokens))
        self._chunks.inc()
        self.registry.set_bytes(self.session, self.state.nbytes() + self.tokenizer.held_chars)
        response = _response(self.served, self.state.prediction, result.steps if result is not None else (), final)
        self._update_seconds.observe(time.perf_counter() - received)
        return response

    async def _advance(self, tokens: list[str]) -> StreamStepResult:
        """Read the chunk's tokens (self.tokens_sent already counts them) as Predict reads the text so far."""
        if self._tail is None:  # head truncation: the stepper reads up to the limit and drops the rest
            self.state, result = await self.batcher.advance(self.state, tokens, self.include_steps)
            return result
        head_steps: tuple[StreamTokenStep, ...] = ()
        if self._head_state is None:
            before = self.tokens_sent - len(tokens)
            into_head = self.limit.head_tokens - before
            if into_head < len(tokens):  # this chunk completes the head: keep the state there
                if into_head > 0:
                    self.state, result = await self.batcher.advance(self.state, tokens[:into_head], self.include_steps)
                    head_steps = result.steps
                self._head_state = self.state
                tokens = tokens[max(0, into_head):]
            else:
                self.state, result = await self.batcher.advance(self.state, tokens, self.include_steps)
                return result
        self._tail.extend(tokens)
        if self.tokens_sent <= self.limit.max_tokens:  # the text still fits: the tail holds all after the head
            self.state, result = await self.batcher.advance(self.state, tokens, self.include_steps)
            return dataclasses.replace(result, steps=head_steps + result.steps)
        state, result = await self.batcher.advance(self._head_state, list(self._tail), self.include_steps)
        assert state.prediction is not None  # the tail holds tokens
        prediction = dataclasses.replace(state.prediction, truncated=True, text_token_count=self.tokens_sent)
        self.state = dataclasses.replace(state, prediction=prediction, truncated=True, tokens_seen=self.tokens_sent)
        # Steps for this chunk's tokens that the reading holds (the tail's end), from that run.
        new_steps = result.steps[max(0, len(result.steps) - len(tokens)):]
        return dataclasses.replace(result, prediction=prediction, steps=head_steps + new_steps)


def _response(served: ServedModel, prediction: PredictionResult | None, steps: tuple[StreamTokenStep, ...],
              final: bool) -> pb.StreamSentimentResponse:
    return pb.StreamSentimentResponse(
        prediction=prediction_message(prediction) if prediction is not None else None,
        steps=[pb.TraceStep(token=s.token, in_vocabulary=s.known, probabilities=s.probabilities,
                            positive_delta=s.delta_positive, hidden_state_norm=s.hidden_norm,
                            hidden_change_norm=s.change_norm) for s in steps],
        model=served.name,
        model_version=served.loaded.version,
        final=final,
    )
