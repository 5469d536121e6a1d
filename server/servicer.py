"""SentimentService: validates, tokenizes on the event loop, and hands model work to the model thread."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import AsyncIterator, Awaitable, Callable, TypeVar

import grpc
from grpc import aio

from rnn_sentiment.model.attribution import Slices
from rnn_sentiment.model.inference import EncodedText, encode_texts
from rnn_sentiment.model.trace import TRACE_SLICE_MACS, TraceOptions, TraceResult, trace_slices
from rnn_sentiment.v1 import sentiment_pb2 as pb
from rnn_sentiment.v1 import sentiment_pb2_grpc as pb_grpc

from .errors import ServiceError, invalid_argument, unavailable
from .messages import model_info_message, prediction_message, trace_message
from .model_thread import ModelThread
from .repository import ModelRepository, ServedModel
from .stream_predict import answer_in_order
from .stream_sentiment import StreamSentimentService
from .trace_options import trace_limit_violations, trace_options_from
from .trace_runner import SliceClock, TraceAdmission, run_slices_on
from .validation import RequestLimits, check_text, check_texts, tokens_violation

log = logging.getLogger(__name__)

# A parked refusal is answered this long before its deadline, so the caller sees UNAVAILABLE
# (which it retries), not DEADLINE_EXCEEDED.
PARKED_DEADLINE_MARGIN = 0.05

Response = TypeVar("Response")


def _trace_slices(served: ServedModel, encoded: EncodedText, options: TraceOptions) -> Slices[TraceResult]:
    """trace_slices, its recurrence on Predict's ONNX Runtime session where the model has one
    (unidirectional networks): the same kernels Predict runs, several times faster at batch 1.
    That run is a slice of its own."""
    states = served.predictor.step_states(encoded)
    yield
    return (yield from trace_slices(served.loaded, encoded, options, states, TRACE_SLICE_MACS))


class ServingState:
    """What the servicer serves: no repository until models load; `draining` once stopping.

    While not accepting, calls are refused with UNAVAILABLE; the drain (app.py) watches when
    the last refusal came and, just before the port closes, parks refusals so that callers
    wait on a call the server holds instead of sending one the shutdown would cancel.
    """

    def __init__(self) -> None:
        self.repository: ModelRepository | None = None
        self.draining = False
        self.refused = 0  # calls answered UNAVAILABLE
        self.last_refused = 0.0  # time.monotonic() of the latest refusal
        self._parked: asyncio.Event | None = None

    @property
    def accepting(self) -> bool:
        return self.repository is not None and not self.draining

    def park_refusals(self) -> None:
        """From now on a refused call waits for `release_refusals` before it is answered."""
        self._parked = asyncio.Event()

    def release_refusals(self) -> None:
        if self._parked is not None:
            self._parked.set()

    async def before_refusal(self, time_remaining: float | None) -> None:
        """Count a refusal; while parked, wait for the release (answering before the deadline)."""
        self.refused += 1
        self.last_refused = time.monotonic()
        if self._parked is not None:
            timeout = None if time_remaining is None else max(0.0, time_remaining - PARKED_DEADLINE_MARGIN)
            try:
                await asyncio.wait_for(self._parked.wait(), timeout)
            except asyncio.TimeoutError:
                pass  # UNAVAILABLE now, while the caller still listens


class SentimentServicer(pb_grpc.SentimentServiceServicer):
    def __init__(self, state: ServingState, limits: RequestLimits, streams: StreamSentimentService) -> None:
        self._limits = limits
        self._state = state
        self._streams = streams  # StreamSentiment's sessions and batchers (server/stream_sentiment.py)
        # Per model thread (so per model version): which traces may work now. Dropped with it.
        self._trace_admissions: weakref.WeakKeyDictionary[ModelThread, TraceAdmission] = weakref.WeakKeyDictionary()

    async def Predict(self, request: pb.PredictRequest, context: aio.ServicerContext) -> pb.PredictResponse:
        return await self._guard(context, lambda: self.predict_message(request, context.time_remaining()))

    async def StreamPredict(
        self, requests: AsyncIterator[pb.StreamPredictRequest], context: aio.ServicerContext
    ) -> AsyncIterator[pb.StreamPredictResponse]:
        # Each message takes exactly Predict's path (server/stream_predict.py pipelines them).
        await self._refuse_unless_accepting(context)
        async for response in answer_in_order(requests, self.predict_message, context.time_remaining):
            yield response

    async def StreamSentiment(
        self, requests: AsyncIterator[pb.StreamSentimentRequest], context: aio.ServicerContext
    ) -> AsyncIterator[pb.StreamSentimentResponse]:
        await self._refuse_unless_accepting(context)
        async for response in self._streams.serve(requests, context, self._repository):
            yield response

    async def predict_message(self, request: pb.PredictRequest, time_remaining: float | None) -> pb.PredictResponse:
        """Predict's work, raising ServiceError: shared by the unary call, StreamPredict and the Open
        Inference Protocol's ModelInfer (server/oip_servicer.py)."""
        served = self._repository.resolve(request.model)
        texts = list(request.texts)
        check_texts(texts, self._limits)
        encoded = self._encode(served, texts, field_prefix="texts")
        results = await served.batcher.submit(encoded, timeout=time_remaining)
        self._count(served, encoded, [r.label for r in results])
        return pb.PredictResponse(
            predictions=[prediction_message(r) for r in results],
            model=served.loaded.name,
            model_version=served.loaded.version,
        )

    async def Trace(self, request: pb.TraceRequest, context: aio.ServicerContext) -> pb.TraceResponse:
        async def handle() -> pb.TraceResponse:
            served = self._repository.resolve(request.model)
            check_text(request.text, self._limits)
            options = trace_options_from(request)
            (encoded,) = self._encode(served, [request.text], field_prefix=None)
            # Token counts are known only now: the limits on the trace's work are checked here.
            if violations := trace_limit_violations(options, len(encoded.ids), served.loaded.config):
                raise invalid_argument(violations)
            admission = self._trace_admissions.setdefault(served.model_thread, TraceAdmission())
            clock = SliceClock()
            try:
                # hold(): a reload meanwhile lets this version's thread finish the trace's slices.
                async with served.hold(), admission.admitted(context.time_remaining()):
                    result = await run_slices_on(served.model_thread, _trace_slices(served, encoded, options),
                                                 context.time_remaining, clock)
            finally:
                if clock.count:
                    served.metrics.model_seconds.labels(served.name, "trace").observe(clock.total)
            self._count(served, [encoded], [result.prediction.label])
            return trace_message(served, result, request.include_hidden_states, request.top_k_units)

        return await self._guard(context, handle)

    async def GetModelInfo(self, request: pb.GetModelInfoRequest, context: aio.ServicerContext) -> pb.ModelInfo:
        async def handle() -> pb.ModelInfo:
            served = self._repository.resolve(request.model)
            return self._model_info(served, served.name == self._repository.default_name)

        return await self._guard(context, handle)

    async def ListModels(self, request: pb.ListModelsRequest, context: aio.ServicerContext) -> pb.ListModelsResponse:
        async def handle() -> pb.ListModelsResponse:
            default = self._repository.default_name
            return pb.ListModelsResponse(
                models=[self._model_info(s, s.name == default) for s in self._repository.all()]
            )

        return await self._guard(context, handle)

    def _model_info(self, served: ServedModel, is_default: bool) -> pb.ModelInfo:
        """A model's description plus the request limits, so clients chunk their batches themselves."""
        message = model_info_message(served, is_default)
        message.max_texts_per_request = self._limits.max_texts_per_request
        message.max_text_chars = self._limits.max_text_chars
        return message

    def _encode(self, served: ServedModel, texts: list[str], field_prefix: str | None) -> list[EncodedText]:
        loaded = served.loaded
        try:
            return encode_texts(texts, loaded.vocab, served.max_tokens, served.truncation)
        except ValueError:
            # Validation already refused blank texts; this is text whose every character the
            # tokenizer drops. Name the first such text.
            for i, text in enumerate(texts):
                try:
                    encode_texts([text], loaded.vocab, served.max_tokens, served.truncation)
                except ValueError:
                    raise tokens_violation(f"{field_prefix}[{i}]" if field_prefix else "text") from None
            raise

    def _count(self, served: ServedModel, encoded: list[EncodedText], labels: list[str]) -> None:
        metrics = served.model_metrics
        tokens = 0
        unknown = 0
        for e in encoded:
            tokens += len(e.ids)
            unknown += e.unknown_count
            metrics.text_tokens.observe(len(e.ids))
        metrics.tokens.inc(tokens)
        if unknown:  # most texts have none: skip a write to the shared value
            metrics.unknown_tokens.inc(unknown)
        for label in labels:
            metrics.predictions[label].inc()

    @property
    def _repository(self) -> ModelRepository:
        assert self._state.repository is not None  # _guard refuses calls before models load
        return self._state.repository

    async def _refuse_unless_accepting(self, context: aio.ServicerContext) -> None:
        await refuse_unless_accepting(self._state, context)

    async def _guard(
        self, context: aio.ServicerContext, handle: Callable[[], Awaitable[Response]]
    ) -> Response:
        return await guarded(self._state, context, handle)


async def refuse_unless_accepting(state: ServingState, context: aio.ServicerContext) -> None:
    """End the call with UNAVAILABLE (which clients retry) while starting up or draining."""
    if not state.accepting:
        await state.before_refusal(context.time_remaining())
        error = unavailable("the server is not serving (starting up or draining); retry another replica")
        await context.abort(error.code, error.message, trailing_metadata=error.trailing_metadata())


async def guarded(state: ServingState, context: aio.ServicerContext,
                  handle: Callable[[], Awaitable[Response]]) -> Response:
    """Run a handler of any service: UNAVAILABLE while not accepting, ServiceError into its status
    and anything else into a bare INTERNAL."""
    await refuse_unless_accepting(state, context)
    try:
        return await handle()
    except ServiceError as error:
        await context.abort(error.code, error.message, trailing_metadata=error.trailing_metadata())
    except Exception:
        # The stack trace goes to our log, never to the caller.
        log.exception("internal error")
        await context.abort(grpc.StatusCode.INTERNAL, "internal error; the server logged the details")
    raise AssertionError("unreachable: abort raises")
